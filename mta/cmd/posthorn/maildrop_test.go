package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/maildrop"
	"github.com/posthorn/posthorn/testbed/wait"
)

// TestSendmailWhileDaemonDown: with the daemon stopped, sendmail leaves
// the message in the drop directory and succeeds; the daemon queues it
// when it starts, and files dropped while it runs, each exactly once.
func TestSendmailWhileDaemonDown(t *testing.T) {
	in := newInstance(t, "")
	drop := filepath.Join(in.dir, "var", "maildrop")
	if err := os.MkdirAll(drop, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := runWithStdin(in, "Subject: while down\nMessage-ID: <down@test>\n\nqueued later\n", "sendmail", "-i", "bob@example.test")
	if err != nil || !strings.Contains(out, "left in "+drop) {
		t.Fatalf("sendmail with the daemon down: %v\n%s", err, out)
	}
	if names, _ := maildrop.List(drop); len(names) != 1 {
		t.Fatalf("drop directory holds %v", names)
	}

	in.start()
	bob := filepath.Join(in.dir, "mail", "example.test", "bob", "new")
	count := func() int { ents, _ := os.ReadDir(bob); return len(ents) }
	waitFor(t, 10*time.Second, func() bool { return count() == 1 })
	if names, _ := maildrop.List(drop); len(names) != 0 {
		t.Errorf("picked-up file not removed: %v", names)
	}
	if st, err := os.Stat(drop); err != nil || st.Mode() != maildrop.DirMode {
		t.Errorf("drop directory mode %v, want %v", st.Mode(), maildrop.DirMode)
	}
	// A file that lands while the daemon runs (sendmail found it down a
	// moment ago) is picked up when the directory changes.
	if _, err := maildrop.Write(drop, control.Request{From: "app@example.test", To: []string{"bob@example.test"}},
		strings.NewReader("Subject: late\r\nMessage-ID: <late@test>\r\n\r\nlate\r\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return count() == 2 })

	// A restart queues nothing again.
	in.stop()
	in.start()
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(in.logText(), "posthorn started") })
	if n := count(); n != 2 {
		t.Errorf("bob has %d messages, want 2", n)
	}
	ents, _ := os.ReadDir(bob)
	var all string
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(bob, e.Name()))
		all += string(b)
	}
	login := "nobody"
	if u, err := user.Current(); err == nil {
		login = u.Username
	}
	for _, want := range []string{"Return-Path: <" + login + "@mx.example.test>", "queued later", "(Posthorn, from local user " + login + ")", "late"} {
		if !strings.Contains(all, want) {
			t.Errorf("delivered mail lacks %q:\n%s", want, all)
		}
	}
	in.stop()
}

func TestSenderDomain(t *testing.T) {
	h, _ := os.Hostname()
	if got := senderDomain("localhost"); got != h {
		t.Errorf("senderDomain(localhost) = %q, want the machine's name %q", got, h)
	}
	if got := senderDomain("mx.example.org"); got != "mx.example.org" {
		t.Errorf("configured hostname not used: %q", got)
	}
}

// TestMaildropRefusedFiles: what sendmail left while the daemon was down
// and the daemon can never accept is set aside as .bad.NAME for the
// postmaster, logged at error level and counted by reason; when the file
// names a sender, the sender gets a bounce saying why.
func TestMaildropRefusedFiles(t *testing.T) {
	in := newInstance(t, "")
	metricsAddr := freePort(t)
	b, err := os.ReadFile(in.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "[metrics]\naddress = \"\"", fmt.Sprintf("[metrics]\naddress = %q", metricsAddr), 1)
	cfg = strings.Replace(cfg, "[smtp]\n", "[smtp]\nmax_message_size = \"20KiB\"\n", 1)
	if err := os.WriteFile(in.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	drop := filepath.Join(in.dir, "var", "maildrop")
	if err := os.MkdirAll(drop, 0o755); err != nil {
		t.Fatal(err)
	}
	// With the daemon down: one to an unknown local user, one too big,
	// one with the null sender (nobody to tell), each from sendmail.
	for _, c := range []struct{ body, from, to string }{
		{"Subject: to nobody\nMessage-ID: <nobody@test>\n\nhello\n", "bob@example.test", "nobody@example.test"},
		{"Subject: too big\nMessage-ID: <big@test>\n\n" + strings.Repeat(strings.Repeat("y", 70)+"\n", 600), "bob@example.test", "bob@example.test"},
		{"Subject: null sender\n\nx\n", "<>", "nobody@example.test"},
	} {
		if out, err := runWithStdin(in, c.body, "sendmail", "-i", "-f", c.from, c.to); err != nil || !strings.Contains(out, "left in "+drop) {
			t.Fatalf("sendmail with the daemon down: %v\n%s", err, out)
		}
	}
	// Not from sendmail: garbage, and a symbolic link to someone's file.
	if err := os.WriteFile(filepath.Join(drop, "1.garbage"), []byte("not an envelope"), 0o640); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(in.dir, "secret")
	os.WriteFile(secret, []byte(`{"from":"x@example.test","to":["bob@example.test"]}`+"\nSubject: stolen\n\nx\n"), 0o600)
	if err := os.Symlink(secret, filepath.Join(drop, "2.link")); err != nil {
		t.Fatal(err)
	}
	// A sendmail killed mid-write two days ago, and one writing now.
	stale, fresh := filepath.Join(drop, "3.killed.tmp"), filepath.Join(drop, "4.writing.tmp")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("{}\npartial"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(stale, past, past); err != nil {
		t.Fatal(err)
	}

	in.start()
	bob := filepath.Join(in.dir, "mail", "example.test", "bob", "new")
	var bounces []string
	wait.For(t, 20*time.Second, "two bounces to bob", func() bool {
		ents, _ := os.ReadDir(bob)
		bounces = bounces[:0]
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(bob, e.Name()))
			bounces = append(bounces, string(b))
		}
		return len(bounces) >= 2
	})
	all := strings.Join(bounces, "\n----\n")
	for _, want := range []string{"Return-Path: <>", "multipart/report", "Final-Recipient: rfc822; nobody@example.test", "Status: 5.1.1",
		"Status: 5.3.4", "not accepted from the drop directory", "exceeds max_message_size", "Subject: to nobody", "Subject: too big"} {
		if !strings.Contains(all, want) {
			t.Errorf("bounces lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, strings.Repeat("y", 70)) {
		t.Error("the bounce returns the body of the message that was too big")
	}
	ents, _ := os.ReadDir(drop)
	var bad []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".bad.") {
			bad = append(bad, e.Name())
		}
	}
	if len(bad) != 5 {
		t.Errorf("set aside: %v, want 5 files", bad)
	}
	if b, _ := os.ReadFile(secret); !strings.Contains(string(b), "stolen") {
		t.Error("the symlink's target was touched")
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary file not removed: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a file being written was touched: %v", err)
	}
	logs := in.logText()
	for _, want := range []string{"no sender to tell", "reason=malformed", "reason=owner", "reason=too_big", "reason=refused", "sender told", "no bounce (null sender"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`posthorn_maildrop_refused_total{reason="malformed"} 1`, `posthorn_maildrop_refused_total{reason="owner"} 1`,
		`posthorn_maildrop_refused_total{reason="too_big"} 1`, `posthorn_maildrop_refused_total{reason="refused"} 2`, "posthorn_maildrop_bounces_total 2"} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	in.stop()
}

// TestSendmailAsUnprivilegedUser: a user without any privilege (nobody)
// runs sendmail while the daemon is down: the message is left in the drop
// directory as a file that user owns, the user cannot list the directory
// (others' files stay hidden), and the daemon delivers the message as
// coming from that user. Runs only as root (it switches user).
func TestSendmailAsUnprivilegedUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run sendmail as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	in := newInstance(t, "")
	bin := posthornBinary(t)
	// nobody needs to reach the binary and read the config; nothing else.
	for _, p := range []string{filepath.Dir(bin), in.dir} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(in.cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	// The daemon creates the drop directory (mode 3733) at its start.
	in.start()
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(in.logText(), "posthorn started") })
	in.stop()
	drop := filepath.Join(in.dir, "var", "maildrop")
	if st, err := os.Stat(drop); err != nil || st.Mode() != maildrop.DirMode {
		t.Fatalf("drop directory: %v %v, want mode %v", st, err, maildrop.DirMode)
	}
	asNobody := func(stdin string, name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "POSTHORN_CONFIG=" + in.cfg}
		cmd.Stdin = strings.NewReader(stdin)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := asNobody("Subject: from nobody\nMessage-ID: <nobody@test>\n\nunprivileged\n", bin, "sendmail", "-i", "bob@example.test")
	if err != nil || !strings.Contains(out, "left in "+drop) {
		t.Fatalf("sendmail as nobody with the daemon down: %v\n%s", err, out)
	}
	names, _ := maildrop.List(drop)
	if len(names) != 1 {
		t.Fatalf("drop directory holds %v", names)
	}
	st, err := os.Stat(filepath.Join(drop, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); int(sys.Uid) != uid {
		t.Errorf("dropped file belongs to uid %d, want nobody's %d", sys.Uid, uid)
	}
	if st.Mode().Perm()&0o007 != 0 {
		t.Errorf("dropped file mode %v: readable by others", st.Mode())
	}
	if out, err := asNobody("", "/bin/ls", drop); err == nil {
		t.Errorf("nobody can list the drop directory:\n%s", out)
	}

	in.start()
	bob := filepath.Join(in.dir, "mail", "example.test", "bob", "new")
	var got string
	waitFor(t, 10*time.Second, func() bool {
		ents, _ := os.ReadDir(bob)
		if len(ents) != 1 {
			return false
		}
		b, _ := os.ReadFile(filepath.Join(bob, ents[0].Name()))
		got = string(b)
		return true
	})
	for _, want := range []string{"Return-Path: <nobody@mx.example.test>", "(Posthorn, from local user nobody)", "unprivileged"} {
		if !strings.Contains(got, want) {
			t.Errorf("delivered mail lacks %q:\n%s", want, got)
		}
	}
	if names, _ := maildrop.List(drop); len(names) != 0 {
		t.Errorf("picked-up file not removed: %v", names)
	}
	// With the daemon running, the control socket (0600) is closed to
	// nobody: sendmail leaves the message in the drop directory and the
	// daemon, watching it, delivers it at once.
	if out, err := asNobody("Subject: second\n\nwhile up\n", bin, "sendmail", "-i", "bob@example.test"); err != nil {
		t.Fatalf("sendmail as nobody with the daemon up: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, func() bool { ents, _ := os.ReadDir(bob); return len(ents) == 2 })
	in.stop()
}
