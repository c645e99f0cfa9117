package dsn

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
	"time"

	gomail "github.com/emersion/go-message/mail"

	"github.com/posthorn/posthorn/queue"
)

const original = "From: Alice <alice@example.org>\n" +
	"To: bob@example.net\n" +
	"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n" +
	"Message-ID: <orig-1@example.org>\n" +
	"\n" +
	"Hello Bob,\n" +
	"this is the body.\n"

var (
	arrival = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	attempt = time.Date(2026, 3, 2, 11, 30, 0, 0, time.UTC)
	until   = time.Date(2026, 3, 6, 10, 0, 0, 0, time.UTC)
)

func envelope() *queue.Envelope {
	return &queue.Envelope{
		ID:       "Q42",
		From:     "alice@example.org",
		Received: arrival,
		Size:     int64(len(original)),
		Ret:      "FULL",
		EnvID:    "env-77",
	}
}

// parsed is a notification taken apart.
type parsed struct {
	msg      *mail.Message
	raw      string
	human    string
	perMsg   textproto.MIMEHeader
	perRcpt  []textproto.MIMEHeader
	types    []string
	third    string
	thirdCTE string
}

func build(t *testing.T, r Report, orig io.Reader) *parsed {
	t.Helper()
	var buf bytes.Buffer
	if err := Build(r, orig, &buf); err != nil {
		t.Fatal(err)
	}
	raw := buf.String()
	// Every line ends in CRLF and is short enough for SMTP.
	for i, line := range strings.SplitAfter(raw, "\n") {
		if line == "" {
			continue
		}
		if !strings.HasSuffix(line, "\r\n") || strings.Contains(strings.TrimSuffix(line, "\r\n"), "\r") {
			t.Fatalf("line %d not CRLF: %q", i+1, line)
		}
		if len(line) > 1000 {
			t.Fatalf("line %d too long", i+1)
		}
	}
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	p := &parsed{msg: msg, raw: raw}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" || params["boundary"] == "" {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for i := 0; ; i++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct := part.Header.Get("Content-Type")
		pt, _, _ := mime.ParseMediaType(ct)
		p.types = append(p.types, pt)
		body, err := io.ReadAll(part)
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 0:
			p.human = string(body)
		case 1:
			tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
			h, err := tr.ReadMIMEHeader()
			if err != nil {
				t.Fatalf("per-message fields: %v", err)
			}
			p.perMsg = h
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) > 0 {
					p.perRcpt = append(p.perRcpt, h)
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("per-recipient fields: %v", err)
				}
			}
		case 2:
			p.third = string(body)
			p.thirdCTE = part.Header.Get("Content-Transfer-Encoding")
		}
	}
	return p
}

func subject(t *testing.T, p *parsed) string {
	t.Helper()
	s, err := new(mime.WordDecoder).DecodeHeader(p.msg.Header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantField(t *testing.T, h textproto.MIMEHeader, name, want string) {
	t.Helper()
	if got := h.Get(name); got != want {
		t.Errorf("%s = %q, want %q", name, got, want)
	}
}

func TestFailedFull(t *testing.T) {
	p := build(t, Report{
		ReportingMTA: "mx.posthorn.test",
		Envelope:     envelope(),
		Recipients: []RecipientReport{{
			Addr: "bob@example.net", ORcpt: "rfc822;Bob@Example.NET", Action: Failed, Status: "5.1.1",
			Diagnostic: "smtp; 550 5.1.1 no such user", RemoteMTA: "mx.example.net", LastAttempt: attempt,
		}, {
			Addr: "carol@example.net", Action: Failed, Status: "5.2.2", Diagnostic: "quota exceeded", LastAttempt: attempt,
		}},
		Arrival: arrival,
	}, strings.NewReader(original))

	h := p.msg.Header
	if a, err := h.AddressList("From"); err != nil || a[0].Address != "MAILER-DAEMON@mx.posthorn.test" || a[0].Name != "Mail Delivery System" {
		t.Errorf("From %q: %v", h.Get("From"), err)
	}
	if a, err := h.AddressList("To"); err != nil || a[0].Address != "alice@example.org" {
		t.Errorf("To %q: %v", h.Get("To"), err)
	}
	if got := subject(t, p); got != "Undelivered Mail Returned to Sender / Unzustellbare Nachricht" {
		t.Errorf("Subject %q", got)
	}
	wantField(t, textproto.MIMEHeader(h), "Auto-Submitted", "auto-replied")
	wantField(t, textproto.MIMEHeader(h), "Mime-Version", "1.0")
	wantField(t, textproto.MIMEHeader(h), "In-Reply-To", "<orig-1@example.org>")
	if d, err := h.Date(); err != nil || time.Since(d) > time.Minute {
		t.Errorf("Date %q: %v", h.Get("Date"), err)
	}
	if id := h.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@mx.posthorn.test>") {
		t.Errorf("Message-ID %q", id)
	}

	if strings.Join(p.types, ",") != "text/plain,message/delivery-status,message/rfc822" {
		t.Fatalf("parts %v", p.types)
	}
	for _, s := range []string{
		"Your message could NOT be delivered", "bob@example.net", "The mailbox does not exist.",
		"smtp; 550 5.1.1 no such user", "carol@example.net", "The recipient's mailbox is full.",
		"What happens next", "The original message is attached.", `"Grüße"`,
		"Ihre Nachricht konnte an die folgenden Empfänger NICHT zugestellt werden",
		"Das Postfach existiert nicht.", "Das Postfach des Empfängers ist voll.", "Wie es weitergeht",
		"Die ursprüngliche Nachricht ist angehängt.",
	} {
		if !strings.Contains(p.human, s) {
			t.Errorf("text lacks %q:\n%s", s, p.human)
		}
	}

	wantField(t, p.perMsg, "Reporting-MTA", "dns; mx.posthorn.test")
	wantField(t, p.perMsg, "Original-Envelope-Id", "env-77")
	wantField(t, p.perMsg, "Arrival-Date", arrival.Format(time.RFC1123Z))
	if len(p.perRcpt) != 2 {
		t.Fatalf("%d recipient blocks", len(p.perRcpt))
	}
	r := p.perRcpt[0]
	wantField(t, r, "Original-Recipient", "rfc822;Bob@Example.NET")
	wantField(t, r, "Final-Recipient", "rfc822; bob@example.net")
	wantField(t, r, "Action", "failed")
	wantField(t, r, "Status", "5.1.1")
	wantField(t, r, "Remote-MTA", "dns; mx.example.net")
	wantField(t, r, "Diagnostic-Code", "smtp; 550 5.1.1 no such user")
	wantField(t, r, "Last-Attempt-Date", attempt.Format(time.RFC1123Z))
	wantField(t, r, "Will-Retry-Until", "")
	r = p.perRcpt[1]
	wantField(t, r, "Original-Recipient", "")
	wantField(t, r, "Final-Recipient", "rfc822; carol@example.net")
	wantField(t, r, "Status", "5.2.2")
	wantField(t, r, "Diagnostic-Code", "x-posthorn; quota exceeded")
	wantField(t, r, "Remote-MTA", "")

	// The full original, with CRLF line endings.
	if want := strings.ReplaceAll(original, "\n", "\r\n"); p.third != want {
		t.Errorf("returned original %q, want %q", p.third, want)
	}
	orig, err := mail.ReadMessage(strings.NewReader(p.third))
	if err != nil || orig.Header.Get("Message-Id") != "<orig-1@example.org>" {
		t.Errorf("original does not parse: %v", err)
	}
}

func TestFailedHeadersOnly(t *testing.T) {
	env := envelope()
	env.Ret = "HDRS"
	p := build(t, Report{ReportingMTA: "mx.test", Envelope: env,
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed, Status: "5.1.1"}}}, strings.NewReader(original))
	if p.types[2] != "text/rfc822-headers" {
		t.Fatalf("third part %s", p.types[2])
	}
	hdr := strings.ReplaceAll(original[:strings.Index(original, "\n\n")+1], "\n", "\r\n")
	if p.third != hdr {
		t.Errorf("headers %q, want %q", p.third, hdr)
	}
	if strings.Contains(p.raw, "this is the body") {
		t.Error("body returned with RET=HDRS")
	}
	if !strings.Contains(p.human, "The header of the original message is attached.") ||
		!strings.Contains(p.human, "Die Kopfzeilen der ursprünglichen Nachricht sind angehängt.") {
		t.Error("text does not say what is attached")
	}
	// No RET at all means headers too.
	env.Ret = ""
	p = build(t, Report{ReportingMTA: "mx.test", Envelope: env,
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed}}}, strings.NewReader(original))
	if p.types[2] != "text/rfc822-headers" {
		t.Fatalf("third part %s", p.types[2])
	}
	wantField(t, p.perRcpt[0], "Status", "5.0.0")
}

// countingReader counts what is read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestMaxReturn(t *testing.T) {
	big := original + strings.Repeat("0123456789abcdef\n", 1<<16) // about 1 MB
	env := envelope()
	env.Size = int64(len(big))

	// Too large: headers only, and the body is not even read.
	cr := &countingReader{r: strings.NewReader(big)}
	p := build(t, Report{ReportingMTA: "mx.test", Envelope: env, MaxReturn: 64 << 10,
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed}}}, cr)
	if p.types[2] != "text/rfc822-headers" {
		t.Fatalf("third part %s", p.types[2])
	}
	if cr.n > 128<<10 {
		t.Errorf("read %d bytes of the original for its headers", cr.n)
	}
	if len(p.raw) > 32<<10 {
		t.Errorf("DSN is %d bytes", len(p.raw))
	}

	// Fits: full.
	p = build(t, Report{ReportingMTA: "mx.test", Envelope: env, MaxReturn: 2 << 20,
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed}}}, strings.NewReader(big))
	if p.types[2] != "message/rfc822" || p.third != strings.ReplaceAll(big, "\n", "\r\n") {
		t.Fatalf("third part %s, %d bytes", p.types[2], len(p.third))
	}

	// Default limit: 10 MB.
	p = build(t, Report{ReportingMTA: "mx.test", Envelope: env,
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed}}}, strings.NewReader(big))
	if p.types[2] != "message/rfc822" {
		t.Fatalf("third part %s", p.types[2])
	}

	// Unknown size: cut at the limit.
	env.Size = 0
	p = build(t, Report{ReportingMTA: "mx.test", Envelope: env, MaxReturn: 64 << 10,
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed}}}, strings.NewReader(big))
	if p.types[2] != "message/rfc822" || len(p.third) > 70<<10 || len(p.third) < 60<<10 {
		t.Fatalf("third part %s, %d bytes", p.types[2], len(p.third))
	}
}

func TestDelayed(t *testing.T) {
	p := build(t, Report{ReportingMTA: "mx.test", Envelope: envelope(), Arrival: arrival,
		Recipients: []RecipientReport{{
			Addr: "bob@example.net", Action: Delayed, Status: "4.4.1", Diagnostic: "x-posthorn; connection refused",
			RemoteMTA: "mx.example.net", LastAttempt: attempt, WillRetryUntil: until,
		}}}, strings.NewReader(original))
	if got := subject(t, p); got != "Delayed Mail (still being retried) / Verzögerte Zustellung" {
		t.Errorf("Subject %q", got)
	}
	r := p.perRcpt[0]
	wantField(t, r, "Action", "delayed")
	wantField(t, r, "Status", "4.4.1")
	wantField(t, r, "Will-Retry-Until", until.Format(time.RFC1123Z))
	wantField(t, r, "Diagnostic-Code", "x-posthorn; connection refused")
	// RET=FULL is for failures: a delay returns headers only.
	if p.types[2] != "text/rfc822-headers" {
		t.Errorf("third part %s", p.types[2])
	}
	for _, s := range []string{"has not yet been delivered", "should not send the message again",
		"Will keep trying until: 2026-03-06 10:00 UTC", "noch nicht zugestellt", "Weitere Versuche bis: 2026-03-06 10:00 UTC",
		"nicht erneut senden", "The recipient's mail server did not answer."} {
		if !strings.Contains(p.human, s) {
			t.Errorf("text lacks %q", s)
		}
	}
}

func TestDelivered(t *testing.T) {
	for _, a := range []Action{Delivered, Relayed, Expanded} {
		p := build(t, Report{ReportingMTA: "mx.test", Envelope: envelope(),
			Recipients: []RecipientReport{{Addr: "bob@example.net", ORcpt: "bob@example.net", Action: a,
				Diagnostic: "lmtp; 250 2.0.0 ok"}}}, strings.NewReader(original))
		if got := subject(t, p); got != "Successful Mail Delivery Report / Zustellbestätigung" {
			t.Errorf("%s: Subject %q", a, got)
		}
		r := p.perRcpt[0]
		wantField(t, r, "Action", string(a))
		wantField(t, r, "Status", "2.0.0")
		wantField(t, r, "Original-Recipient", "rfc822;bob@example.net")
		wantField(t, r, "Diagnostic-Code", "lmtp; 250 2.0.0 ok")
		if p.types[2] != "text/rfc822-headers" {
			t.Errorf("%s: third part %s", a, p.types[2])
		}
		if !strings.Contains(p.human, "this is only a confirmation") || !strings.Contains(p.human, "dies ist nur eine Bestätigung") {
			t.Errorf("%s: text %s", a, p.human)
		}
	}
}

func TestMixed(t *testing.T) {
	p := build(t, Report{ReportingMTA: "mx.test", Envelope: envelope(),
		Recipients: []RecipientReport{
			{Addr: "d@x", Action: Delayed},
			{Addr: "f@x", Action: Failed},
		}}, strings.NewReader(original))
	if got := subject(t, p); !strings.HasPrefix(got, "Undelivered Mail") {
		t.Errorf("Subject %q", got)
	}
	if len(p.perRcpt) != 2 || p.perRcpt[0].Get("Action") != "delayed" || p.perRcpt[1].Get("Action") != "failed" {
		t.Errorf("blocks %v", p.perRcpt)
	}
}

func TestDoubleBounce(t *testing.T) {
	env := envelope()
	env.From = ""
	p := build(t, Report{ReportingMTA: "mx.test", Envelope: env, Postmaster: "postmaster@example.org",
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed}}}, strings.NewReader(original))
	if a, err := p.msg.Header.AddressList("To"); err != nil || a[0].Address != "postmaster@example.org" {
		t.Errorf("To %q", p.msg.Header.Get("To"))
	}
	p = build(t, Report{ReportingMTA: "mx.test", Envelope: env,
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed}}}, strings.NewReader(original))
	if a, err := p.msg.Header.AddressList("To"); err != nil || a[0].Address != "postmaster@mx.test" {
		t.Errorf("To %q", p.msg.Header.Get("To"))
	}
}

func TestNoOriginalAndNoEnvID(t *testing.T) {
	env := envelope()
	env.EnvID = ""
	p := build(t, Report{ReportingMTA: "mx.test", Envelope: env,
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed}}}, nil)
	if len(p.types) != 2 {
		t.Fatalf("parts %v", p.types)
	}
	if _, ok := p.perMsg["Original-Envelope-Id"]; ok {
		t.Error("Original-Envelope-Id without ENVID")
	}
	wantField(t, p.perMsg, "Arrival-Date", arrival.Format(time.RFC1123Z))
}

func TestSMTPUTF8(t *testing.T) {
	env := envelope()
	env.SMTPUTF8 = true
	env.From = "jörg@example.de"
	p := build(t, Report{ReportingMTA: "mx.test", Envelope: env,
		Recipients: []RecipientReport{{Addr: "bjørn@example.no", Action: Failed, Diagnostic: "smtp; 550 unbekannt"}}},
		strings.NewReader(original))
	if strings.Join(p.types, ",") != "text/plain,message/global-delivery-status,message/global" {
		t.Fatalf("parts %v", p.types)
	}
	wantField(t, p.perRcpt[0], "Final-Recipient", "utf-8; bjørn@example.no")
}

func TestDiagnosticSanitised(t *testing.T) {
	long := "smtp; 550-5.7.1 first line\r\n550 5.7.1 " + strings.Repeat("very long reason ", 20)
	p := build(t, Report{ReportingMTA: "mx.test", Envelope: envelope(),
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed, Diagnostic: long + " ünïcode"}}},
		strings.NewReader(original))
	got := p.perRcpt[0].Get("Diagnostic-Code")
	if !strings.HasPrefix(got, "smtp; 550-5.7.1 first line 550 5.7.1 very long") || !strings.HasSuffix(got, "?n?code") {
		t.Errorf("Diagnostic-Code %q", got)
	}
}

func TestGoMessage(t *testing.T) {
	// The notification also parses with go-message.
	var buf bytes.Buffer
	err := Build(Report{ReportingMTA: "mx.test", Envelope: envelope(),
		Recipients: []RecipientReport{{Addr: "bob@example.net", Action: Failed, Status: "5.1.1"}}},
		strings.NewReader(original), &buf)
	if err != nil {
		t.Fatal(err)
	}
	mr, err := gomail.CreateReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	subj, err := mr.Header.Subject()
	if err != nil || subj != "Undelivered Mail Returned to Sender / Unzustellbare Nachricht" {
		t.Errorf("Subject %q: %v", subj, err)
	}
	ct, params, _ := mr.Header.ContentType()
	if ct != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Errorf("Content-Type %s %v", ct, params)
	}
	var types []string
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := part.Header.(interface {
			ContentType() (string, map[string]string, error)
		}).ContentType()
		types = append(types, ct)
		b, _ := io.ReadAll(part.Body)
		if ct == "text/plain" && !strings.Contains(string(b), "Das Postfach existiert nicht.") {
			t.Errorf("text not decoded: %s", b)
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,message/rfc822" {
		t.Errorf("parts %v", types)
	}
}

func TestBuildErrors(t *testing.T) {
	var buf bytes.Buffer
	if err := Build(Report{Recipients: []RecipientReport{{Addr: "a@x", Action: Failed}}}, nil, &buf); err == nil {
		t.Error("no envelope: no error")
	}
	if err := Build(Report{Envelope: envelope()}, nil, &buf); err == nil {
		t.Error("no recipients: no error")
	}
	if err := Build(Report{Envelope: envelope(), Recipients: []RecipientReport{{Addr: "a@x", Action: "bounced"}}}, nil, &buf); err == nil {
		t.Error("bad action: no error")
	}
}

func TestRecipient(t *testing.T) {
	if to, ok := Recipient(&queue.Envelope{From: "a@x"}); !ok || to != "a@x" {
		t.Errorf("got %q %v", to, ok)
	}
	if to, ok := Recipient(&queue.Envelope{From: "<a@x>"}); !ok || to != "a@x" {
		t.Errorf("got %q %v", to, ok)
	}
	for _, env := range []*queue.Envelope{nil, {From: ""}, {From: "<>"}} {
		if to, ok := Recipient(env); ok || to != "" {
			t.Errorf("%v: got %q %v", env, to, ok)
		}
	}
}

func TestWants(t *testing.T) {
	all := []Action{Failed, Delayed, Delivered, Relayed, Expanded}
	cases := []struct {
		notify []string
		want   []Action
	}{
		{nil, []Action{Failed, Delayed}},
		{[]string{}, []Action{Failed, Delayed}},
		{[]string{"NEVER"}, nil},
		{[]string{"never"}, nil},
		{[]string{"SUCCESS"}, []Action{Delivered, Relayed, Expanded}},
		{[]string{"FAILURE"}, []Action{Failed}},
		{[]string{"delay"}, []Action{Delayed}},
		{[]string{"Success", "Failure"}, []Action{Failed, Delivered, Relayed, Expanded}},
		{[]string{"SUCCESS", "FAILURE", "DELAY"}, all},
		{[]string{"NEVER", "SUCCESS"}, nil},
	}
	for _, c := range cases {
		for _, a := range all {
			want := false
			for _, w := range c.want {
				if w == a {
					want = true
				}
			}
			if got := Wants(c.notify, a); got != want {
				t.Errorf("Wants(%v, %s) = %v, want %v", c.notify, a, got, want)
			}
		}
	}
}

func TestCRLFWriter(t *testing.T) {
	for in, want := range map[string]string{
		"a\nb\r\nc": "a\r\nb\r\nc",
		"\n\n":      "\r\n\r\n",
		"a\r":       "a\r",
	} {
		var b bytes.Buffer
		w := &crlfWriter{w: &b}
		for i := 0; i < len(in); i++ { // byte by byte: a CRLF split across writes
			w.Write([]byte{in[i]})
		}
		if b.String() != want {
			t.Errorf("%q: got %q, want %q", in, b.String(), want)
		}
	}
}
