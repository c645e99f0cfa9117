package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/testbed/freeport"
)

// These tests run the real binary: `posthorn serve` as a child process.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func posthornBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "phbin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "posthorn")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freePort returns a free address on 127.0.0.1, never one given out
// before in this test binary (an instance takes several at once).
func freePort(t *testing.T) string {
	t.Helper()
	return freeport.Addr(t, "127.0.0.1")
}

// instance is one posthorn serve process with its own state directory.
type instance struct {
	t    *testing.T
	dir  string
	cfg  string
	mx   string
	cmd  *exec.Cmd
	logs *bytes.Buffer
	mu   sync.Mutex
}

func newInstance(t *testing.T, extra string) *instance {
	t.Helper()
	dir, err := os.MkdirTemp("", "phe2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("state kept in %s", dir)
		}
	})
	in := &instance{t: t, dir: dir, mx: freePort(t)}
	cfg := fmt.Sprintf(`
hostname = "mx.example.test"
[smtp]
mx_address = %q
submission_address = ""
submissions_address = ""
client_networks = ["127.0.0.0/8"]
[tls]
self_signed_dir = "tls"
[auth]
password_file = "passwd"
[queue]
dir = "spool"
min_backoff = "1s"
max_backoff = "2s"
[local]
maildir_root = "mail"
[metrics]
address = ""
[control]
socket = "ctl.sock"
[[domain]]
name = "example.test"
mailboxes = ["postmaster", "bob"]
%s
`, in.mx, extra)
	in.cfg = filepath.Join(dir, "posthorn.toml")
	if err := os.WriteFile(in.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return in
}

func (in *instance) start() {
	in.t.Helper()
	in.logs = &bytes.Buffer{}
	cmd := exec.Command(posthornBinary(in.t), "serve", "-c", in.cfg)
	cmd.Dir = in.dir
	cmd.Stderr = &lockedWriter{mu: &in.mu, w: in.logs}
	if err := cmd.Start(); err != nil {
		in.t.Fatal(err)
	}
	in.cmd = cmd
	in.t.Cleanup(func() {
		if in.cmd != nil && in.cmd.ProcessState == nil {
			in.cmd.Process.Kill()
			in.cmd.Wait()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", in.mx)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			in.t.Fatalf("posthorn did not start listening:\n%s", in.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (in *instance) kill() {
	in.cmd.Process.Signal(syscall.SIGKILL)
	in.cmd.Wait()
}

func (in *instance) stop() {
	in.cmd.Process.Signal(syscall.SIGTERM)
	in.cmd.Wait()
}

func (in *instance) logText() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.logs.String()
}

// cli runs a posthorn command against this instance's config.
func (in *instance) cli(args ...string) (string, error) {
	cmd := exec.Command(posthornBinary(in.t), args...)
	cmd.Dir = in.dir
	cmd.Env = append(os.Environ(), "POSTHORN_CONFIG="+in.cfg)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var messageIDRe = regexp.MustCompile(`(?mi)^Message-ID: <([^>]+)>`)

// messageIDs counts Message-IDs over all files of a Maildir's new/ and cur/.
func messageIDs(t *testing.T, maildir string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(maildir, sub))
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(maildir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range messageIDRe.FindAllStringSubmatch(string(b), -1) {
				seen[m[1]]++
			}
		}
	}
	return seen
}

// smtpSend sends one message over a raw connection and reports whether the
// server acknowledged it with 250 after the data.
type smtpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialSMTP(addr string) (*smtpConn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	s := &smtpConn{c: c, r: bufio.NewReader(c)}
	if _, err := s.read(); err != nil {
		c.Close()
		return nil, err
	}
	if err := s.cmd("EHLO load.example", "250"); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

func (s *smtpConn) read() (string, error) {
	s.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var last string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		last = line
		if len(line) < 4 || line[3] != '-' {
			return last, nil
		}
	}
}

func (s *smtpConn) cmd(line, want string) error {
	if _, err := s.c.Write([]byte(line + "\r\n")); err != nil {
		return err
	}
	r, err := s.read()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(r, want) {
		return fmt.Errorf("%s: %s", line, strings.TrimSpace(r))
	}
	return nil
}

func (s *smtpConn) send(rcpt, msgID string) error {
	if err := s.cmd("MAIL FROM:<load@example.com>", "250"); err != nil {
		return err
	}
	if err := s.cmd("RCPT TO:<"+rcpt+">", "250"); err != nil {
		return err
	}
	if err := s.cmd("DATA", "354"); err != nil {
		return err
	}
	body := fmt.Sprintf("From: <load@example.com>\r\nSubject: crash test\r\nMessage-ID: <%s>\r\n\r\n%s\r\n.", msgID,
		strings.Repeat("0123456789abcdef", 64))
	return s.cmd(body, "250")
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
