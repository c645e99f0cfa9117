package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/auth"
	"github.com/posthorn/posthorn/mta/internal/daemon"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	"github.com/posthorn/posthorn/testbed/freeport"
)

// testEnv is a running daemon on loopback with a test CA certificate, a
// user alice@example.test (password "correct horse") and its state in a
// temp dir.
type testEnv struct {
	t      *testing.T
	dir    string
	cfg    *conf.Config
	d      *daemon.Daemon
	ca     *ca.CA
	client *tls.Config
	dns    *dnsserver.Server // set by remoteEnv
}

const (
	testUser = "alice@example.test"
	testPass = "correct horse"
)

func shortTempDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "ph")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func baseConfig(t *testing.T, dir string) string {
	return fmt.Sprintf(`
hostname = "mx.example.test"
[log]
level = "debug"
[smtp]
mx_address = "127.0.0.1:0"
submission_address = "127.0.0.1:0"
submissions_address = "127.0.0.1:0"
max_message_size = "1MiB"
max_recipients = 5
max_line_length = 1000
max_sessions_per_ip = 8
command_timeout = "5s"
data_timeout = "5s"
client_networks = []
[tls]
cert_file = %[1]q
key_file = %[2]q
[auth]
password_file = %[3]q
[queue]
dir = %[4]q
min_backoff = "1s"
max_backoff = "4s"
workers = 4
[local]
maildir_root = %[5]q
[metrics]
address = "127.0.0.1:0"
[authres]
enabled = false
[control]
socket = %[6]q

[[domain]]
name = "example.test"
mailboxes = ["postmaster", "bob"]
aliases = { team = ["bob", "alice"], abuse = ["postmaster"] }

[[domain]]
name = "example.net"
catch_all = "postmaster"
`, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "passwd"),
		filepath.Join(dir, "spool"), filepath.Join(dir, "mail"), filepath.Join(dir, "ctl.sock"))
}

func startEnv(t *testing.T, extra string) *testEnv {
	t.Helper()
	return startEnvConfig(t, func(s string) string { return s + extra })
}

func startEnvConfig(t *testing.T, edit func(string) string) *testEnv {
	t.Helper()
	return startEnvOpts(t, edit, nil)
}

// startEnvOpts is startEnvConfig with a chance to change the daemon's
// Options (fakes for probes) before it starts.
func startEnvOpts(t *testing.T, edit func(string) string, opts func(*daemon.Options)) *testEnv {
	t.Helper()
	dir := shortTempDir(t)
	c, err := ca.New("Posthorn Test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Issue("mx.example.test", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	writeCert(t, dir, cert)
	if err := auth.SetPassword(filepath.Join(dir, "passwd"), testUser, testPass); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "posthorn.toml")
	if err := os.WriteFile(path, []byte(edit(baseConfig(t, dir))), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := conf.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	w := newTestWriter(t) // its cleanup runs after the Shutdown below
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opt := daemon.Options{AuthFailDelay: time.Millisecond}
	if opts != nil {
		opts(&opt)
	}
	d, err := daemon.Start(cfg, log, opt)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, dir: dir, cfg: cfg, d: d, ca: c,
		client: &tls.Config{RootCAs: c.Pool(), ServerName: "mx.example.test"}}
	t.Cleanup(func() {
		// Not t.Context(): it is already cancelled when cleanups run, and
		// Shutdown would then not wait for the daemon's goroutines.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d.Shutdown(ctx)
	})
	return e
}

func writeCert(t *testing.T, dir string, cert tls.Certificate) {
	t.Helper()
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := marshalKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testWriter sends the daemon's log to t until the test's cleanups have
// run; after that (a plugin's stderr relay or a straggling goroutine
// still logging) lines are dropped, since t.Log would panic with "Log in
// goroutine after test has completed".
type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

// newTestWriter registers its own cleanup: call it before registering
// the cleanups that stop whatever logs through it.
func newTestWriter(t *testing.T) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (e *testEnv) addr(k smtpd.Kind) string { return e.d.Addr(k) }

// dial opens a plain SMTP session and says EHLO.
func (e *testEnv) dial(k smtpd.Kind) *smtp.Client {
	e.t.Helper()
	c, err := smtp.Dial(e.addr(k))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := c.Hello("client.example.com"); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// dialTLS opens a session and does STARTTLS (or implicit TLS for
// submissions), verifying the server certificate against the test CA.
func (e *testEnv) dialTLS(k smtpd.Kind) *smtp.Client {
	e.t.Helper()
	var c *smtp.Client
	var err error
	if k == smtpd.Submissions {
		c, err = smtp.DialTLS(e.addr(k), e.client)
	} else {
		c, err = smtp.DialStartTLS(e.addr(k), e.client)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// maildir returns the files in a mailbox's new/ directory, waiting up to
// timeout for at least n.
func (e *testEnv) waitMail(domain, user string, n int, timeout time.Duration) []string {
	e.t.Helper()
	dir := filepath.Join(e.cfg.Local.MaildirRoot, domain, user, "new")
	deadline := time.Now().Add(timeout)
	for {
		ents, _ := os.ReadDir(dir)
		if len(ents) >= n {
			var out []string
			for _, en := range ents {
				b, err := os.ReadFile(filepath.Join(dir, en.Name()))
				if err != nil {
					e.t.Fatal(err)
				}
				out = append(out, string(b))
			}
			return out
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("mailbox %s@%s: want %d messages, have %d after %s", user, domain, n, len(ents), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *testEnv) mailCount(domain, user string) int {
	ents, _ := os.ReadDir(filepath.Join(e.cfg.Local.MaildirRoot, domain, user, "new"))
	return len(ents)
}

// send runs one transaction on c and returns the error of the first
// failing step.
func send(c *smtp.Client, from string, to []string, msg string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	return w.Close()
}

func testMessage(id string) string {
	return "From: <sender@example.com>\r\nTo: <postmaster@example.test>\r\nSubject: test " + id +
		"\r\nMessage-ID: <" + id + "@example.com>\r\n\r\nHello.\r\n"
}

// rawConn is a bare SMTP connection for tests that must send what a
// well-behaved client never would.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	tp *textproto.Reader
}

func (e *testEnv) raw(k smtpd.Kind) *rawConn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.addr(k))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: e.t, c: c, tp: textproto.NewReader(bufio.NewReader(c))}
	rc.expect(220)
	return rc
}

func (r *rawConn) write(s string) {
	r.t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.c.Write([]byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

// reply reads one (possibly multi-line) reply.
func (r *rawConn) reply() (int, string) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	code, msg, err := r.tp.ReadResponse(0)
	if err != nil && code == 0 {
		r.t.Fatalf("reading reply: %v", err)
	}
	return code, msg
}

func (r *rawConn) expect(code int) string {
	r.t.Helper()
	got, msg := r.reply()
	if got != code {
		r.t.Fatalf("want %d, got %d %s", code, got, msg)
	}
	return msg
}

func marshalKey(k any) ([]byte, error) { return x509.MarshalPKCS8PrivateKey(k) }

func codeOf(err error) int {
	if se, ok := err.(*smtp.SMTPError); ok {
		return se.Code
	}
	return 0
}

// startEnvWith starts a daemon whose base config is edited by edit.
func startEnvWith(t *testing.T, edit func(string) string) *testEnv {
	t.Helper()
	return startEnvConfig(t, edit)
}

// freeLocalAddr returns a loopback address with a port nothing listens
// on, for a service the test configures (a plugin's web listener, a
// milter). It is on 127.0.0.9, not 127.0.0.1: the port is free only once
// this listener is closed, and the daemon the test starts next binds its
// own listeners to 127.0.0.1:0 — the kernel gave one of them the very
// port once (the metrics listener took the smime plugin's publish_listen).
func freeLocalAddr(t *testing.T) string {
	t.Helper()
	return freeport.Addr(t, "127.0.0.9")
}

// TestMain removes the plugin binaries built for the package's tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// built holds the binaries buildOnce made, one directory for the test
// binary.
var built struct {
	mu   sync.Mutex
	dir  string
	bins map[string]string // package -> binary
}

// buildOnce builds the Go command pkg as name once per test binary and
// returns its path.
func buildOnce(t *testing.T, name, pkg string) string {
	t.Helper()
	built.mu.Lock()
	defer built.mu.Unlock()
	if bin, ok := built.bins[pkg]; ok {
		return bin
	}
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "phpl")
		if err != nil {
			t.Fatal(err)
		}
		built.dir, built.bins = dir, map[string]string{}
	}
	bin := filepath.Join(built.dir, name)
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	built.bins[pkg] = bin
	return bin
}

// pluginBinary is the plugin posthorn-NAME (plugins/NAME/cmd/posthorn-NAME),
// built once per test binary.
func pluginBinary(t *testing.T, name string) string {
	t.Helper()
	return buildOnce(t, "posthorn-"+name, "github.com/posthorn/posthorn/plugins/"+name+"/cmd/posthorn-"+name)
}

// waitPluginsRunning waits until n plugins run.
func (e *testEnv) waitPluginsRunning(n int) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		running := 0
		for _, s := range e.d.PluginStatus() {
			if s.State == "running" {
				running++
			}
		}
		if running == n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d plugins not running: %+v", n, e.d.PluginStatus())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// login opens a submission session (STARTTLS) authenticated as testUser.
func (e *testEnv) login() *smtp.Client {
	e.t.Helper()
	c := e.dialTLS(smtpd.Submission)
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// submit sends msg from testUser to rcpts in a submission session of its
// own, closed at once: no session idles into the server's command
// timeout while the test waits for something slow (a delivery, gpg).
func (e *testEnv) submit(rcpts []string, msg string) {
	e.t.Helper()
	c := e.login()
	if err := send(c, testUser, rcpts, msg); err != nil {
		e.t.Fatal(err)
	}
	c.Quit()
}

// gpgHome makes a GnuPG home of its own for the test (under /tmp:
// gpg-agent's socket path must stay short) and returns it with a function
// that runs gpg there in batch mode (stdin, args) and returns its output;
// a failing gpg fails the test. The agent is stopped and the home removed
// at cleanup.
func gpgHome(t *testing.T) (string, func(stdin []byte, args ...string) []byte) {
	t.Helper()
	home, err := os.MkdirTemp("/tmp", "g")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "gpg-agent").Run()
		os.RemoveAll(home)
	})
	return home, func(stdin []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command("gpg", append([]string{"--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
}

// metric is the value of one series of the daemon's /metrics, written as
// the exposition format writes it (name{labels}), 0 when absent. The
// metrics are the process's: a test compares with the value before what
// it does, so that it passes with -count=N too.
func metric(t *testing.T, e *testEnv, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(scrape(t, e), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", series, line)
			}
			return f
		}
	}
	return 0
}
