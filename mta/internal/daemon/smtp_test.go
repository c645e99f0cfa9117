package daemon_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/wait"
)

func TestMXDeliversToMaildirWithTLSReceived(t *testing.T) {
	e := startEnv(t, "")
	c := e.dialTLS(smtpd.MX)
	if err := send(c, "sender@example.com", []string{"postmaster@example.test"}, testMessage("m1")); err != nil {
		t.Fatal(err)
	}
	msgs := e.waitMail("example.test", "postmaster", 1, 10*time.Second)
	m := msgs[0]
	for _, want := range []string{"Return-Path: <sender@example.com>", "Delivered-To: postmaster@example.test",
		"Received: from localhost ([127.0.0.1])", "(using TLSv1.3 with cipher", "by mx.example.test (Posthorn) with ESMTPS id",
		"for <postmaster@example.test>", "Message-ID: <m1@example.com>", "\nHello.\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, m)
		}
	}
	if strings.Contains(m, "\r\n") {
		t.Error("Maildir file has CRLF line endings")
	}
}

func TestUnknownLocalRecipientRefusedAtRCPT(t *testing.T) {
	e := startEnv(t, "")
	c := e.dial(smtpd.MX)
	if err := c.Mail("sender@example.com", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("nobody@example.test", nil)
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
		t.Fatalf("want 550 5.1.1, got %v", err)
	}
	// Known ones still work in the same transaction; catch-all and
	// extensions resolve.
	for _, ok := range []string{"bob@example.test", "bob+tag@example.test", "anything@example.net", "team@example.test", "BOB@Example.Test"} {
		if err := c.Rcpt(ok, nil); err != nil {
			t.Errorf("RCPT %s: %v", ok, err)
		}
	}
}

func TestAliasesExpandAndKeepORCPT(t *testing.T) {
	e := startEnv(t, "")
	c := e.dial(smtpd.MX)
	if err := send(c, "sender@example.com", []string{"team@example.test"}, testMessage("alias")); err != nil {
		t.Fatal(err)
	}
	e.waitMail("example.test", "bob", 1, 10*time.Second)
	e.waitMail("example.test", "alice", 1, 10*time.Second)
}

func TestRelayDenied(t *testing.T) {
	e := startEnv(t, "")
	c := e.dial(smtpd.MX)
	if err := c.Mail("sender@example.com", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("victim@elsewhere.example", nil)
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 554 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("relay: want 554 5.7.1, got %v", err)
	}
	// Null sender to a remote address is no way around it.
	c.Reset()
	c.Mail("", nil)
	if err := c.Rcpt("victim@elsewhere.example", nil); codeOf(err) != 554 {
		t.Fatalf("null-sender relay: want 554, got %v", err)
	}
}

func TestClientNetworkMayRelay(t *testing.T) {
	e2 := startEnvWith(t, func(s string) string {
		return strings.Replace(s, "client_networks = []", `client_networks = ["127.0.0.0/8"]`, 1)
	})
	c := e2.dial(smtpd.MX)
	if err := send(c, "app@example.test", []string{"someone@remote.example"}, testMessage("relay")); err != nil {
		t.Fatalf("relay from client network: %v", err)
	}
}

func TestSubmissionNeedsTLSAndAuth(t *testing.T) {
	e := startEnv(t, "")
	// Without TLS, AUTH is not even offered and MAIL is refused.
	c := e.dial(smtpd.Submission)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered before STARTTLS")
	}
	if err := c.Mail(testUser, nil); codeOf(err) != 530 {
		t.Fatalf("MAIL without AUTH: want 530, got %v", err)
	}
	// Over TLS, a wrong password is refused with 535.
	c = e.dialTLS(smtpd.Submission)
	if ok, params := c.Extension("AUTH"); !ok || !strings.Contains(params, "PLAIN") || !strings.Contains(params, "LOGIN") {
		t.Fatalf("AUTH PLAIN LOGIN not offered after STARTTLS: %q", params)
	}
	if err := c.Auth(sasl.NewPlainClient("", testUser, "wrong")); codeOf(err) != 535 {
		t.Fatalf("bad password: want 535, got %v", err)
	}
	c = e.login()
	// The authenticated user may relay, but only as themself.
	if err := c.Mail("bob@example.test", nil); codeOf(err) != 553 {
		t.Fatalf("foreign sender: want 553, got %v", err)
	}
	if err := send(c, "alice+news@example.test", []string{"bob@example.test", "friend@remote.example"}, testMessage("sub")); err != nil {
		t.Fatal(err)
	}
	e.waitMail("example.test", "bob", 1, 10*time.Second)
}

func TestSubmissionLOGIN(t *testing.T) {
	e := startEnv(t, "")
	c := e.dialTLS(smtpd.Submission)
	if err := c.Auth(sasl.NewLoginClient(testUser, testPass)); err != nil {
		t.Fatal(err)
	}
	if err := send(c, testUser, []string{"bob@example.test"}, testMessage("login")); err != nil {
		t.Fatal(err)
	}
}

func TestImplicitTLSSubmission(t *testing.T) {
	e := startEnv(t, "")
	c := e.dialTLS(smtpd.Submissions)
	if err := c.Hello("client.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("not TLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
		t.Fatal(err)
	}
	if err := send(c, testUser, []string{"postmaster@example.test"}, testMessage("465")); err != nil {
		t.Fatal(err)
	}
	m := e.waitMail("example.test", "postmaster", 1, 10*time.Second)[0]
	if !strings.Contains(m, "with ESMTPSA id") {
		t.Errorf("Received header lacks ESMTPSA:\n%s", m)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	e := startEnv(t, "")
	c := e.dial(smtpd.MX)
	// Declared too big at MAIL.
	if err := c.Mail("s@example.com", &smtp.MailOptions{Size: 2 << 20}); codeOf(err) != 552 {
		t.Fatalf("SIZE=2MiB: want 552, got %v", err)
	}
	// Actually too big in DATA.
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 1100)
	if err := send(c, "s@example.com", []string{"postmaster@example.test"}, big); codeOf(err) != 552 {
		t.Fatalf("1.1 MB message: want 552, got %v", err)
	}
	// The session is still usable and nothing was queued.
	if err := send(c, "s@example.com", []string{"postmaster@example.test"}, testMessage("after-big")); err != nil {
		t.Fatal(err)
	}
	e.waitMail("example.test", "postmaster", 1, 10*time.Second)
	waitQueueEmpty(t, e) // nothing else is on its way
	if n := e.mailCount("example.test", "postmaster"); n != 1 {
		t.Fatalf("want only the small message delivered, have %d", n)
	}
}

func TestRecipientLimit(t *testing.T) {
	e := startEnv(t, "")
	c := e.dial(smtpd.MX)
	c.Mail("s@example.com", nil)
	for i := 0; i < 5; i++ {
		if err := c.Rcpt("postmaster@example.test", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Rcpt("bob@example.test", nil); codeOf(err) != 452 {
		t.Fatalf("6th recipient: want 452, got %v", err)
	}
}

func TestLineLengthLimit(t *testing.T) {
	e := startEnv(t, "")
	c := e.dial(smtpd.MX)
	msg := "Subject: long\r\n\r\n" + strings.Repeat("y", 1001) + "\r\n"
	if err := send(c, "s@example.com", []string{"postmaster@example.test"}, msg); codeOf(err) != 552 {
		t.Fatalf("1001-char line: want 552, got %v", err)
	}
}

func TestSessionsPerIPLimit(t *testing.T) {
	e := startEnv(t, "")
	var conns []net.Conn
	for i := 0; i < 8; i++ {
		c, err := net.Dial("tcp", e.addr(smtpd.MX))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := c.Read(buf)
		if !strings.HasPrefix(string(buf[:n]), "220 ") {
			t.Fatalf("session %d: %q", i, buf[:n])
		}
		conns = append(conns, c)
	}
	c, err := net.Dial("tcp", e.addr(smtpd.MX))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "421 4.7.0") {
		t.Fatalf("9th session: want 421 4.7.0, got %q", b)
	}
	// Closing one frees a slot (once the server has seen the close).
	conns[0].Close()
	var greeting string
	wait.For(t, 10*time.Second, "a session slot freed by the close", func() bool {
		c, err := net.Dial("tcp", e.addr(smtpd.MX))
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		n, _ := c.Read(buf)
		greeting = string(buf[:n])
		if !strings.HasPrefix(greeting, "220 ") {
			return false
		}
		fmt.Fprintf(c, "QUIT\r\n")
		n, _ = c.Read(buf)
		greeting = string(buf[:n])
		return true
	})
	if !strings.HasPrefix(greeting, "221 ") {
		t.Fatalf("QUIT: %q", greeting)
	}
}

func TestCommandTimeout(t *testing.T) {
	e := startEnvWith(t, func(s string) string {
		return strings.Replace(s, `command_timeout = "5s"`, `command_timeout = "300ms"`, 1)
	})
	r := e.raw(smtpd.MX)
	start := time.Now()
	code, msg := r.reply()
	if code != 421 || time.Since(start) > 10*time.Second {
		t.Fatalf("idle client: want 421 within the timeout, got %d %q after %s", code, msg, time.Since(start))
	}
}

// SMTP smuggling: a bare LF before ".\r\n" (and bare CR variants) would end
// the message early at a lenient downstream server and start a second,
// forged one. We refuse the whole message. (Over TLS:
// TestSmugglingRefusedOverTLS.)
func TestSmugglingRefused(t *testing.T) {
	e := startEnv(t, "")
	for name, payload := range smugglingPayloads {
		t.Run(name, func(t *testing.T) {
			r := e.raw(smtpd.MX)
			r.write("EHLO attacker.example\r\n")
			r.expect(250)
			r.write("MAIL FROM:<a@example.com>\r\n")
			r.expect(250)
			r.write("RCPT TO:<postmaster@example.test>\r\n")
			r.expect(250)
			r.write("DATA\r\n")
			r.expect(354)
			r.write(payload + ".\r\n")
			code, msg := r.reply()
			if code != 554 {
				t.Fatalf("want 554, got %d %s", code, msg)
			}
			// The connection is still in sync: the smuggled commands were data.
			r.write("NOOP\r\n")
			r.expect(250)
			// Hang up and wait for the server's close (which frees the
			// session slot first): more payloads than max_sessions_per_ip.
			r.write("QUIT\r\n")
			r.expect(221)
			r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.ReadAll(r.c)
			r.c.Close()
		})
	}
	// A message accepted by mistake is queued before its reply is
	// written: it would be in the queue or delivered by now.
	waitQueueEmpty(t, e)
	if n := e.mailCount("example.test", "postmaster") + e.mailCount("example.test", "bob"); n != 0 {
		t.Fatalf("%d message(s) delivered; smuggling attempts must deliver nothing", n)
	}
}

func TestPipelining(t *testing.T) {
	e := startEnv(t, "")
	r := e.raw(smtpd.MX)
	r.write("EHLO pipe.example\r\n")
	if msg := r.expect(250); !strings.Contains(msg, "PIPELINING") || !strings.Contains(msg, "DSN") ||
		!strings.Contains(msg, "SMTPUTF8") || !strings.Contains(msg, "8BITMIME") || !strings.Contains(msg, "CHUNKING") ||
		!strings.Contains(msg, "ENHANCEDSTATUSCODES") || !strings.Contains(msg, "SIZE 1048576") || !strings.Contains(msg, "STARTTLS") {
		t.Fatalf("EHLO lacks an extension: %q", msg)
	}
	// One write: the whole transaction, twice, with a bad recipient in between.
	var b strings.Builder
	for i := 0; i < 2; i++ {
		fmt.Fprintf(&b, "MAIL FROM:<s@example.com>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
		fmt.Fprintf(&b, "Subject: pipelined %d\r\nMessage-ID: <pipe%d@example.com>\r\n\r\nbody\r\n.\r\n", i, i)
	}
	b.WriteString("QUIT\r\n")
	r.write(b.String())
	for i := 0; i < 2; i++ {
		r.expect(250)
		r.expect(550)
		r.expect(250)
		r.expect(354)
		if msg := r.expect(250); !strings.Contains(msg, "queued as") {
			t.Fatalf("want queue ID in 250, got %q", msg)
		}
	}
	r.expect(221)
	e.waitMail("example.test", "bob", 2, 10*time.Second)
}

func TestBDATChunking(t *testing.T) {
	e := startEnv(t, "")
	r := e.raw(smtpd.MX)
	r.write("EHLO chunk.example\r\n")
	r.expect(250)
	r.write("MAIL FROM:<s@example.com>\r\nRCPT TO:<bob@example.test>\r\n")
	r.expect(250)
	r.expect(250)
	part1 := "Subject: chunked\r\n\r\n"
	part2 := "chunk body\r\n"
	r.write(fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1))
	r.expect(250)
	r.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(part2), part2))
	r.expect(250)
	m := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]
	if !strings.Contains(m, "chunk body") {
		t.Fatalf("chunked message body missing:\n%s", m)
	}
}

func TestConcurrentSessions(t *testing.T) {
	e := startEnv(t, "")
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := smtp.Dial(e.addr(smtpd.MX))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for i := 0; i < 10; i++ {
				if err := send(c, "s@example.com", []string{"bob@example.test"}, testMessage(fmt.Sprintf("c%d-%d", w, i))); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.waitMail("example.test", "bob", 40, 20*time.Second)
}

// TestRequireTLSInbound: REQUIRETLS (RFC 8689) is offered only under TLS,
// refused without it, and kept in the queue envelope with it.
func TestRequireTLSInbound(t *testing.T) {
	e := startEnv(t, "\n[[domain]]\nname = \"down.test\"\nmailboxes = [\"x\"]\nlmtp = \"tcp:127.0.0.1:1\"\n")
	r := e.raw(smtpd.MX)
	r.write("EHLO a.example\r\n")
	if msg := r.expect(250); strings.Contains(msg, "REQUIRETLS") {
		t.Fatal("REQUIRETLS offered without TLS")
	}
	r.write("MAIL FROM:<a@example.com> REQUIRETLS\r\n")
	if code, msg := r.reply(); code != 530 || !strings.Contains(msg, "5.7.10") {
		t.Fatalf("REQUIRETLS without TLS: %d %s", code, msg)
	}
	c := e.dialTLS(smtpd.MX)
	if ok, _ := c.Extension("REQUIRETLS"); !ok {
		t.Fatal("REQUIRETLS not offered under TLS")
	}
	if err := c.Mail("a@example.com", &smtp.MailOptions{RequireTLS: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("x@down.test", nil); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	io.WriteString(w, testMessage("rtls"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, env := range e.d.Queue.List() {
		found = found || env.RequireTLS
	}
	if !found {
		t.Fatal("REQUIRETLS not kept in the envelope")
	}
}

func TestDataTimeout(t *testing.T) {
	e := startEnvWith(t, func(s string) string {
		s = strings.Replace(s, `data_timeout = "5s"`, `data_timeout = "300ms"`, 1)
		return strings.Replace(s, `command_timeout = "5s"`, `command_timeout = "30s"`, 1)
	})
	r := e.raw(smtpd.MX)
	r.write("EHLO slow.example\r\n")
	r.expect(250)
	r.write("MAIL FROM:<a@example.com>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	r.expect(250)
	r.expect(250)
	r.expect(354)
	r.write("Subject: stalled\r\n\r\nhalf a mess")
	start := time.Now()
	code, msg := r.reply()
	// The data timeout, not the 30 s command timeout, ends it.
	if code != 451 || !strings.Contains(msg, "4.4.2") || time.Since(start) > 10*time.Second {
		t.Fatalf("stalled DATA: want 451 4.4.2 well before the command timeout, got %d %q after %s", code, msg, time.Since(start))
	}
	if n := e.mailCount("example.test", "bob"); n != 0 {
		t.Fatalf("half a message was delivered")
	}
}
