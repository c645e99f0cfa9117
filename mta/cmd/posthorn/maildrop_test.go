package main

import (
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/maildrop"
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
