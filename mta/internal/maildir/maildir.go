// Package maildir delivers messages into Maildir mailboxes as described in
// D. J. Bernstein's Maildir specification (https://cr.yp.to/proto/maildir.html),
// in a way that Dovecot and other Maildir readers understand.
//
// A message is written to tmp/, synced to disk, and renamed into new/; the
// new/ directory is synced afterwards, so a successful Deliver means the
// message survives a crash. File names have the form
//
//	<unix-seconds>.<uniq>.<hostname>
//
// where uniq is chosen by the caller. Because the caller derives uniq
// deterministically from a queue ID and a recipient, Exists can tell after a
// crash whether a delivery already happened, which gives exactly-once
// delivery.
//
// Maildir files use LF line endings: Deliver converts CRLF to LF while it
// streams the message, without holding the message in memory.
package maildir

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrInvalidUniq is returned when the uniq part of a file name is empty or
// contains characters other than [A-Za-z0-9.]. It is a permanent error.
var ErrInvalidUniq = errors.New("maildir: invalid unique name part")

// bufSize is the size of the copy and write buffers.
const bufSize = 64 << 10

// Deliver writes prepend (header lines such as Return-Path and Delivered-To;
// CRLF or LF; may be nil) followed by msg into the Maildir dir and returns
// the path of the delivered file in dir/new. The directories dir, dir/tmp,
// dir/new and dir/cur are created with mode 0700 when missing. CRLF line
// endings are converted to LF.
//
// uniq must be unique for the message and recipient and consist of
// [A-Za-z0-9.] only; see Exists.
func Deliver(dir string, uniq string, msg io.Reader, prepend []byte) (path string, err error) {
	if !validUniq(uniq) {
		return "", fmt.Errorf("%w: %q", ErrInvalidUniq, uniq)
	}
	if err := ensureDirs(dir); err != nil {
		return "", err
	}
	name := fmt.Sprintf("%d.%s.%s", time.Now().Unix(), uniq, hostname())
	tmpPath := filepath.Join(dir, "tmp", name)
	newDir := filepath.Join(dir, "new")
	newPath := filepath.Join(newDir, name)

	f, err := os.OpenFile(tmpPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		// A stale file from an attempt that died half-way: the uniq
		// part belongs to this delivery, so it can be replaced.
		if rerr := os.Remove(tmpPath); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return "", rerr
		}
		f, err = os.OpenFile(tmpPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	}
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmpPath)
		}
	}()

	bufs := bufPool.Get().(*buffers)
	defer bufPool.Put(bufs)
	bw := bufs.w
	bw.Reset(f)
	defer bw.Reset(nil)
	lw := &lfWriter{w: bw}
	if len(prepend) > 0 {
		if _, err := lw.Write(prepend); err != nil {
			return "", err
		}
	}
	if msg != nil {
		if _, err := io.CopyBuffer(lw, onlyReader{msg}, bufs.copy); err != nil {
			return "", err
		}
	}
	if err := lw.Flush(); err != nil {
		return "", err
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmpPath, newPath); err != nil {
		return "", err
	}
	ok = true
	if err := syncDir(newDir); err != nil {
		// The message is in new/, but we cannot promise it is on disk.
		// Report the failure; the caller retries and Exists finds the
		// file if it survived.
		return newPath, err
	}
	return newPath, nil
}

// Exists reports whether a message delivered with uniq is in dir/new or
// dir/cur (where readers rename files and add ":2,FLAGS" suffixes). A missing
// Maildir is not an error: the message is simply not there.
//
// Since host names contain dots, a uniq must not be a dot-separated prefix
// of another uniq used in the same Maildir ("Q1" and "Q1.R0"); "Q1.R1" and
// "Q1.R10" are told apart.
func Exists(dir, uniq string) (bool, error) {
	if !validUniq(uniq) {
		return false, fmt.Errorf("%w: %q", ErrInvalidUniq, uniq)
	}
	for _, sub := range []string{"new", "cur"} {
		found, err := scan(filepath.Join(dir, sub), uniq)
		if err != nil || found {
			return found, err
		}
	}
	return false, nil
}

func scan(dir, uniq string) (bool, error) {
	d, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(1024)
		for _, n := range names {
			if matches(n, uniq) {
				return true, nil
			}
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// matches reports whether the Maildir file name carries uniq: names are
// "<time>.<uniq>.<host>[:2,FLAGS]".
func matches(name, uniq string) bool {
	i := strings.IndexByte(name, '.')
	if i < 0 {
		return false
	}
	rest := name[i+1:]
	return len(rest) > len(uniq) && rest[len(uniq)] == '.' && rest[:len(uniq)] == uniq
}

// IsTemporary reports whether err, returned by Deliver or Exists, is worth
// retrying later: I/O errors, a full disk or exceeded quota, and unknown
// errors are temporary; a mailbox path that is not a directory, or an
// invalid uniq, is permanent.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	for _, perm := range []error{ErrInvalidUniq, syscall.ENOTDIR, syscall.EISDIR,
		syscall.ENAMETOOLONG, syscall.ELOOP, syscall.EINVAL} {
		if errors.Is(err, perm) {
			return false
		}
	}
	return true
}

func validUniq(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.') {
			return false
		}
	}
	return true
}

func ensureDirs(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o700); err != nil {
			if !errors.Is(err, os.ErrExist) {
				return err
			}
			fi, serr := os.Stat(p)
			if serr != nil {
				return serr
			}
			if !fi.IsDir() {
				return &os.PathError{Op: "mkdir", Path: p, Err: syscall.ENOTDIR}
			}
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

var (
	hostOnce sync.Once
	hostName string
)

// hostname returns the host name made safe for a Maildir file name: the
// spec replaces "/" with "\057" and ":" with "\072".
func hostname() string {
	hostOnce.Do(func() {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		hostName = sanitizeHost(h)
	})
	return hostName
}

func sanitizeHost(h string) string {
	var b strings.Builder
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c == '/':
			b.WriteString(`\057`)
		case c == ':':
			b.WriteString(`\072`)
		case c < 0x21 || c > 0x7e:
			b.WriteString(fmt.Sprintf(`\%03o`, c))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

type buffers struct {
	copy []byte
	w    *bufio.Writer
}

var bufPool = sync.Pool{New: func() any {
	return &buffers{copy: make([]byte, bufSize), w: bufio.NewWriterSize(nil, bufSize)}
}}

// onlyReader hides WriterTo/ReaderFrom fast paths so that all data goes
// through the LF conversion.
type onlyReader struct{ io.Reader }

// lfWriter converts CRLF to LF. A CR at the end of one Write is held back
// until the next Write shows whether an LF follows. Lone CRs are kept.
type lfWriter struct {
	w         io.Writer
	pendingCR bool
}

func (l *lfWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) == 0 {
		return 0, nil
	}
	if l.pendingCR {
		l.pendingCR = false
		if p[0] != '\n' {
			if _, err := l.w.Write([]byte{'\r'}); err != nil {
				return 0, err
			}
		}
	}
	for len(p) > 0 {
		i := indexCR(p)
		if i < 0 {
			if _, err := l.w.Write(p); err != nil {
				return 0, err
			}
			break
		}
		if _, err := l.w.Write(p[:i]); err != nil {
			return 0, err
		}
		if i == len(p)-1 {
			l.pendingCR = true
			break
		}
		if p[i+1] == '\n' {
			p = p[i+1:] // drop the CR, keep the LF
			continue
		}
		if _, err := l.w.Write(p[i : i+1]); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	return n, nil
}

// Flush writes a CR held back at the very end of the input.
func (l *lfWriter) Flush() error {
	if l.pendingCR {
		l.pendingCR = false
		_, err := l.w.Write([]byte{'\r'})
		return err
	}
	return nil
}

func indexCR(p []byte) int { return bytes.IndexByte(p, '\r') }
