package remotemta

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/testbed/wait"
)

const testMsg = "From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nHello.\r\n"

func start(t *testing.T, cfg Config) *MTA {
	t.Helper()
	m, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func send(c *smtp.Client, from string, to []string, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	return w.Close()
}

func dial(t *testing.T, m *MTA) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.example.org"); err != nil {
		t.Fatal(err)
	}
	return c
}

// dialTLS connects and runs STARTTLS with cfg.
func dialTLS(t *testing.T, m *MTA, cfg *tls.Config) (*smtp.Client, error) {
	t.Helper()
	conn, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	// The handshake happens with the first command after STARTTLS.
	if err := c.Hello("client.example.org"); err != nil {
		return nil, err
	}
	return c, nil
}

func code(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestNoSTARTTLS(t *testing.T) {
	m := start(t, Config{})
	c := dial(t, m)
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered")
	}
	for _, ext := range []string{"PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s not offered", ext)
		}
	}
	for _, ext := range []string{"CHUNKING", "DSN", "SMTPUTF8", "REQUIRETLS", "AUTH"} {
		if ok, _ := c.Extension(ext); ok {
			t.Errorf("%s offered", ext)
		}
	}
	if _, err := dialTLS(t, m, &tls.Config{InsecureSkipVerify: true}); err == nil {
		t.Fatal("StartTLS worked")
	}
	if err := send(c, "a@example.org", []string{"b@example.net", "c@example.net"}, testMsg); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	msgs, err := m.WaitMessages(1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	g := msgs[0]
	if g.From != "a@example.org" || strings.Join(g.To(), ",") != "b@example.net,c@example.net" ||
		string(g.Data) != testMsg || g.TLS || g.Helo != "client.example.org" || g.Body != "8BITMIME" {
		t.Fatalf("message: %+v", g)
	}
	conns := m.Connections()
	if len(conns) != 2 || conns[0].Messages != 1 || conns[0].TLS || conns[1].Messages != 0 {
		t.Fatalf("connections: %+v", conns)
	}
}

func tlsTest(t *testing.T, mode Mode, verifying func(m *MTA) *tls.Config, wantErr string) {
	m := start(t, Config{Mode: mode, Hostname: "mx.example.org"})
	c := dial(t, m)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	c, err := dialTLS(t, m, verifying(m))
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("StartTLS: got %v, want %q", err, wantErr)
		}
		c, err = dialTLS(t, m, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.example.org"})
		if err != nil {
			t.Fatalf("insecure StartTLS: %v", err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered under TLS")
	}
	if err := send(c, "a@example.org", []string{"b@example.org"}, testMsg); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs, err := m.WaitMessages(1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if g := msgs[0]; !g.TLS || g.TLSVersion != tls.VersionTLS13 || g.ServerName != "mx.example.org" || g.TLSCipher == 0 {
		t.Fatalf("message: %+v", g)
	}
}

func TestSTARTTLSValid(t *testing.T) {
	tlsTest(t, STARTTLSValid, func(m *MTA) *tls.Config {
		return &tls.Config{RootCAs: m.CA().Pool(), ServerName: "mx.example.org"}
	}, "")
}

func TestSTARTTLSSelfSigned(t *testing.T) {
	tlsTest(t, STARTTLSSelfSigned, func(m *MTA) *tls.Config {
		return &tls.Config{ServerName: "mx.example.org", RootCAs: x509.NewCertPool()}
	}, "certificate signed by unknown authority")
}

func TestSTARTTLSWrongName(t *testing.T) {
	tlsTest(t, STARTTLSWrongName, func(m *MTA) *tls.Config {
		return &tls.Config{RootCAs: m.CA().Pool(), ServerName: "mx.example.org"}
	}, "not mx.example.org")
}

func TestSTARTTLSBroken(t *testing.T) {
	for _, b := range []Break{BreakClose, BreakGarbage, BreakAlert} {
		t.Run(fmt.Sprint(b), func(t *testing.T) {
			m := start(t, Config{Mode: STARTTLSBroken, Break: b})
			c := dial(t, m)
			if ok, _ := c.Extension("STARTTLS"); !ok {
				t.Fatal("STARTTLS not offered")
			}
			c.Close()
			if _, err := dialTLS(t, m, &tls.Config{InsecureSkipVerify: true}); err == nil {
				t.Fatal("handshake worked")
			}
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				if cs := m.Connections(); len(cs) == 2 && !cs[1].End.IsZero() {
					if b == BreakAlert && cs[1].TLSError == "" {
						t.Fatalf("no TLS error recorded: %+v", cs[1])
					}
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Fatal("connection not ended")
		})
	}
}

func TestImplicitTLS(t *testing.T) {
	m := start(t, Config{Mode: ImplicitTLS, Hostname: "smtp.example.org", TLSMaxVersion: tls.VersionTLS12})
	c, err := smtp.DialTLS(m.Addr(), &tls.Config{RootCAs: m.CA().Pool(), ServerName: "smtp.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered with implicit TLS")
	}
	if err := send(c, "a@example.org", []string{"b@example.org"}, testMsg); err != nil {
		t.Fatal(err)
	}
	msgs, _ := m.WaitMessages(1, time.Second)
	if len(msgs) != 1 || !msgs[0].TLS || msgs[0].TLSVersion != tls.VersionTLS12 {
		t.Fatalf("%+v", msgs)
	}
	// Plain text against the TLS port fails.
	r := rawDial(t, m)
	r.send("EHLO x.example\r\n")
	if line, err := r.r.ReadString('\n'); err == nil {
		t.Fatalf("plain text answered: %q", line)
	}
}

func TestScriptedReplies(t *testing.T) {
	m := start(t, Config{Replies: map[Stage]Reply{StageConnect: {Code: 554, Enhanced: "5.7.1", Text: "go away"}}})
	greet := func() error {
		c, err := smtp.Dial(m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.Hello("x.example")
	}
	if err := greet(); code(err) != 554 {
		t.Fatalf("greeting: %v", err)
	}
	m.SetReply(StageConnect, Reply{Code: 421, Text: "busy", Times: 1})
	if err := greet(); code(err) != 421 {
		t.Fatalf("greeting 421: %v", err)
	}
	// Times: 1 used up: back to normal.
	c := dial(t, m)

	m.SetReply(StageMail, Reply{Code: 451, Enhanced: "4.3.0", Text: "try later", Times: 1})
	err := c.Mail("a@example.org", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) || se.Message != "try later" {
		t.Fatalf("MAIL: %v", err)
	}
	m.SetRcptReply("Bad@example.net", Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"})
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bad@example.net", nil); code(err) != 550 {
		t.Fatalf("RCPT bad: %v", err)
	}
	if err := c.Rcpt("good@example.net", nil); err != nil {
		t.Fatal(err)
	}
	m.SetReply(StageData, Reply{Code: 452, Enhanced: "4.3.1", Text: "disk full", Times: 1})
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(testMsg))
	if err := w.Close(); code(err) != 452 {
		t.Fatalf("DATA: %v", err)
	}
	if err := send(c, "a@example.org", []string{"bad@example.net", "good@example.net"}, testMsg); code(err) != 550 {
		t.Fatalf("send: %v", err)
	}
	c.Reset()
	if err := send(c, "a@example.org", []string{"good@example.net"}, testMsg); err != nil {
		t.Fatal(err)
	}
	msgs := m.Messages()
	if len(msgs) != 1 || strings.Join(msgs[0].To(), ",") != "good@example.net" {
		t.Fatalf("%+v", msgs)
	}

	m.SetReply(StageHelo, Reply{Code: 550, Text: "no EHLO for you"})
	c2, err := smtp.Dial(m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Hello("x.example"); err == nil {
		t.Fatal("EHLO accepted")
	}
	m.ClearReply(StageHelo)

	m.SetReply(StageDataCmd, Reply{Code: 554, Enhanced: "5.7.1", Text: "no data"})
	c3 := dial(t, m)
	c3.Mail("a@example.org", nil)
	c3.Rcpt("good@example.net", nil)
	if _, err := c3.Data(); code(err) != 554 {
		t.Fatalf("DATA cmd: %v", err)
	}
}

func TestDelay(t *testing.T) {
	m := start(t, Config{Delays: map[Stage]time.Duration{StageData: 150 * time.Millisecond}})
	c := dial(t, m)
	t0 := time.Now()
	if err := send(c, "a@example.org", []string{"b@example.org"}, testMsg); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 150*time.Millisecond {
		t.Fatalf("too fast: %v", d)
	}
	m.SetDelay(StageData, 0)
	m.SetDelay(StageMail, time.Hour)
	go func() {
		// Close once MAIL has arrived and waits out its delay.
		wait.Until(10*time.Second, func() bool {
			for _, c := range m.Connections() {
				for _, l := range c.Log {
					if strings.HasPrefix(l, "C: MAIL FROM") {
						return true
					}
				}
			}
			return false
		})
		m.Close()
	}()
	if err := c.Mail("a@example.org", nil); err == nil {
		t.Fatal("MAIL answered despite delay")
	}
}

func TestExtensionsAndParams(t *testing.T) {
	m := start(t, Config{Mode: STARTTLSValid, Hostname: "mx.example.org", SizeLimit: 1000,
		SMTPUTF8: true, DSN: true, REQUIRETLS: true, CHUNKING: true})
	c := dial(t, m)
	if ok, v := c.Extension("SIZE"); !ok || v != "1000" {
		t.Fatalf("SIZE %q", v)
	}
	for _, ext := range []string{"SMTPUTF8", "DSN", "CHUNKING"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s not offered", ext)
		}
	}
	if ok, _ := c.Extension("REQUIRETLS"); ok {
		t.Fatal("REQUIRETLS offered before TLS")
	}
	c, err := dialTLS(t, m, &tls.Config{RootCAs: m.CA().Pool(), ServerName: "mx.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("REQUIRETLS"); !ok {
		t.Fatal("REQUIRETLS not offered under TLS")
	}
	if err := c.Mail("a@example.org", &smtp.MailOptions{Size: 5000}); code(err) != 552 {
		t.Fatalf("SIZE over limit: %v", err)
	}
	err = c.Mail("ä@example.org", &smtp.MailOptions{Size: 100, UTF8: true, RequireTLS: true,
		Return: smtp.DSNReturnHeaders, EnvelopeID: "env+1"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt("b@example.org", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed},
		OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "orig@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	w.Write([]byte(testMsg))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Too big without SIZE= announced.
	c.Mail("a@example.org", nil)
	c.Rcpt("b@example.org", nil)
	w, _ = c.Data()
	w.Write([]byte(testMsg + strings.Repeat("x", 2000) + "\r\n"))
	if err := w.Close(); code(err) != 552 {
		t.Fatalf("big: %v", err)
	}
	msgs := m.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	g := msgs[0]
	if g.From != "ä@example.org" || !g.SMTPUTF8 || !g.RequireTLS || g.Ret != "HDRS" || g.EnvID != "env+1" || g.Size != 100 {
		t.Fatalf("mail params: %+v", g)
	}
	r := g.Rcpts[0]
	if strings.Join(r.Notify, ",") != "FAILURE,DELAY" || r.ORcpt != "RFC822;orig@example.org" {
		t.Fatalf("rcpt params: %+v", r)
	}

	// Without the extensions, their parameters are refused.
	m2 := start(t, Config{No8BITMIME: true, NoSIZE: true, NoPIPELINING: true})
	raw := rawDial(t, m2)
	raw.expect("220")
	raw.cmd("EHLO x.example", "250")
	if strings.Contains(raw.last, "8BITMIME") || strings.Contains(raw.last, "SIZE") || strings.Contains(raw.last, "PIPELINING") {
		t.Fatalf("EHLO: %s", raw.last)
	}
	raw.cmd("MAIL FROM:<a@x.example> BODY=8BITMIME", "555")
	raw.cmd("MAIL FROM:<a@x.example> SIZE=10", "555")
	raw.cmd("MAIL FROM:<a@x.example> RET=FULL", "555")
	raw.cmd("MAIL FROM:<a@x.example> SMTPUTF8", "555")
	raw.cmd("MAIL FROM:<a@x.example> REQUIRETLS", "555")
	raw.cmd("MAIL FROM:<> BODY=7BIT", "250")
	raw.cmd("RCPT TO:<b@x.example> NOTIFY=NEVER", "555")
}

func TestAuth(t *testing.T) {
	m := start(t, Config{Mode: STARTTLSValid, Hostname: "smtp.example.org", AuthUser: "user", AuthPassword: "secret", AuthRequired: true})
	c := dial(t, m)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before TLS")
	}
	if err := c.Mail("a@example.org", nil); code(err) != 530 {
		t.Fatalf("MAIL without auth: %v", err)
	}
	c, err := dialTLS(t, m, &tls.Config{RootCAs: m.CA().Pool(), ServerName: "smtp.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if ok, v := c.Extension("AUTH"); !ok || v != "PLAIN" {
		t.Fatalf("AUTH %q", v)
	}
	if err := c.Auth(sasl.NewPlainClient("", "user", "wrong")); code(err) != 535 {
		t.Fatalf("bad password: %v", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "user", "secret")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@example.org", []string{"b@example.net"}, testMsg); err != nil {
		t.Fatal(err)
	}
	if msgs := m.Messages(); len(msgs) != 1 || msgs[0].AuthUser != "user" {
		t.Fatalf("%+v", msgs)
	}
	for _, l := range m.Connections()[0].Log {
		if strings.Contains(l, "AHVzZXIAc2VjcmV0") {
			t.Fatal("credentials in log")
		}
	}
}

func TestConnectionReuse(t *testing.T) {
	m := start(t, Config{MaxMessagesPerConn: 2})
	c := dial(t, m)
	for i := range 2 {
		if err := send(c, "a@example.org", []string{"b@example.org"}, fmt.Sprintf("Subject: %d\r\n\r\nx\r\n", i)); err != nil {
			t.Fatal(err)
		}
		if err := c.Reset(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Mail("a@example.org", nil); code(err) != 421 {
		t.Fatalf("third: %v", err)
	}
	msgs := m.Messages()
	if len(msgs) != 2 || msgs[0].ConnID != msgs[1].ConnID || msgs[1].Seq != 2 {
		t.Fatalf("%+v", msgs)
	}
	if cs := m.Connections(); len(cs) != 1 || cs[0].Messages != 2 {
		t.Fatalf("%+v", cs)
	}
}

// raw is a line-level client for protocol details go-smtp's client hides.
type raw struct {
	t    *testing.T
	c    net.Conn
	r    *bufio.Reader
	last string
}

func rawDial(t *testing.T, m *MTA) *raw {
	c, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return &raw{t: t, c: c, r: bufio.NewReader(c)}
}

func (r *raw) send(s string) {
	if _, err := r.c.Write([]byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) expect(prefix string) {
	r.t.Helper()
	var all []string
	for {
		line, err := r.r.ReadString('\n')
		if err != nil {
			r.t.Fatalf("reading reply (want %s): %v", prefix, err)
		}
		all = append(all, strings.TrimRight(line, "\r\n"))
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	r.last = strings.Join(all, "\n")
	if !strings.HasPrefix(r.last, prefix) {
		r.t.Fatalf("got %q, want %s", r.last, prefix)
	}
}

func (r *raw) cmd(line, prefix string) {
	r.t.Helper()
	r.send(line + "\r\n")
	r.expect(prefix)
}

func TestDataDetails(t *testing.T) {
	m := start(t, Config{CHUNKING: true})
	r := rawDial(t, m)
	r.expect("220")
	// Pipelined transaction.
	r.send("EHLO x.example\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n")
	r.expect("250")
	r.expect("250")
	r.expect("250")
	r.expect("354")
	// Dot-stuffing, a bare LF and a smuggling attempt stay inside the data.
	r.send("Subject: t\r\n\r\n..dot\r\nbare\nlf\n.\nnot end\r\n.\r\n")
	r.expect("250")
	r.cmd("MAIL FROM:<a@x.example>", "250")
	r.cmd("RCPT TO:<b@x.example>", "250")
	r.send("BDAT 10\r\n0123456789BDAT 5 LAST\r\nabcde")
	r.expect("250")
	r.expect("250 2.0.0 OK")
	r.cmd("QUIT", "221")
	msgs, _ := m.WaitMessages(2, time.Second)
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	if got := string(msgs[0].Data); got != "Subject: t\r\n\r\n.dot\r\nbare\nlf\n.\nnot end\r\n" {
		t.Fatalf("data %q", got)
	}
	if got := string(msgs[1].Data); got != "0123456789abcde" || !msgs[1].Chunked {
		t.Fatalf("bdat %q", got)
	}
}

func TestSTARTTLSInjectionDiscarded(t *testing.T) {
	m := start(t, Config{Mode: STARTTLSValid, Hostname: "mx.example.org"})
	r := rawDial(t, m)
	r.expect("220")
	r.cmd("EHLO x.example", "250")
	r.send("STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n")
	r.expect("220")
	tc := tls.Client(r.c, &tls.Config{RootCAs: m.CA().Pool(), ServerName: "mx.example.org"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r.c = tc
	r.r = bufio.NewReader(tc)
	// The injected MAIL was not acted upon: MAIL now needs a new EHLO.
	r.cmd("MAIL FROM:<a@x.example>", "503")
	r.cmd("EHLO x.example", "250")
	r.cmd("MAIL FROM:<a@x.example>", "250")
	log := strings.Join(m.Connections()[0].Log, "\n")
	if !strings.Contains(log, "discarded") {
		t.Fatalf("log:\n%s", log)
	}
}

func TestGreeting554OnlyQuit(t *testing.T) {
	m := start(t, Config{Replies: map[Stage]Reply{StageConnect: {Code: 554, Text: "no service"}}})
	r := rawDial(t, m)
	r.expect("554 no service")
	r.cmd("EHLO x.example", "503")
	r.cmd("QUIT", "221")
}
