package smtp_test

// Posthorn's reply coalescing (third_party/go-smtp/POSTHORN.md): replies
// to pipelined commands go out in one write; a client that waits for
// every reply still gets each one; STARTTLS, QUIT and errors that close
// the connection flush first.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// writeLog records every Write the server makes on its connections.
type writeLog struct {
	mu     sync.Mutex
	writes []string
}

func (w *writeLog) add(p []byte) {
	w.mu.Lock()
	w.writes = append(w.writes, string(p))
	w.mu.Unlock()
}

// since returns the writes after the first n.
func (w *writeLog) since(n int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes[n:]...)
}

func (w *writeLog) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.writes)
}

type loggedListener struct {
	net.Listener
	log *writeLog
}

func (l loggedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return loggedConn{c, l.log}, nil
}

type loggedConn struct {
	net.Conn
	log *writeLog
}

func (c loggedConn) Write(p []byte) (int, error) {
	c.log.add(p)
	return c.Conn.Write(p)
}

// replyServer starts a server whose writes are logged and dials it. The
// client connection has a deadline, so a server that fails to send a
// reply fails the test instead of hanging it.
func replyServer(t *testing.T, fn ...serverConfigureFunc) (*backend, *writeLog, net.Conn, *bufio.Reader) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := &writeLog{}
	be := new(backend)
	s := smtp.NewServer(be)
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	for _, f := range fn {
		f(s)
	}
	go s.Serve(loggedListener{l, log})
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return be, log, c, bufio.NewReader(c)
}

// readWholeReply reads one (possibly multi-line) reply.
func readWholeReply(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var all string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a reply after %q: %v", all, err)
		}
		all += line
		if len(line) < 4 || line[3] != '-' {
			return all
		}
	}
}

func TestRepliesPipelinedOneWrite(t *testing.T) {
	be, log, c, r := replyServer(t)
	readWholeReply(t, r)
	io.WriteString(c, "EHLO localhost\r\n")
	readWholeReply(t, r)

	// The group the client pipelines (RFC 2920 §3.1): one write, and
	// all replies come in one write and one read.
	n := log.len()
	io.WriteString(c, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")
	want := "250 2.0.0 Roger, accepting mail from <a@example.org>\r\n" +
		"250 2.0.0 I'll make sure <b@example.org> gets this\r\n" +
		"250 2.0.0 I'll make sure <c@example.org> gets this\r\n" +
		"354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n"
	buf := make([]byte, 4096)
	k, err := r.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:k]); got != want {
		t.Fatalf("one read: got %q, want %q", got, want)
	}
	if got := log.since(n); len(got) != 1 || got[0] != want {
		t.Fatalf("writes: got %q, want one: %q", got, want)
	}

	// The end of the message and QUIT in one write: both replies in one
	// write, then the server hangs up.
	n = log.len()
	io.WriteString(c, "Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want = "250 2.0.0 OK: queued\r\n221 2.0.0 Bye\r\n"
	if string(rest) != want {
		t.Fatalf("after the message: got %q, want %q", rest, want)
	}
	if got := log.since(n); len(got) != 1 || got[0] != want {
		t.Fatalf("writes: got %q, want one: %q", got, want)
	}
	if len(be.anonmsgs) != 1 || string(be.anonmsgs[0].Data) != "Subject: x\r\n\r\nhi\r\n" {
		t.Fatalf("messages: %+v", be.anonmsgs)
	}
}

// A client that waits for every reply gets each at once, also when it
// has sent part of the next line already (the server must not wait for
// the rest of that line before sending the reply it owes).
func TestRepliesLockstep(t *testing.T) {
	be, _, c, r := replyServer(t)
	if got := readWholeReply(t, r); !strings.HasPrefix(got, "220 ") {
		t.Fatal(got)
	}
	for _, step := range []struct{ send, want string }{
		{"HELO localhost\r\n", "250 2.0.0 Hello localhost\r\n"},
		{"MAIL FROM:<a@example.org>\r\n", "250 2.0.0 Roger, accepting mail from <a@example.org>\r\n"},
		{"RCPT TO:<b@example.org>\r\nRC", "250 2.0.0 I'll make sure <b@example.org> gets this\r\n"},
		{"PT TO:<c@example.org>\r\n", "250 2.0.0 I'll make sure <c@example.org> gets this\r\n"},
		{"DATA\r\n", "354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n"},
		{"hi\r\n.\r\nNO", "250 2.0.0 OK: queued\r\n"},
		{"OP\r\n", "250 2.0.0 I have successfully done nothing\r\n"},
		{"QUIT\r\n", "221 2.0.0 Bye\r\n"},
	} {
		io.WriteString(c, step.send)
		if got := readWholeReply(t, r); got != step.want {
			t.Fatalf("after %q: got %q, want %q", step.send, got, step.want)
		}
	}
	if len(be.anonmsgs) != 1 {
		t.Fatalf("%d messages", len(be.anonmsgs))
	}

	// And go-smtp's own client, which waits for each reply.
	_, _, c2, _ := replyServer(t)
	cl := smtp.NewClient(c2)
	if err := cl.SendMail("a@example.org", []string{"b@example.org"}, strings.NewReader("Subject: y\r\n\r\nyo\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := cl.Quit(); err != nil {
		t.Fatal(err)
	}
}

// The same session gives the same bytes whether the client sends it all
// at once or a byte at a time, waiting for each reply.
func TestRepliesSlowClientUnchanged(t *testing.T) {
	cmds := []string{
		"EHLO localhost\r\n",
		"NOOP\r\n",
		"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n",
		"RCPT TO:<b@example.org>\r\n",
		"RCPT TO:<>\r\n",
		"BOGUS\r\n",
		"DATA\r\n",
		"Subject: z\r\n\r\n..dot\r\n.\r\n",
		"MAIL FROM:<a@example.org>\r\n",
		"RSET\r\n",
		"VRFY x\r\n",
		"QUIT\r\n",
	}

	_, _, c, r := replyServer(t)
	io.WriteString(c, strings.Join(cmds, ""))
	fast, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}

	_, log, c, r := replyServer(t)
	slow := readWholeReply(t, r)
	for _, cmd := range cmds {
		for i := 0; i < len(cmd); i++ {
			c.Write([]byte{cmd[i]})
		}
		slow += readWholeReply(t, r)
	}
	if rest, err := io.ReadAll(r); err != nil || len(rest) > 0 {
		t.Fatalf("after QUIT: %q, %v", rest, err)
	}
	if slow != string(fast) {
		t.Fatalf("slow client got\n%q\npipelining client got\n%q", slow, fast)
	}
	if n := strings.Count(slow, "\r\n"); n < len(cmds)+1 {
		t.Fatalf("only %d reply lines: %q", n, slow)
	}
	// One write per reply: a reply never waits for input.
	if got, want := log.len(), len(cmds)+1; got != want {
		t.Fatalf("%d writes for %d replies: %q", got, want, log.since(0))
	}
}

// Replies before a close are sent: QUIT and too many errors.
func TestRepliesFlushedBeforeClose(t *testing.T) {
	_, _, c, r := replyServer(t)
	io.WriteString(c, "NOOP\r\nQUIT\r\nNOOP\r\n")
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want := "220 localhost ESMTP Service Ready\r\n250 2.0.0 I have successfully done nothing\r\n221 2.0.0 Bye\r\n"
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}

	_, _, c, r = replyServer(t)
	io.WriteString(c, strings.Repeat("BOGUS\r\n", 4)+"NOOP\r\n")
	got, err = io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(got), "500 5.5.1 Too many errors. Quiting now\r\n") ||
		strings.Count(string(got), "501 5.5.2 ") != 4 {
		t.Fatalf("got %q", got)
	}
}

// STARTTLS: the 220 is a write of its own, sent before the handshake,
// and the replies before it go out first; what the client pipelined
// after STARTTLS is not executed.
func TestRepliesSTARTTLS(t *testing.T) {
	cert := selfSigned(t)
	be, log, c, r := replyServer(t, func(s *smtp.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	readWholeReply(t, r)
	io.WriteString(c, "EHLO localhost\r\n")
	readWholeReply(t, r)
	n := log.len()
	io.WriteString(c, "NOOP\r\nSTARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
	if got := readWholeReply(t, r); got != "250 2.0.0 I have successfully done nothing\r\n" {
		t.Fatal(got)
	}
	if got := readWholeReply(t, r); got != "220 2.0.0 Ready to start TLS\r\n" {
		t.Fatal(got)
	}
	if r.Buffered() != 0 {
		t.Fatalf("%d bytes after the 220", r.Buffered())
	}
	if got := log.since(n); len(got) != 2 || !strings.HasPrefix(got[0], "250 ") || !strings.HasPrefix(got[1], "220 ") {
		t.Fatalf("writes: %q", got)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	tc := tls.Client(c, &tls.Config{ServerName: "localhost", RootCAs: pool})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tr := bufio.NewReader(tc)
	io.WriteString(tc, "EHLO localhost\r\nMAIL FROM:<a@example.org>\r\n")
	if got := readWholeReply(t, tr); !strings.HasPrefix(got, "250-Hello localhost\r\n") || strings.Contains(got, "STARTTLS") {
		t.Fatal(got)
	}
	if got := readWholeReply(t, tr); got != "250 2.0.0 Roger, accepting mail from <a@example.org>\r\n" {
		t.Fatal(got)
	}
	io.WriteString(tc, "QUIT\r\n")
	if got := readWholeReply(t, tr); got != "221 2.0.0 Bye\r\n" {
		t.Fatal(got)
	}
	if len(be.anonmsgs) != 0 {
		t.Fatal(be.anonmsgs)
	}
}

// An LMTP server sends the per-recipient replies while the session may
// still be reading: pipelined LHLO, MAIL, RCPT, DATA and message.
func TestRepliesLMTPPipelined(t *testing.T) {
	be, _, c, r := replyServer(t, func(s *smtp.Server) {
		s.LMTP = true
		be := s.Backend.(*backend)
		be.implementLMTPData = true
		be.lmtpStatus = []struct {
			addr string
			err  error
		}{
			{"b@example.org", nil},
			{"c@example.org", &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "full"}},
		}
	})
	io.WriteString(c, "LHLO localhost\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"+
		"RCPT TO:<c@example.org>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n")
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\r\n250 2.0.0 <b@example.org> OK: queued\r\n",
		"\r\n552 5.2.2 <c@example.org> full\r\n221 2.0.0 Bye\r\n",
	} {
		if !bytes.Contains(got, []byte(want)) {
			t.Fatalf("got %q, want %q in it", got, want)
		}
	}
	if len(be.anonmsgs) != 1 {
		t.Fatalf("%d messages", len(be.anonmsgs))
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
