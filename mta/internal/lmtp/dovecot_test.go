package lmtp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/testbed/dovecottest"
)

// TestDeliverToDovecot: a real Dovecot LMTP server (Debian's
// dovecot-lmtpd) gets a message whose lines start with dots at every
// offset around the client's 4 KiB buffer boundary, for two users and an
// unknown address: per-recipient results as Dovecot gives them, and each
// Maildir holds the message unchanged (after the headers Dovecot adds).
func TestDeliverToDovecot(t *testing.T) {
	dc := dovecottest.StartLMTP(t, []dovecottest.User{
		{Name: "ann@example.net", Password: "x"},
		{Name: "bob@example.net", Password: "y"},
	})
	var msg strings.Builder
	msg.WriteString("From: a@example.org\r\nSubject: dots\r\n\r\n")
	for i := 0; msg.Len() < 12<<10; i++ {
		line := strings.Repeat("x", i%80)
		if i%3 == 0 {
			line = "." + line
		}
		msg.WriteString(line + "\r\n")
	}
	msg.WriteString(".\r\n..\r\nend\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Deliver(ctx, dc.LMTP, "a@example.org", []string{"ann@example.net", "nobody@example.net", "bob@example.net"},
		Options{LHLO: "mx.posthorn.test", Timeout: 30 * time.Second}, strings.NewReader(msg.String()))
	if err != nil {
		t.Fatal(err)
	}
	checkResults(t, res, []Result{
		{Addr: "ann@example.net", Code: 250, Enhanced: "2.0.0", Text: "Saved", OK: true},
		{Addr: "nobody@example.net", Code: 550, Enhanced: "5.1.1", Text: "User doesn't exist"},
		{Addr: "bob@example.net", Code: 250, Enhanced: "2.0.0", Text: "Saved", OK: true},
	})
	want := strings.ReplaceAll(msg.String(), "\r\n", "\n") // Maildir has LF line ends
	for _, u := range []string{"ann@example.net", "bob@example.net"} {
		files, err := filepath.Glob(filepath.Join(dc.Maildir(u), "new", "*"))
		if err != nil || len(files) != 1 {
			t.Fatalf("%s: %v %v", u, files, err)
		}
		got, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(got), "\n"+want) {
			t.Errorf("%s: stored message differs:\n%q", u, got)
		}
	}
}
