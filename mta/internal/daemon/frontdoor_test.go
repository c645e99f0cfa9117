package daemon_test

// Issue 20: the SMTP front door under abuse, over real loopback SMTP
// against the real daemon. The AUTH flood with RSS from /proc runs
// against the real binary in testbed/abuse.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/daemon"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
)

// setKeys replaces (or adds) "key = value" lines in the [smtp] table of
// the harness config.
func setKeys(kv map[string]string) func(string) string {
	return func(s string) string {
		for k, v := range kv {
			lines := strings.Split(s, "\n")
			found := false
			for i, l := range lines {
				if strings.HasPrefix(l, k+" = ") {
					lines[i] = k + " = " + v
					found = true
				}
			}
			s = strings.Join(lines, "\n")
			if !found {
				s = strings.Replace(s, "[smtp]\n", "[smtp]\n"+k+" = "+v+"\n", 1)
			}
		}
		return s
	}
}

// dialFrom opens a raw SMTP connection from source address src
// (127.0.0.x) and reads the greeting code.
func (e *testEnv) dialFrom(k smtpd.Kind, src string) (*rawConn, int) {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", e.addr(k))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: e.t, c: c, tp: textproto.NewReader(bufio.NewReader(c))}
	code, _ := rc.reply()
	return rc, code
}

// lfSum is the SHA-256 of msg with CRLF turned into LF, as Maildir stores it.
func lfSum(msg []byte) [32]byte {
	return sha256.Sum256(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")))
}

// TestLongLinesDeliveredIntact: with no max_line_length (the default), a
// single 1 MB line and a 30 MB message of 10 KB lines go through DATA and
// BDAT into the Maildir unchanged.
func TestLongLinesDeliveredIntact(t *testing.T) {
	e := startEnvConfig(t, setKeys(map[string]string{
		"max_line_length": "0", "max_message_size": `"40MiB"`, "data_timeout": `"300s"`, "command_timeout": `"300s"`,
	}))
	oneMB := []byte("Subject: one long line\r\n\r\n" + strings.Repeat("0123456789abcdef", 1<<16) + "\r\n")
	var big bytes.Buffer
	big.WriteString("Subject: thirty megabytes\r\n\r\n")
	line := strings.Repeat("QUJD", 2500) // 10 KB
	for i := 0; big.Len() < 30<<20; i++ {
		fmt.Fprintf(&big, "%06d%s\r\n", i, line)
	}
	msgs := [][]byte{oneMB, big.Bytes()}
	for i, msg := range msgs {
		c := e.dial(smtpd.MX)
		if err := send(c, "s@example.com", []string{"bob@example.test"}, string(msg)); err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, len(msg), err)
		}
	}
	// The 1 MB line once more over BDAT (CHUNKING).
	r := e.raw(smtpd.MX)
	r.write("EHLO client.example.com\r\n")
	r.expect(250)
	r.write("MAIL FROM:<s@example.com>\r\nRCPT TO:<bob@example.test>\r\n")
	r.expect(250)
	r.expect(250)
	r.write(fmt.Sprintf("BDAT %d LAST\r\n", len(oneMB)))
	r.write(string(oneMB))
	r.expect(250)
	msgs = append(msgs, oneMB)

	got := e.waitMail("example.test", "bob", 3, 120*time.Second)
	want := map[[32]byte]int{}
	for _, m := range msgs {
		want[lfSum(m)]++
	}
	for _, g := range got {
		// Our headers (Return-Path, Delivered-To, Received) come first;
		// the client's message is the rest, byte for byte.
		i := strings.Index(g, "Subject: ")
		if i < 0 {
			t.Fatalf("delivered message without the client's header")
		}
		sum := sha256.Sum256([]byte(g[i:]))
		if want[sum] == 0 {
			t.Errorf("delivered message of %d bytes differs from every sent one", len(g)-i)
		}
		want[sum]--
	}
}

// TestLineCapRefusedPermanently: an operator-set max_line_length refuses a
// longer line with a permanent 5xx, after the whole message, and the
// session goes on.
func TestLineCapRefusedPermanently(t *testing.T) {
	e := startEnvConfig(t, setKeys(map[string]string{"max_line_length": "1000"}))
	c := e.dial(smtpd.MX)
	msg := "Subject: long\r\n\r\n" + strings.Repeat("y", 1<<20) + "\r\n"
	err := send(c, "s@example.com", []string{"postmaster@example.test"}, msg)
	if code := codeOf(err); code < 500 || code > 599 {
		t.Fatalf("1 MB line over a 1000-byte cap: want a permanent 5xx, got %v", err)
	}
	if err := send(c, "s@example.com", []string{"postmaster@example.test"}, testMessage("after")); err != nil {
		t.Fatalf("next transaction on the same session: %v", err)
	}
}

// TestHugeCommandLineRefused: a command line far over any limit is cut
// off with 500 without being held in memory, and the connection closed.
func TestHugeCommandLineRefused(t *testing.T) {
	e := startEnv(t, "")
	r := e.raw(smtpd.MX)
	r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	go r.c.Write([]byte("NOOP " + strings.Repeat("x", 4<<20) + "\r\n"))
	code, msg := r.reply()
	if code != 500 {
		t.Fatalf("4 MB command line: want 500, got %d %s", code, msg)
	}
}

// TestPostmasterWithoutDomain: RFC 5321 §4.5.1.
func TestPostmasterWithoutDomain(t *testing.T) {
	e := startEnv(t, "")
	r := e.raw(smtpd.MX)
	r.write("EHLO client.example.com\r\n")
	r.expect(250)
	r.write("MAIL FROM:<s@example.com>\r\n")
	r.expect(250)
	r.write("RCPT TO:<Postmaster>\r\n")
	r.expect(250)
	r.write("DATA\r\n")
	r.expect(354)
	r.write(testMessage("pm") + ".\r\n")
	r.expect(250)
	e.waitMail("example.test", "postmaster", 1, 10*time.Second)
}

// TestDotCRRefused: "<CR><LF>.<CR>X" is a bare CR; upstream go-smtp's
// reader would drop the dot and the CR (ours keeps the CR), we refuse the
// message with 554.
func TestDotCRRefused(t *testing.T) {
	e := startEnv(t, "")
	r := e.raw(smtpd.MX)
	r.write("EHLO client.example.com\r\n")
	r.expect(250)
	r.write("MAIL FROM:<s@example.com>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n")
	r.expect(250)
	r.expect(250)
	r.expect(354)
	r.write("Subject: smuggle\r\n\r\nhello\r\n.\rX\r\nmore\r\n.\r\n")
	r.expect(554)
	// The session goes on and takes a clean message.
	r.write("MAIL FROM:<s@example.com>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n")
	r.expect(250)
	r.expect(250)
	r.expect(354)
	r.write(testMessage("clean") + ".\r\n")
	r.expect(250)
	got := e.waitMail("example.test", "postmaster", 1, 10*time.Second)
	if len(got) != 1 || strings.Contains(got[0], "smuggle") {
		t.Fatalf("mailbox: %q", got)
	}
}

// smugglingPayloads are the bare CR / bare LF forms of SMTP smuggling (the
// message data before the final ".\r\n"): each would end the message early
// at some lenient server (or lose bytes) and start a forged second one.
var smugglingPayloads = map[string]string{
	"LF.CRLF":      "Subject: a\r\n\r\nhi\n.\r\nMAIL FROM:<ceo@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nforged\r\n",
	"CRLF.LF":      "Subject: a\r\n\r\nhi\r\n.\nMAIL FROM:<x@example.test>\r\n",
	"LF.LF":        "Subject: a\r\n\r\nhi\n.\nMAIL FROM:<x@example.test>\r\n",
	"bare CR":      "Subject: a\r\n\r\nhi\r.\rmore\r\n",
	"bare LF":      "Subject: a\nX: b\r\n\r\nbody\r\n",
	"CR.CRLF":      "Subject: a\r\n\r\nhi\r.\r\nX\r\n",
	"CRLF.CR X":    "Subject: a\r\n\r\nhello\r\n.\rX\r\nMAIL FROM:<ceo@example.test>\r\n",
	"CRLF.CR CRLF": "Subject: a\r\n\r\nhello\r\n.\r\r\nmore\r\n",
	"CRLF.CR.":     "Subject: a\r\n\r\nhello\r\n.\r.\r\nmore\r\n",
	"CR CRLF":      "Subject: a\r\n\r\nhello\r\r\nmore\r\n",
}

// rawTLS opens a raw session inside TLS: STARTTLS on MX and submission,
// implicit TLS on submissions; EHLO said (again) inside TLS.
func (e *testEnv) rawTLS(k smtpd.Kind) *rawConn {
	e.t.Helper()
	var r *rawConn
	if k == smtpd.Submissions {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.addr(k), e.client)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { c.Close() })
		r = &rawConn{t: e.t, c: c, tp: textproto.NewReader(bufio.NewReader(c))}
		r.expect(220)
	} else {
		r = e.raw(k)
		r.write("EHLO client.example.com\r\n")
		r.expect(250)
		r.write("STARTTLS\r\n")
		r.expect(220)
		tc := tls.Client(r.c, e.client)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			e.t.Fatal(err)
		}
		tc.SetDeadline(time.Time{})
		r.c = tc
		r.tp = textproto.NewReader(bufio.NewReader(tc))
	}
	r.write("EHLO client.example.com\r\n")
	r.expect(250)
	return r
}

// TestSmugglingRefusedOverTLS: every smuggling form gets the same
// permanent 554 5.5.2 inside TLS as on plaintext, on MX with STARTTLS and
// on submission with STARTTLS and with implicit TLS (after AUTH), over
// DATA and (one of them) over BDAT; nothing
// is queued, and the session stays in sync and takes a clean message
// (issue 20.5: the conn layer under TLS sees only ciphertext; the check
// is above go-smtp's DATA reader, which keeps the CR of ".<CR>X").
func TestSmugglingRefusedOverTLS(t *testing.T) {
	e := startEnv(t, "")
	for _, k := range []smtpd.Kind{smtpd.MX, smtpd.Submission, smtpd.Submissions} {
		r := e.rawTLS(k)
		from := "a@example.com"
		if k != smtpd.MX {
			plain := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00" + testPass))
			r.write("AUTH PLAIN " + plain + "\r\n")
			r.expect(235)
			from = testUser
		}
		for name, payload := range smugglingPayloads {
			r.write("MAIL FROM:<" + from + ">\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n")
			for _, want := range []int{250, 250, 354} {
				if code, msg := r.reply(); code != want {
					t.Fatalf("%v %s: want %d, got %d %s", k, name, want, code, msg)
				}
			}
			r.write(payload + ".\r\n")
			if code, msg := r.reply(); code != 554 || !strings.HasPrefix(msg, "5.5.2 ") || !strings.Contains(msg, "bare CR or LF") {
				t.Fatalf("%v %s: want 554 5.5.2 bare CR or LF, got %d %s", k, name, code, msg)
			}
			// In sync: the smuggled commands were data.
			r.write("NOOP\r\n")
			if code, msg := r.reply(); code != 250 {
				t.Fatalf("%v %s: NOOP after the refusal: %d %s", k, name, code, msg)
			}
		}
		// The same over BDAT (CHUNKING), where no dot ends the data.
		chunk := smugglingPayloads["LF.CRLF"] + ".\r\n"
		r.write("MAIL FROM:<" + from + ">\r\nRCPT TO:<postmaster@example.test>\r\n")
		r.expect(250)
		r.expect(250)
		r.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk), chunk))
		if code, msg := r.reply(); code != 554 || !strings.HasPrefix(msg, "5.5.2 ") {
			t.Fatalf("%v BDAT: want 554 5.5.2, got %d %s", k, code, msg)
		}
		r.write("MAIL FROM:<" + from + ">\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n")
		r.expect(250)
		r.expect(250)
		r.expect(354)
		r.write(testMessage(fmt.Sprintf("clean-%v", k)) + ".\r\n")
		r.expect(250)
	}
	got := e.waitMail("example.test", "postmaster", 3, 20*time.Second)
	for _, m := range got {
		if !strings.Contains(m, "Subject: test clean-") {
			t.Fatalf("delivered a refused message: %q", m)
		}
	}
	if n := e.mailCount("example.test", "postmaster"); n != 3 {
		t.Fatalf("postmaster has %d messages, want the 3 clean ones", n)
	}
	if n := e.mailCount("example.test", "bob"); n != 0 {
		t.Fatalf("bob has %d messages: a smuggled one went through", n)
	}
}

// TestFailedSTARTTLSCloses: after a failed handshake the server hangs up
// instead of going on in plaintext (RFC 3207 §4.1).
func TestFailedSTARTTLSCloses(t *testing.T) {
	e := startEnv(t, "")
	r := e.raw(smtpd.MX)
	r.write("EHLO client.example.com\r\n")
	r.expect(250)
	r.write("STARTTLS\r\n")
	r.expect(220)
	// Not a ClientHello: the handshake fails.
	r.write("EHLO plaintext.example.com\r\nMAIL FROM:<a@example.com>\r\n")
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(r.c)
	if err != nil {
		t.Fatalf("want the connection closed, got %v after %q", err, rest)
	}
	// At most a TLS alert record; never a plaintext SMTP reply.
	if bytes.Contains(rest, []byte("250")) || bytes.Contains(rest, []byte("550")) {
		t.Fatalf("plaintext reply after a failed handshake: %q", rest)
	}
}

// TestCommandDeadlineNotExtendedByTrickle: one byte every 200 ms does not
// keep a command alive past command_timeout.
func TestCommandDeadlineNotExtendedByTrickle(t *testing.T) {
	e := startEnvConfig(t, setKeys(map[string]string{"command_timeout": `"2s"`}))
	r := e.raw(smtpd.MX)
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, b := range []byte("NOOP and a very long trickle of bytes that never ends") {
			r.c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := r.c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	// go-smtp runs what arrived of the line before it sees the timeout
	// (bufio hands out a partial line first); then 421.
	code, msg := r.reply()
	for code != 421 && time.Since(start) < 15*time.Second {
		code, msg = r.reply()
	}
	took := time.Since(start)
	if code != 421 {
		t.Fatalf("want 421, got %d %s", code, msg)
	}
	// 2 s deadline; the margin is for a loaded 2-core machine.
	if took > 8*time.Second {
		t.Fatalf("trickling client kept for %s on a 2s command_timeout", took)
	}
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection still open after 421")
	}
	r.c.Close()
	<-done
}

// TestDataDeadlineWholePhase: lines trickling in do not stretch the DATA
// phase past data_timeout.
func TestDataDeadlineWholePhase(t *testing.T) {
	e := startEnvConfig(t, setKeys(map[string]string{"data_timeout": `"2s"`}))
	r := e.raw(smtpd.MX)
	r.write("EHLO client.example.com\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n")
	r.expect(250)
	r.expect(250)
	r.expect(250)
	r.expect(354)
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			r.c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := fmt.Fprintf(r.c, "line %d\r\n", i); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	code, msg := r.reply()
	if code != 451 || !strings.Contains(msg, "4.4.2") {
		t.Fatalf("want 451 4.4.2, got %d %s", code, msg)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("DATA phase lasted %s on a 2s data_timeout", took)
	}
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, r.c) // the 421 and the close
	r.c.Close()
	<-done
	if n := e.mailCount("example.test", "postmaster"); n != 0 {
		t.Fatalf("%d messages delivered", n)
	}
}

// TestReservedSessions: idle strangers fill only max_sessions minus the
// reserve; client_networks and addresses that authenticated recently
// still get in.
func TestReservedSessions(t *testing.T) {
	e := startEnvConfig(t, setKeys(map[string]string{
		"max_sessions": "4", "reserved_sessions": "2", "max_sessions_per_ip": "10",
		"client_networks": `["127.0.0.2/32"]`,
	}))
	// 127.0.0.4 logs in once on submission, then quits.
	e.loginFrom(smtpd.Submission, "127.0.0.4", testPass)

	for i := 0; i < 2; i++ {
		if _, code := e.dialFrom(smtpd.MX, "127.0.0.1"); code != 220 {
			t.Fatalf("stranger %d: %d", i, code)
		}
	}
	if _, code := e.dialFrom(smtpd.MX, "127.0.0.3"); code != 421 {
		t.Fatalf("stranger over the unreserved sessions: want 421, got %d", code)
	}
	if _, code := e.dialFrom(smtpd.MX, "127.0.0.2"); code != 220 {
		t.Fatalf("client network: want 220, got %d", code)
	}
	if _, code := e.dialFrom(smtpd.MX, "127.0.0.4"); code != 220 {
		t.Fatalf("recently authenticated address: want 220, got %d", code)
	}
	if _, code := e.dialFrom(smtpd.MX, "127.0.0.2"); code != 421 {
		t.Fatalf("over max_sessions: want 421, got %d", code)
	}
}

// TestConnectionRateLimit: the fourth connection in a minute from one
// address gets 421; another address is not affected.
func TestConnectionRateLimit(t *testing.T) {
	e := startEnvConfig(t, setKeys(map[string]string{"max_connection_rate_per_ip": "3"}))
	for i := 0; i < 3; i++ {
		r, code := e.dialFrom(smtpd.MX, "127.0.0.5")
		if code != 220 {
			t.Fatalf("connection %d: %d", i, code)
		}
		r.c.Close()
	}
	if _, code := e.dialFrom(smtpd.MX, "127.0.0.5"); code != 421 {
		t.Fatalf("fourth connection in a minute: want 421, got %d", code)
	}
	if _, code := e.dialFrom(smtpd.MX, "127.0.0.6"); code != 220 {
		t.Fatalf("other address: want 220, got %d", code)
	}
}

// loginFrom does STARTTLS and AUTH PLAIN as testUser from src and returns
// the AUTH error.
func (e *testEnv) loginFrom(k smtpd.Kind, src, pass string) error {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	var c *smtp.Client
	if k == smtpd.Submissions {
		conn, err := tls.DialWithDialer(&d, "tcp", e.addr(k), e.client)
		if err != nil {
			e.t.Fatal(err)
		}
		c = smtp.NewClient(conn)
	} else {
		conn, err := d.Dial("tcp", e.addr(k))
		if err != nil {
			e.t.Fatal(err)
		}
		c, err = smtp.NewClientStartTLS(conn, e.client)
		if err != nil {
			e.t.Fatal(err)
		}
	}
	defer c.Close()
	err := c.Auth(sasl.NewPlainClient("", testUser, pass))
	c.Quit()
	return err
}

// TestAuthThrottling: an address over max_failures_per_ip is refused at
// connect on the submission listeners; an account under attack refuses
// (421, no check, hang up) the addresses that failed for it but not the
// real user on another address.
func TestAuthThrottling(t *testing.T) {
	e := startEnvConfig(t, func(s string) string {
		return strings.Replace(s, "[auth]\n", "[auth]\nmax_failures_per_ip = 3\nmax_failures_per_account = 5\n", 1)
	})
	for i := 0; i < 3; i++ {
		if err := e.loginFrom(smtpd.Submissions, "127.0.0.7", "wrong"); codeOf(err) != 535 {
			t.Fatalf("failure %d: want 535, got %v", i, err)
		}
	}
	// Blocked: refused at connect on the submission listeners.
	if _, code := e.dialFrom(smtpd.Submission, "127.0.0.7"); code != 421 {
		t.Fatalf("blocked address: want 421 at connect, got %d", code)
	}
	// The MX listener (no AUTH there) still takes its mail.
	if _, code := e.dialFrom(smtpd.MX, "127.0.0.7"); code != 220 {
		t.Fatalf("blocked address on MX: want 220, got %d", code)
	}
	// Another address fails twice: the account is under attack (5
	// failures).
	for i := 0; i < 2; i++ {
		if err := e.loginFrom(smtpd.Submission, "127.0.0.8", "wrong"); codeOf(err) != 535 {
			t.Fatalf("127.0.0.8 failure %d: want 535, got %v", i, err)
		}
	}
	if err := e.loginFrom(smtpd.Submission, "127.0.0.8", testPass); codeOf(err) != 421 {
		t.Fatalf("address that failed for an attacked account: want 421, got %v", err)
	}
	start := time.Now()
	if err := e.loginFrom(smtpd.Submission, "127.0.0.10", testPass); err != nil {
		t.Fatalf("real user from a clean address: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("clean login took %s", took)
	}
}

// TestLowSpaceRefusedAtMAIL: below queue.min_free_space, MAIL FROM gets
// 452 4.3.1 before any data is sent.
func TestLowSpaceRefusedAtMAIL(t *testing.T) {
	var free uint64 = 10 << 20
	e := startEnvOpts(t, func(s string) string {
		return strings.Replace(s, "[queue]\n", "[queue]\nmin_free_space = \"50MiB\"\n", 1)
	}, func(o *daemon.Options) {
		o.FreeSpace = func() (uint64, error) { return free, nil }
	})
	c := e.dial(smtpd.MX)
	err := c.Mail("s@example.com", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("MAIL FROM with 10 MiB free of 50 MiB: want 452 4.3.1, got %v", err)
	}
	free = 1 << 30
	if err := send(c, "s@example.com", []string{"postmaster@example.test"}, testMessage("space")); err != nil {
		t.Fatalf("with space again: %v", err)
	}
}

// TestMaildirTmpCleanedAtStart: files older than 36 hours in a Maildir's
// tmp/ are removed when the daemon starts; younger ones stay.
func TestMaildirTmpCleanedAtStart(t *testing.T) {
	var old, young string
	e := startEnvConfig(t, func(s string) string {
		i := strings.Index(s, "maildir_root = ")
		root := strings.Trim(strings.SplitN(s[i+len("maildir_root = "):], "\n", 2)[0], `"`)
		tmp := filepath.Join(root, "example.test", "bob", "tmp")
		for _, sub := range []string{"tmp", "new", "cur"} {
			if err := os.MkdirAll(filepath.Join(root, "example.test", "bob", sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		old, young = filepath.Join(tmp, "1.killed.host"), filepath.Join(tmp, "2.writing.host")
		for _, p := range []string{old, young} {
			if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		past := time.Now().Add(-37 * time.Hour)
		if err := os.Chtimes(old, past, past); err != nil {
			t.Fatal(err)
		}
		return s
	})
	_ = e
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(old); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there", old)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(young); err != nil {
		t.Fatalf("young tmp file: %v", err)
	}
}
