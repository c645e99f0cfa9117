package daemon_test

import (
	"bufio"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
)

// rejectingLMTP is a real LMTP server that refuses one recipient for good
// and accepts the others.
type rejectingLMTP struct{ reject string }

func (b *rejectingLMTP) NewSession(*smtp.Conn) (smtp.Session, error) { return &rejSession{b: b}, nil }

type rejSession struct {
	b     *rejectingLMTP
	rcpts []string
}

func (s *rejSession) Reset()                               {}
func (s *rejSession) Logout() error                        { return nil }
func (s *rejSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *rejSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *rejSession) Data(r io.Reader) error { io.Copy(io.Discard, r); return nil }
func (s *rejSession) LMTPData(r io.Reader, st smtp.StatusCollector) error {
	io.Copy(io.Discard, r)
	for _, rc := range s.rcpts {
		if rc == s.b.reject {
			st.SetStatus(rc, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 2, 1}, Message: "mailbox disabled"})
		} else {
			st.SetStatus(rc, nil)
		}
	}
	return nil
}

func startRejectingLMTP(t *testing.T, reject string) string {
	srv := smtp.NewServer(&rejectingLMTP{reject: reject})
	srv.LMTP = true
	srv.Domain = "lmtp.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestBounceIsRFC3464 sends from a local sender to an LMTP mailbox that
// refuses the message: the sender gets a multipart/report DSN, which is
// parsed back here part by part.
func TestBounceIsRFC3464(t *testing.T) {
	lmtpAddr := startRejectingLMTP(t, "gone@lmtp.test")
	e := startEnv(t, fmt.Sprintf(`
[[domain]]
name = "lmtp.test"
mailboxes = ["gone", "here"]
lmtp = "tcp:%s"
`, lmtpAddr))
	c := e.dial(smtpd.MX)
	if err := c.Mail("bob@example.test", &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: "env-42"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("gone@lmtp.test", &smtp.RcptOptions{OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "Gone@lmtp.test"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("here@lmtp.test", nil); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	io.WriteString(w, testMessage("bounce-me")+"secret body line\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	raw := e.waitMail("example.test", "bob", 1, 15*time.Second)[0]
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Header
	if rp := h.Get("Return-Path"); rp != "<>" {
		t.Errorf("Return-Path %q: a DSN has the null sender", rp)
	}
	if h.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("Auto-Submitted = %q", h.Get("Auto-Submitted"))
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q", h.Get("Content-Type"))
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []string
	var bodies []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		parts = append(parts, strings.Split(p.Header.Get("Content-Type"), ";")[0])
		bodies = append(bodies, string(b))
	}
	if len(parts) != 3 || parts[0] != "text/plain" || parts[1] != "message/delivery-status" || parts[2] != "text/rfc822-headers" {
		t.Fatalf("parts %v", parts)
	}
	human := bodies[0]
	if !strings.Contains(human, "gone@lmtp.test") || strings.Contains(human, "here@lmtp.test") {
		t.Errorf("human-readable part should name only the failed recipient:\n%s", human)
	}
	// message/delivery-status: per-message fields, then one block per recipient.
	tp := textproto.NewReader(bufio.NewReader(strings.NewReader(strings.ReplaceAll(bodies[1], "\r\n", "\n") + "\n")))
	perMsg, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatal(err)
	}
	perRcpt, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatal(err)
	}
	if perMsg.Get("Reporting-Mta") != "dns; mx.example.test" || perMsg.Get("Original-Envelope-Id") != "env-42" || perMsg.Get("Arrival-Date") == "" {
		t.Errorf("per-message fields: %v", perMsg)
	}
	for k, want := range map[string]string{
		"Final-Recipient":    "rfc822; gone@lmtp.test",
		"Original-Recipient": "rfc822;Gone@lmtp.test",
		"Action":             "failed",
		"Status":             "5.2.1",
	} {
		if got := perRcpt.Get(k); !strings.EqualFold(strings.ReplaceAll(got, " ", ""), strings.ReplaceAll(want, " ", "")) {
			t.Errorf("%s = %q, want %q", k, perRcpt.Get(k), want)
		}
	}
	if !strings.Contains(perRcpt.Get("Diagnostic-Code"), "550") {
		t.Errorf("Diagnostic-Code %q", perRcpt.Get("Diagnostic-Code"))
	}
	// RET=HDRS: headers only.
	if !strings.Contains(bodies[2], "Message-ID: <bounce-me@example.com>") || strings.Contains(bodies[2], "secret body line") {
		t.Errorf("returned content wrong for RET=HDRS:\n%s", bodies[2])
	}
}

func TestNotifySuccessGetsDeliveredDSN(t *testing.T) {
	e := startEnv(t, "")
	c := e.dial(smtpd.MX)
	if err := c.Mail("bob@example.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("postmaster@example.test", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess}}); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	io.WriteString(w, testMessage("notify-success"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	e.waitMail("example.test", "postmaster", 1, 10*time.Second)
	dsn := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]
	if !strings.Contains(dsn, "Action: delivered") || !strings.Contains(dsn, "Final-Recipient: rfc822; postmaster@example.test") {
		t.Fatalf("success DSN:\n%s", dsn)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	e := startEnv(t, "")
	c := e.dial(smtpd.MX)
	if err := send(c, "s@example.com", []string{"postmaster@example.test"}, testMessage("metrics")); err != nil {
		t.Fatal(err)
	}
	c.Mail("s@example.com", nil)
	if err := c.Rcpt("nobody@example.test", nil); codeOf(err) != 550 {
		t.Fatalf("want 550, got %v", err)
	}
	e.waitMail("example.test", "postmaster", 1, 10*time.Second)
	resp, err := http.Get("http://" + e.d.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`posthorn_messages_accepted_total{listener="mx"}`, `posthorn_messages_rejected_total{code="550",listener="mx",stage="rcpt"}`,
		`posthorn_deliveries_total{result="delivered",transport="maildir"}`, "posthorn_accept_latency_seconds_bucket", "posthorn_queue_messages",
		`posthorn_smtp_sessions_total{listener="mx"}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestBounceOfABounceGoesToPostmaster: a message with the null sender that
// fails is never bounced to "<>"; the postmaster gets the report, once.
func TestBounceOfABounceGoesToPostmaster(t *testing.T) {
	lmtpAddr := startRejectingLMTP(t, "gone@lmtp.test")
	e := startEnv(t, fmt.Sprintf(`
[[domain]]
name = "lmtp.test"
mailboxes = ["gone"]
lmtp = "tcp:%s"
`, lmtpAddr))
	c := e.dial(smtpd.MX)
	if err := send(c, "", []string{"gone@lmtp.test"}, testMessage("double")); err != nil {
		t.Fatal(err)
	}
	m := e.waitMail("example.test", "postmaster", 1, 10*time.Second)[0]
	if !strings.Contains(m, "Action: failed") || !strings.Contains(m, "gone@lmtp.test") || !strings.Contains(m, "Return-Path: <>") {
		t.Fatalf("postmaster's report:\n%s", m)
	}
	// Once the queue is empty nothing more can arrive.
	waitQueueEmpty(t, e)
	if n := e.mailCount("example.test", "postmaster"); n != 1 {
		t.Fatalf("postmaster got %d reports, want 1", n)
	}
}
