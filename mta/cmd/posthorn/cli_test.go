package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/queue"
)

// lmtpSink is a real LMTP server (go-smtp in LMTP mode) that accepts
// everything and counts messages.
type lmtpSink struct{ got chan string }

func (s *lmtpSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &lmtpSession{s: s}, nil }

type lmtpSession struct {
	s     *lmtpSink
	rcpts []string
}

func (l *lmtpSession) Reset()                               {}
func (l *lmtpSession) Logout() error                        { return nil }
func (l *lmtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (l *lmtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	l.rcpts = append(l.rcpts, to)
	return nil
}
func (l *lmtpSession) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	l.s.got <- string(b)
	return nil
}

func startLMTP(t *testing.T, addr string) (*lmtpSink, func()) {
	sink := &lmtpSink{got: make(chan string, 10)}
	srv := smtp.NewServer(sink)
	srv.LMTP = true
	srv.Domain = "lmtp.test"
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	return sink, func() { srv.Close() }
}

func TestQueueCommandsWhileDestinationDown(t *testing.T) {
	lmtpAddr := freePort(t)
	in := newInstance(t, `
[[domain]]
name = "lmtp.test"
mailboxes = ["carol"]
lmtp = "tcp:`+lmtpAddr+`"
`)
	in.start()
	c, err := dialSMTP(in.mx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.send("carol@lmtp.test", "down-1@test"); err != nil {
		t.Fatal(err)
	}
	// The LMTP server is down: the message is deferred and listed so.
	var list []*queue.Envelope
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := in.cli("queue", "list", "--json")
		if err != nil {
			t.Fatalf("queue list: %v\n%s", err, out)
		}
		list = nil
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("queue list --json: %v\n%s", err, out)
		}
		if len(list) == 1 && list[0].Recipients[0].Attempts > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no deferred message listed: %s\n%s", out, in.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	id := list[0].ID
	r := list[0].Recipients[0]
	if r.State != queue.Pending || !strings.Contains(r.Diagnostic, "LMTP") || r.Status[0] != '4' {
		t.Fatalf("recipient state: %+v", r)
	}
	out, err := in.cli("queue", "list")
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "carol@lmtp.test [deferred") {
		t.Fatalf("queue list: %v\n%s", err, out)
	}
	out, err = in.cli("queue", "show", id)
	if err != nil || !strings.Contains(out, "Message-ID: <down-1@test>") || !strings.Contains(out, "carol@lmtp.test  pending") {
		t.Fatalf("queue show: %v\n%s", err, out)
	}
	out, err = in.cli("queue", "show", "--body", id)
	if err != nil || !strings.Contains(out, "message:\n") || !strings.Contains(out, strings.Repeat("0123456789abcdef", 64)) {
		t.Fatalf("queue show --body: %v\n%s", err, out)
	}
	out, err = in.cli("queue", "summary")
	if err != nil || !regexpMatch(`lmtp.test\s+1\s+0\s+1\s+0`, out) {
		t.Fatalf("queue summary: %v\n%s", err, out)
	}
	// Hold it, bring the server up, flush: held mail stays.
	if out, err := in.cli("queue", "hold", id); err != nil {
		t.Fatalf("hold: %v %s", err, out)
	}
	sink, stop := startLMTP(t, lmtpAddr)
	defer stop()
	// Flushing everything, or this one message, leaves held mail alone.
	for _, args := range [][]string{{"queue", "flush"}, {"queue", "flush", id}} {
		if out, err := in.cli(args...); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	select {
	case <-sink.got:
		t.Fatal("held message was delivered")
	case <-time.After(2500 * time.Millisecond):
	}
	out, _ = in.cli("queue", "list")
	if !strings.Contains(out, id+"!") {
		t.Fatalf("held message not marked with !:\n%s", out)
	}
	// Released, it is delivered at once.
	if out, err := in.cli("queue", "release", id); err != nil {
		t.Fatalf("release: %v %s", err, out)
	}
	select {
	case m := <-sink.got:
		if !strings.Contains(m, "down-1@test") {
			t.Fatalf("wrong message over LMTP: %s", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("not delivered after release+flush\n%s", in.logText())
	}
	waitFor(t, 5*time.Second, func() bool {
		out, _ := in.cli("queue", "list")
		return strings.Contains(out, "Mail queue is empty")
	})
	// Unknown IDs are clear errors.
	if out, err := in.cli("queue", "delete", "NOSUCHID"); err == nil || !strings.Contains(out, "no such message") {
		t.Fatalf("delete unknown: %v %s", err, out)
	}
	in.stop()
}

func TestQueueDeleteAndRequeue(t *testing.T) {
	in := newInstance(t, `
[[domain]]
name = "lmtp.test"
mailboxes = ["carol"]
lmtp = "tcp:127.0.0.1:1"
`)
	in.start()
	c, err := dialSMTP(in.mx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"del-1@test", "del-2@test"} {
		if err := c.send("carol@lmtp.test", id); err != nil {
			t.Fatal(err)
		}
	}
	var list []*queue.Envelope
	waitFor(t, 10*time.Second, func() bool {
		out, _ := in.cli("queue", "list", "--json")
		list = nil
		json.Unmarshal([]byte(out), &list)
		return len(list) == 2 && list[0].Recipients[0].Attempts > 0 && list[1].Recipients[0].Attempts > 0
	})
	if out, err := in.cli("queue", "requeue", list[0].ID); err != nil {
		t.Fatalf("requeue: %v %s", err, out)
	}
	if out, err := in.cli("queue", "delete", list[1].ID); err != nil {
		t.Fatalf("delete: %v %s", err, out)
	}
	waitFor(t, 5*time.Second, func() bool {
		out, _ := in.cli("queue", "list", "--json")
		list = nil
		json.Unmarshal([]byte(out), &list)
		return len(list) == 1
	})
	in.stop()
}

func TestSendmailInjection(t *testing.T) {
	in := newInstance(t, "")
	in.start()
	msg := "To: Bob <bob@example.test>\nBcc: Secret <postmaster@example.test>\nSubject: via sendmail\n\nline one\n.\nafter a lone dot\n"
	out, err := runWithStdin(in, msg, "sendmail", "-t", "-i", "-f", "app@example.test", "-F", "The App")
	if err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	// The link name "sendmail" works the same, without -i a lone dot ends input.
	link := filepath.Join(filepath.Dir(posthornBinary(t)), "sendmail")
	os.Remove(link)
	if err := os.Symlink(posthornBinary(t), link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, "-oi", "-f", "app@example.test", "bob@example.test")
	cmd.Dir = in.dir
	cmd.Env = append(os.Environ(), "POSTHORN_CONFIG="+in.cfg)
	cmd.Stdin = strings.NewReader("Subject: link\nMessage-ID: <link@test>\n\nvia link\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail link: %v\n%s", err, out)
	}
	bob := filepath.Join(in.dir, "mail", "example.test", "bob", "new")
	var files []string
	waitFor(t, 10*time.Second, func() bool {
		files, _ = filepath.Glob(filepath.Join(bob, "*"))
		return len(files) == 2
	})
	var all string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		all += string(b) + "\n=====\n"
	}
	for _, want := range []string{"From: \"The App\" <app@example.test>", "Return-Path: <app@example.test>", "Subject: via sendmail",
		"line one\n.\nafter a lone dot", "Message-ID: <link@test>", "via link", "(Posthorn, from local user"} {
		if !strings.Contains(all, want) {
			t.Errorf("delivered mail lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "Bcc") || strings.Contains(all, "Secret") {
		t.Errorf("Bcc leaked:\n%s", all)
	}
	// An unknown local recipient is refused at once with EX_NOUSER.
	out, err = runWithStdin(in, "Subject: x\n\nx\n", "sendmail", "nobody@example.test")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 67 || !strings.Contains(out, "nobody@example.test: no such user") {
		t.Errorf("unknown recipient: %v %s", err, out)
	}
	waitFor(t, 10*time.Second, func() bool {
		ents, _ := os.ReadDir(filepath.Join(in.dir, "mail", "example.test", "postmaster", "new"))
		return len(ents) == 1
	})
	in.stop()
}

func TestCheckAndConfigDefault(t *testing.T) {
	bin := posthornBinary(t)
	out, err := exec.Command(bin, "config", "default").Output()
	if err != nil || !strings.Contains(string(out), "127.0.0.1:2525") {
		t.Fatalf("config default: %v\n%s", err, out)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, out, 0o600)
	// The default runs the plugins make build puts in ./bin: check wants
	// them there and executable.
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	for _, p := range []string{"posthorn-notify", "posthorn-webmailbox"} {
		os.WriteFile(filepath.Join(dir, "bin", p), []byte("#!/bin/sh\n"), 0o755)
	}
	if out, err := exec.Command(bin, "check", "-c", good).CombinedOutput(); err != nil {
		t.Fatalf("check default: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("hostname = \"x\"\n[smtp]\nmax_recipients = -1\nbogus_key = 1\n"), 0o600)
	cmd := exec.Command(bin, "check", "-c", bad)
	b, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("check bad config succeeded:\n%s", b)
	}
	if !strings.Contains(string(b), "bad.toml:3:") || !strings.Contains(string(b), "bad.toml:4:") {
		t.Fatalf("errors do not name file and line:\n%s", b)
	}
}

func runWithStdin(in *instance, stdin string, args ...string) (string, error) {
	cmd := exec.Command(posthornBinary(in.t), args...)
	cmd.Dir = in.dir
	cmd.Env = append(os.Environ(), "POSTHORN_CONFIG="+in.cfg)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestTLSATLSRecord(t *testing.T) {
	in := newInstance(t, "")
	out, err := in.cli("tls", "tlsa")
	if err != nil || !regexpMatch(`^_25\._tcp\.mx\.example\.test\. IN TLSA 3 1 1 [0-9a-f]{64}\n$`, out) {
		t.Fatalf("tls tlsa: %v %q", err, out)
	}
	// The same key gives the same record (the self-signed certificate is kept).
	again, _ := in.cli("tls", "tlsa")
	if again != out {
		t.Fatalf("record changed: %q vs %q", out, again)
	}
}

func TestPluginListShowsNotify(t *testing.T) {
	dir, err := os.MkdirTemp("", "phn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "posthorn-notify")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/posthorn/posthorn/plugins/notify/cmd/posthorn-notify").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	in := newInstance(t, fmt.Sprintf("[[plugin]]\nname = \"notify\"\npath = %q\n[plugin.config]\nfrom = \"postmaster@example.test\"\n", bin))
	in.start()
	var out string
	waitFor(t, 20*time.Second, func() bool {
		out, _ = in.cli("plugin", "list")
		return regexpMatch(`notify\s+running\s+\S+\s+events\s+0\s+\d+`, out)
	})
	js, err := in.cli("plugin", "list", "--json")
	if err != nil || !strings.Contains(js, `"Name":"notify"`) {
		t.Fatalf("plugin list --json: %v %s", err, js)
	}
	in.stop()
}
