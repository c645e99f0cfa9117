//go:build unix

package queue

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// msgFile is a message file opened read-only for recovery. It uses the
// descriptor directly: os.File's poller registration (two fcntl calls
// and an epoll_ctl that fails for regular files) and its finalizer were a
// third of recovery's system-call time for 100,000 files (issue 19.3).
type msgFile struct{ fd int }

func openMsgFile(path string) (*msgFile, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return &msgFile{fd: fd}, nil
	}
}

// ReadAt implements io.ReaderAt with pread.
func (f *msgFile) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := syscall.Pread(f.fd, p[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

func (f *msgFile) size() (int64, error) {
	var st syscall.Stat_t
	for {
		err := syscall.Fstat(f.fd, &st)
		if err == syscall.EINTR {
			continue
		}
		return st.Size, err
	}
}

func (f *msgFile) Close() error {
	if f.fd < 0 {
		return errors.New("queue: file already closed")
	}
	err := syscall.Close(f.fd)
	f.fd = -1
	return err
}

// openFile opens a spool file as an *os.File without registering it with
// the runtime's poller: os.OpenFile adds two fcntl calls to set the
// descriptor non-blocking, an epoll_ctl that fails for regular files and
// two more fcntl calls to undo it — five system calls around each open,
// three opens per relayed message (issue 19). os.NewFile checks the flags
// once and never polls a blocking descriptor.
func openFile(path string, flag int, perm uint32) (*os.File, error) {
	for {
		fd, err := syscall.Open(path, flag|syscall.O_CLOEXEC, perm)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}

// rename renames a file. os.Rename first lstats the new name to refuse
// replacing a directory by a file; the spool never has a directory
// under a message's name, so that is a system call per message saved.
func rename(from, to string) error {
	for {
		err := syscall.Rename(from, to)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
		}
		return nil
	}
}
