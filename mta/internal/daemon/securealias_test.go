package daemon_test

import (
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/testbed/dnsserver"
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
	c := e.login()
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

// TestSecureAliasBogusDNSSECBouncesFast (issue 12.7): the destination's
// DNS answers are DNSSEC-bogus (SERVFAIL from the validating resolver).
// The secure alias's mail bounces within seconds with the reason and
// without advice to check the address for typos; an ordinary sender's
// mail to the same destination stays queued for the normal retries.
func TestSecureAliasBogusDNSSECBouncesFast(t *testing.T) {
	e, m := remoteEnv(t, remotemta.Config{Mode: remotemta.STARTTLSValid}, secureAliasConf)
	e.dns.Zone("remote.test", dnsserver.Bogus)
	c := e.login()
	start := time.Now()
	for _, from := range []string{"alice@secure.example.test", "alice@example.test"} {
		if err := c.Mail(from, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("friend@remote.test", nil); err != nil {
			t.Fatal(err)
		}
		w, _ := c.Data()
		io.WriteString(w, "From: "+from+"\r\nTo: friend@remote.test\r\nSubject: bogus\r\nMessage-ID: <"+strings.Replace(from, "@", ".", 1)+"@x>\r\n\r\nsecret\r\n")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b := e.waitMail("example.test", "alice", 1, 10*time.Second)[0]
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("bounce after %s", d)
	}
	// The people's text is quoted-printable: read it decoded.
	dec, _ := io.ReadAll(quotedprintable.NewReader(strings.NewReader(b)))
	b = strings.ReplaceAll(string(dec), "\n ", " ")
	for _, want := range []string{"Action: failed", "Status: 5.7.10", "DNSSEC", "Final-Recipient: rfc822; friend@remote.test", "the address itself is not at fault"} {
		if !strings.Contains(b, want) {
			t.Errorf("bounce lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(b, "typing mistakes") || strings.Contains(b, "Tippfehler") {
		t.Errorf("a TLS bounce advises checking the address for typos:\n%s", b)
	}
	if len(m.Messages()) != 0 {
		t.Fatal("delivered despite a bogus destination")
	}
	// The ordinary sender's copy is deferred, not bounced.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pending bool
		for _, env := range e.d.Queue.List() {
			if env.From == "alice@example.test" && env.Recipients[0].State == queue.Pending && env.Recipients[0].Attempts > 0 {
				pending = true
			}
		}
		if pending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ordinary sender's message is not deferred: %+v", e.d.Queue.List())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(e.waitMail("example.test", "alice", 1, time.Second)); n != 1 {
		t.Errorf("%d notices to alice, want the one bounce", n)
	}
}
