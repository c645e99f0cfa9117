// Package maildrop is the drop directory that `posthorn sendmail` writes
// to when the daemon cannot be reached, like Postfix's maildrop: one file
// a message, written to a temporary name, fsynced, renamed into place and
// the directory fsynced, so that a message sendmail accepted (exit 0)
// survives a crash. The daemon picks the files up when it starts and
// whenever the directory changes (inotify, with a periodic scan as a
// safety net), queues each and removes it.
//
// The directory is owned by the daemon's user and group with mode 3733
// (setgid, sticky, writable and searchable but not listable by others):
// any local user can drop a file, files inherit the daemon's group and are
// written 0640 so the daemon can read them and nobody else can, and the
// sticky bit stops users from removing each other's files. The file's
// owner is the submitting user: the daemon takes the user from the file
// system, never from the file's content.
//
// File format: one line of JSON (the envelope: control.Request's from,
// to, notify, ret, envid), then the message with CRLF line endings.
package maildrop

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/posthorn/posthorn/mta/internal/control"
)

// DirMode is the drop directory's mode.
const DirMode = os.ModeDir | os.ModeSetgid | os.ModeSticky | 0o733

// tmpSuffix marks a file still being written.
const tmpSuffix = ".tmp"

// Write drops one message into dir durably and returns its file name.
func Write(dir string, req control.Request, msg io.Reader) (string, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("%d.%d.%s", time.Now().UnixNano(), os.Getpid(), hex.EncodeToString(rnd[:]))
	tmp := filepath.Join(dir, name+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// Only the envelope: the user comes from the file's owner.
	hdr := control.Request{From: req.From, To: req.To, Notify: req.Notify, Ret: req.Ret, EnvID: req.EnvID}
	line, err := json.Marshal(hdr)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 64<<10)
	w.Write(line)
	w.WriteByte('\n')
	if _, err := io.Copy(w, msg); err != nil {
		return "", err
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return "", err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		// Opening a directory needs read permission, which a mode 3733
		// drop directory does not give other users; the rename is then
		// made durable by the daemon's pickup (or the next sync), which
		// is what Postfix's postdrop relies on too.
		err = d.Sync()
		d.Close()
		if err != nil {
			return "", err
		}
	}
	return name, nil
}

// Entry is a dropped message.
type Entry struct {
	Name string
	Req  control.Request
	// User is the login name of the file's owner ("uid N" when unknown).
	User string
	// Size is the message's size (the file without the envelope line);
	// Time is when the file was written.
	Size int64
	Time time.Time
	// Body reads the message; Close it.
	Body io.ReadCloser
}

// Refusal is why a dropped file can never be taken; the daemon sets such
// a file aside. Other errors of Open may pass (the next pickup tries
// again).
type Refusal struct {
	// Reason is a metrics label: "malformed" (no envelope line, or not
	// JSON) or "owner" (a link, a hard link or not a regular file: the
	// file's owner does not tell who submitted it).
	Reason string
	Text   string
}

func (r *Refusal) Error() string { return r.Text }

// Open reads the envelope of the dropped file dir/name. The file must be
// a regular file with one link: a symbolic or hard link to a file of
// another user would make that user its submitter.
func Open(dir, name string) (*Entry, error) {
	// O_NOFOLLOW: a symbolic link fails here; O_NONBLOCK: a FIFO does
	// not block the pickup (and is refused below).
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, &Refusal{Reason: "owner", Text: name + ": a symbolic link"}
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, &Refusal{Reason: "owner", Text: fmt.Sprintf("%s: not a regular file (%s)", name, st.Mode().Type())}
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Nlink != 1 {
		f.Close()
		return nil, &Refusal{Reason: "owner", Text: fmt.Sprintf("%s: has %d hard links, so its owner is not its submitter", name, sys.Nlink)}
	}
	e := &Entry{Name: name, User: owner(st), Size: st.Size(), Time: st.ModTime()}
	br := bufio.NewReaderSize(f, 64<<10)
	line, err := br.ReadBytes('\n')
	if err != nil {
		f.Close()
		if err == io.EOF {
			return nil, &Refusal{Reason: "malformed", Text: name + ": no envelope line"}
		}
		return nil, err
	}
	if err := json.Unmarshal(line, &e.Req); err != nil {
		f.Close()
		return nil, &Refusal{Reason: "malformed", Text: fmt.Sprintf("%s: bad envelope: %v", name, err)}
	}
	e.Size -= int64(len(line))
	e.Req.User = e.User
	e.Body = struct {
		io.Reader
		io.Closer
	}{br, f}
	return e, nil
}

func owner(st os.FileInfo) string {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "unknown"
	}
	uid := strconv.FormatUint(uint64(sys.Uid), 10)
	if u, err := user.LookupId(uid); err == nil {
		return u.Username
	}
	return "uid " + uid
}

// List returns the names of complete dropped files, oldest first. Other
// entries than regular files are listed too, so that the pickup sets them
// aside instead of leaving them unseen.
func List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n := e.Name(); !strings.HasSuffix(n, tmpSuffix) && !strings.HasPrefix(n, ".") {
			out = append(out, n)
		}
	}
	return out, nil // ReadDir sorts by name; names start with the time
}

// StaleTemp is how old a file still being written may get: a sendmail
// killed mid-write never finished it (and did not exit 0), so nobody
// was told it was accepted.
const StaleTemp = 24 * time.Hour

// RemoveStaleTemp deletes the temporary files in dir older than
// StaleTemp and returns their names.
func RemoveStaleTemp(dir string, now time.Time) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var gone []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), tmpSuffix) || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		st, err := e.Info()
		if err != nil || now.Sub(st.ModTime()) < StaleTemp {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			gone = append(gone, e.Name())
		}
	}
	return gone, nil
}

// Remove deletes a picked-up file and makes that durable.
func Remove(dir, name string) error {
	if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Prepare creates dir if missing with DirMode (as the daemon's user),
// its missing parents with 0755, and fixes its mode. The daemon calls it
// before it creates anything else, so that the parents it shares with
// private directories (./var of the built-in config) stay searchable.
func Prepare(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.Chmod(dir, DirMode)
}

// Unreachable reports the first directory on the way to dir that users
// other than its owner and group cannot search (no x for others): there
// sendmail run by such a user cannot leave a message while the daemon is
// down. nil when every one can be searched.
func Unreachable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is mode %#o: other users cannot reach %s", p, st.Mode().Perm(), dir)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// Quarantine moves a file that cannot be taken aside (a dot name: never
// listed again) instead of deleting it, for the postmaster, and makes
// that durable. It returns the new name.
func Quarantine(dir, name string) (string, error) {
	bad := ".bad." + name
	if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, bad)); err != nil {
		return "", err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return bad, nil
}

func poll(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
