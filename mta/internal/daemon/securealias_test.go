package daemon_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

const secureAliasConf = `
[secure_alias]
subdomain = "secure"
users = ["alice@example.test"]
level = "encrypt"
`

func TestSecureAliasInbound(t *testing.T) {
	e := startEnv(t, secureAliasConf)
	// Without TLS: refused at RCPT with the words RFC 3207 uses.
	c := e.dial(smtpd.MX)
	c.Mail("friend@example.com", nil)
	err := c.Rcpt("alice@secure.example.test", nil)
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 530 || !strings.Contains(se.Message, "STARTTLS") {
		t.Fatalf("without TLS: want 530 Must issue a STARTTLS command first, got %v", err)
	}
	// Users who did not opt in have no secure alias.
	if err := c.Rcpt("bob@secure.example.test", nil); codeOf(err) != 550 {
		t.Fatalf("bob has no secure alias: want 550, got %v", err)
	}
	// With TLS: delivered to alice's normal mailbox.
	tc := e.dialTLS(smtpd.MX)
	if err := send(tc, "friend@example.com", []string{"alice@secure.example.test"}, testMessage("sa-in")); err != nil {
		t.Fatal(err)
	}
	m := e.waitMail("example.test", "alice", 1, 10*time.Second)[0]
	if !strings.Contains(m, "Message-ID: <sa-in@example.com>") || !strings.Contains(m, "Delivered-To: alice@example.test") {
		t.Fatalf("%s", m)
	}
}

func TestSecureAliasOutboundBouncesFast(t *testing.T) {
	e, m := remoteEnv(t, remotemta.Config{Mode: remotemta.NoSTARTTLS}, secureAliasConf)
	c := e.dialTLS(smtpd.Submission)
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Mail("alice@secure.example.test", nil); err != nil {
		t.Fatalf("alice may send as her secure alias: %v", err)
	}
	if err := c.Rcpt("friend@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	io.WriteString(w, "From: alice@secure.example.test\r\nTo: friend@remote.test\r\nSubject: secure\r\nMessage-ID: <sa-out@example.test>\r\n\r\nsecret\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The bounce goes to the secure alias, which is alice's mailbox.
	b := e.waitMail("example.test", "alice", 1, 10*time.Second)[0]
	b = strings.ReplaceAll(b, "\n ", " ") // unfold header fields
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("bounce after %s", d)
	}
	for _, want := range []string{"Action: failed", "Status: 5.7.10", "could not be reached over an encrypted connection", "Final-Recipient: rfc822; friend@remote.test",
		"Unzustellbare Nachricht"} {
		if !strings.Contains(b, want) {
			t.Errorf("bounce lacks %q:\n%s", want, b)
		}
	}
	if len(m.Messages()) != 0 {
		t.Fatal("mail from a secure alias went out without TLS")
	}
	// Nothing stays queued for retries (the bounce's own entry leaves
	// right after its delivery).
	deadline := time.Now().Add(5 * time.Second)
	for len(e.d.Queue.List()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still queued: %+v", e.d.Queue.List()[0].Recipients[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
