// Package auth holds the SMTP AUTH user database: a password file of
// "user@domain:$argon2id$..." lines (PHC string format, RFC 9106 argon2id),
// the SASL servers for PLAIN (RFC 4616, from go-sasl) and LOGIN (the
// draft-murchison-sasl-login mechanism, written here because go-sasl has
// only its client side).
package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters for new hashes: RFC 9106's second recommended option
// (64 MiB, 3 passes) would make every AUTH cost 64 MiB; we use 19 MiB,
// t=2, p=1 as OWASP recommends for interactive logins.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
	saltLen      = 16
)

// Hash returns a PHC-format argon2id hash of password.
func Hash(password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// ErrBadHash is returned for a hash string that is not argon2id PHC format.
var ErrBadHash = errors.New("not an argon2id hash")

// Verify reports whether password matches the PHC-format argon2id hash.
func Verify(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, ErrBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, ErrBadHash
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 4*1024*1024 || t > 100 {
		return false, ErrBadHash
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return false, ErrBadHash
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 128 {
		return false, ErrBadHash
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// Users is the password file, reloaded when it changes on disk.
type Users struct {
	path string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	hashes  map[string]string // lower-cased address -> hash
	dummy   string            // a hash verified for unknown users, to even out timing
}

// Open reads the password file at path. A missing file is an empty user
// list (the default config has no users until `posthorn passwd` adds one).
func Open(path string) (*Users, error) {
	u := &Users{path: path}
	if err := u.reload(); err != nil {
		return nil, err
	}
	d, err := Hash("posthorn-timing-dummy")
	if err != nil {
		return nil, err
	}
	u.dummy = d
	return u, nil
}

func (u *Users) reload() error {
	if u.path == "" {
		u.hashes = map[string]string{}
		return nil
	}
	st, err := os.Stat(u.path)
	if errors.Is(err, os.ErrNotExist) {
		u.hashes, u.modTime, u.size = map[string]string{}, time.Time{}, 0
		return nil
	}
	if err != nil {
		return err
	}
	if u.hashes != nil && st.ModTime().Equal(u.modTime) && st.Size() == u.size {
		return nil
	}
	data, err := os.ReadFile(u.path)
	if err != nil {
		return err
	}
	hashes, err := parse(u.path, data)
	if err != nil {
		return err
	}
	u.hashes, u.modTime, u.size = hashes, st.ModTime(), st.Size()
	return nil
}

func parse(name string, data []byte) (map[string]string, error) {
	hashes := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || !strings.Contains(user, "@") || !strings.HasPrefix(hash, "$argon2id$") {
			return nil, fmt.Errorf("%s:%d: want user@domain:$argon2id$… hash", name, n)
		}
		hashes[strings.ToLower(user)] = hash
	}
	return hashes, sc.Err()
}

// Authenticate checks a user's password. Unknown users cost as much time
// as known ones.
func (u *Users) Authenticate(user, password string) bool {
	u.mu.Lock()
	if err := u.reload(); err != nil {
		// Keep the previous list; a half-written file must not lock
		// everyone out.
		_ = err
	}
	hash, ok := u.hashes[strings.ToLower(user)]
	dummy := u.dummy
	u.mu.Unlock()
	if !ok {
		Verify(dummy, password)
		return false
	}
	good, err := Verify(hash, password)
	return err == nil && good
}

// Exists reports whether addr is a user in the password file.
func (u *Users) Exists(addr string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_ = u.reload()
	_, ok := u.hashes[strings.ToLower(addr)]
	return ok
}

// Hash returns the argon2id hash of addr from the password file.
func (u *Users) Hash(addr string) (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	_ = u.reload()
	h, ok := u.hashes[strings.ToLower(addr)]
	return h, ok
}

// List returns the addresses in the password file.
func (u *Users) List() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	_ = u.reload()
	out := make([]string, 0, len(u.hashes))
	for a := range u.hashes {
		out = append(out, a)
	}
	return out
}

// SetPassword adds or replaces user's entry in the password file at path,
// atomically (temp file, fsync, rename).
func SetPassword(path, user, password string) error {
	if !strings.Contains(user, "@") {
		return fmt.Errorf("user must be an address (user@domain), got %q", user)
	}
	if len(password) < 8 {
		return errors.New("password must have at least 8 characters")
	}
	hash, err := Hash(password)
	if err != nil {
		return err
	}
	var lines []string
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if _, err := parse(path, data); err != nil {
		return err
	}
	replaced := false
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		name, _, _ := strings.Cut(line, ":")
		if strings.EqualFold(strings.TrimSpace(name), user) {
			line = strings.ToLower(user) + ":" + hash
			replaced = true
		}
		lines = append(lines, line)
	}
	if !replaced {
		lines = append(lines, strings.ToLower(user)+":"+hash)
	}
	return writeFileAtomic(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(dirOf(path), 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dirOf(path), ".passwd-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i+1]
	}
	return "."
}
