//go:build linux

package bodyfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Supported reports whether this platform can pass bodies as files.
const Supported = true

// seals are the seals a body file must carry: its size and bytes are
// fixed, and nobody can lift that.
const seals = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL

// Pair makes a body channel: the host's end, and the plugin's end to be
// inherited by the plugin process (exec.Cmd.ExtraFiles; close it in the
// host once the process has started).
func Pair() (*Channel, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("body channel: socketpair: %w", err)
	}
	child := os.NewFile(uintptr(fds[1]), "posthorn-body-channel")
	ch, err := Open(os.NewFile(uintptr(fds[0]), "posthorn-body-channel"))
	if err != nil {
		child.Close()
		return nil, nil, err
	}
	return ch, child, nil
}

// Open makes a Channel of an inherited socket. It takes f over (closes it
// on failure).
func Open(f *os.File) (*Channel, error) {
	defer f.Close() // FileConn dups it
	typ, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("body channel: descriptor %d is not a packet socket", f.Fd())
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("body channel: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("body channel: descriptor %d is not a unix socket", f.Fd())
	}
	return newChannel(&unixConn{c: uc}), nil
}

type unixConn struct{ c *net.UnixConn }

func (u *unixConn) send(token uint64, f *os.File) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], token)
	_, _, err := u.c.WriteMsgUnix(b[:], unix.UnixRights(int(f.Fd())), nil)
	return err
}

// recv reads one datagram. A datagram that is not exactly a token with one
// file descriptor yields a nil file (every descriptor in it closed).
func (u *unixConn) recv() (uint64, *os.File, error) {
	var b [16]byte
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := u.c.ReadMsgUnix(b[:], oob)
	if err != nil {
		return 0, nil, err
	}
	if n == 0 && oobn == 0 {
		return 0, nil, io.EOF
	}
	var fds []int
	if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
		for _, m := range msgs {
			if r, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, r...)
			}
		}
	}
	if n != 8 || len(fds) != 1 || flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return 0, nil, nil
	}
	unix.CloseOnExec(fds[0])
	return binary.LittleEndian.Uint64(b[:8]), os.NewFile(uintptr(fds[0]), "posthorn-body"), nil
}

func (u *unixConn) close() error { return u.c.Close() }

// Create copies r into a new memory file, at most limit bytes (limit <= 0:
// no limit; more fails with tooLarge), and seals it. It returns the file
// and its size.
func Create(r io.Reader, limit int64, tooLarge error) (*os.File, int64, error) {
	src := r
	if limit > 0 {
		src = io.LimitReader(r, limit+1)
	}
	return create(func(f *os.File) (int64, error) { return io.Copy(f, src) }, limit, tooLarge)
}

// CreateFrom is Create for a body that is a file already (a queued
// message): its bytes go into the memory file inside the kernel
// (sendfile(2)), not through a buffer in user space. A body over limit
// (> 0) is refused before anything is copied.
func CreateFrom(src FileSource, limit int64, tooLarge error) (*os.File, int64, error) {
	if limit > 0 && src.Size() > limit {
		return nil, 0, tooLarge
	}
	return create(func(f *os.File) (int64, error) { return src.SendTo(sendfileTo{f}) }, limit, tooLarge)
}

// create makes a memory file, fills it with fill and seals it.
func create(fill func(*os.File) (int64, error), limit int64, tooLarge error) (*os.File, int64, error) {
	fd, err := unix.MemfdCreate("posthorn-body", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, 0, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "posthorn-body")
	n, err := fill(f)
	switch {
	case err != nil:
	case limit > 0 && n > limit:
		err = tooLarge
	default:
		_, err = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals)
		if err != nil {
			err = fmt.Errorf("sealing the body file: %w", err)
		}
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}

// sendfileTo writes into f; given a limited *os.File, with sendfile(2).
type sendfileTo struct{ f *os.File }

func (w sendfileTo) ReadFrom(r io.Reader) (int64, error) {
	var done int64
	if lr, ok := r.(*io.LimitedReader); ok {
		if src, ok := lr.R.(*os.File); ok {
			n, err := sendfile(w.f, src, lr)
			done = n
			if err == nil || !errors.Is(err, errNoSendfile) {
				return done, err
			}
			// Not possible between these two files: copy the rest.
		}
	}
	n, err := io.Copy(struct{ io.Writer }{w.f}, r)
	return done + n, err
}

var errNoSendfile = errors.New("sendfile not possible")

// sendfile copies lr.N bytes from src's offset into dst; lr.N and src's
// offset advance by what was copied. errNoSendfile (after nothing was
// copied) when the kernel cannot do it for these files.
func sendfile(dst, src *os.File, lr *io.LimitedReader) (int64, error) {
	var total int64
	for lr.N > 0 {
		n, err := unix.Sendfile(int(dst.Fd()), int(src.Fd()), nil, int(min(lr.N, 1<<30)))
		if n > 0 {
			total += int64(n)
			lr.N -= int64(n)
		}
		switch {
		case err == unix.EINTR || err == unix.EAGAIN:
			continue
		case (err == unix.EINVAL || err == unix.ENOSYS) && total == 0:
			return 0, errNoSendfile
		case err != nil:
			return total, fmt.Errorf("sendfile: %w", err)
		case n == 0:
			return total, nil // the source ended early
		}
	}
	return total, nil
}

// Check verifies a received body file: a regular file carrying every seal,
// of exactly size bytes, at most limit (limit <= 0: no limit; beyond it
// tooLarge).
func Check(f *os.File, size, limit int64, tooLarge error) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("body file: %w", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return errors.New("body file is not a regular file")
	}
	got, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || got&seals != seals {
		return errors.New("body file is not sealed")
	}
	if st.Size != size {
		return fmt.Errorf("body file holds %d bytes, %d announced", st.Size, size)
	}
	if limit > 0 && size > limit {
		return tooLarge
	}
	return nil
}
