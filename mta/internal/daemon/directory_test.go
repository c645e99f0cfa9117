package daemon_test

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/dovecottest"
)

// TestDovecotAuthAndUserdb: SMTP AUTH is checked by a real Dovecot, and a
// recipient only Dovecot knows is accepted at RCPT; when Dovecot is gone,
// AUTH answers 454 and RCPT of an address not seen before 451 (never 5xx).
func TestDovecotAuthAndUserdb(t *testing.T) {
	dc := dovecottest.Start(t, []dovecottest.User{
		{Name: "carol@example.test", Password: "carol's password"},
		{Name: "dave@example.test", Password: "dave's password"},
	})
	e := startEnv(t, "\n[dovecot]\nauth_socket = \""+dc.AuthSocket+"\"\nuserdb_socket = \""+dc.UserdbSocket+"\"\n")

	c := e.dialTLS(smtpd.Submission)
	if err := c.Auth(sasl.NewPlainClient("", "carol@example.test", "wrong")); codeOf(err) != 535 {
		t.Fatalf("bad password: want 535, got %v", err)
	}
	c = e.dialTLS(smtpd.Submission)
	if err := c.Auth(sasl.NewPlainClient("", "carol@example.test", "carol's password")); err != nil {
		t.Fatalf("Dovecot user: %v", err)
	}
	if err := send(c, "carol@example.test", []string{"dave@example.test"}, testMessage("via dovecot")); err != nil {
		t.Fatal(err)
	}
	e.waitMail("example.test", "dave", 1, 10*time.Second)

	m := e.dial(smtpd.MX)
	if err := m.Mail("someone@remote.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Rcpt("carol@example.test", nil); err != nil {
		t.Errorf("RCPT of a Dovecot user: %v", err)
	}
	if err := m.Rcpt("nobody@example.test", nil); codeOf(err) != 550 {
		t.Errorf("RCPT of an unknown user: want 550, got %v", err)
	}
	m.Close()

	// Dovecot stops: AUTH 454, RCPT of an address not cached 451.
	dc.Stop()
	c = e.dialTLS(smtpd.Submission)
	if err := c.Auth(sasl.NewPlainClient("", "carol@example.test", "carol's password")); codeOf(err) != 454 {
		t.Errorf("AUTH with Dovecot down: want 454, got %v", err)
	}
	m = e.dial(smtpd.MX)
	if err := m.Mail("someone@remote.example", nil); err != nil {
		t.Fatal(err)
	}
	err := m.Rcpt("erin@example.test", nil)
	if code := codeOf(err); code < 400 || code > 499 {
		t.Errorf("RCPT with Dovecot down: want 4xx, got %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "dovecot") {
		t.Errorf("reply leaks internals: %v", err)
	}
}
