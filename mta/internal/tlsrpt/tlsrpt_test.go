package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"

	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/testbed/dnsserver"
)

var (
	day0 = time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	ctx  = context.Background()
)

func newRecorder(t *testing.T, dir string, mod ...func(*Options)) *Recorder {
	t.Helper()
	o := Options{Dir: dir, OrganizationName: "Posthorn Test Org", ContactInfo: "tls-reports@sender.example",
		Submitter: "mx.sender.example", Now: func() time.Time { return day0.Add(36 * time.Hour) },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mod {
		m(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

var stsPolicy = []string{"version: STSv1", "mode: testing", "mx: *.mail.example.org", "max_age: 86400"}

// recordDay records a day of mixed results.
func recordDay(t *testing.T, r *Recorder) {
	t.Helper()
	at := func(h int) time.Time { return day0.Add(time.Duration(h)*time.Hour + 17*time.Minute) }
	sts := func(h int, ok bool, rt ResultType, mx, ip string) Attempt {
		return Attempt{Time: at(h), Domain: "Example.ORG.", PolicyType: PolicySTS, PolicyString: stsPolicy,
			MXHost: []string{"*.mail.example.org"}, Success: ok, Result: rt, SendingMTAIP: "192.0.2.1",
			ReceivingMXHostname: mx, ReceivingIP: ip}
	}
	var as []Attempt
	for h := range 5 {
		as = append(as, sts(h, true, "", "mx1.mail.example.org", "203.0.113.1"))
	}
	for h := range 3 {
		as = append(as, sts(h+5, false, CertificateExpired, "mx1.mail.example.org", "203.0.113.1"))
	}
	as = append(as, sts(9, false, StartTLSNotSupported, "mx2.mail.example.org", "203.0.113.2"))
	as = append(as, sts(10, false, StartTLSNotSupported, "mx2.mail.example.org", "203.0.113.2"))
	as = append(as, sts(11, false, CertificateExpired, "mx2.mail.example.org", "203.0.113.2"))
	// A fetch failure: no policy found, with the fetch error.
	as = append(as, Attempt{Time: at(12), Domain: "example.org", PolicyType: PolicyNone, Result: STSPolicyFetchError,
		SendingMTAIP: "192.0.2.1", AdditionalInfo: "HTTP status 404 Not Found"})
	as = append(as, Attempt{Time: at(13), Domain: "example.org", Success: true})
	// DANE for another domain.
	tlsa := []string{"_25._tcp.mx.other.example. 300 IN TLSA 3 1 1 abcd"}
	as = append(as, Attempt{Time: at(14), Domain: "other.example", PolicyType: PolicyTLSA, PolicyString: tlsa,
		PolicyDomain: "mx.other.example", Success: true})
	as = append(as, Attempt{Time: at(15), Domain: "other.example", PolicyType: PolicyTLSA, PolicyString: tlsa,
		PolicyDomain: "mx.other.example", Result: TLSAInvalid, ReceivingMXHostname: "mx.other.example",
		ReceivingMXHelo: "mx.other.example", ReceivingIP: "2001:db8::25", FailureReasonCode: "X509_V_ERR_CERT_UNTRUSTED"})
	// The day before and after: not in the report.
	as = append(as, sts(-1, true, "", "mx1.mail.example.org", "203.0.113.1"))
	as = append(as, sts(24, false, CertificateExpired, "mx1.mail.example.org", "203.0.113.1"))
	var wg sync.WaitGroup
	for _, a := range as {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Record(a); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func TestReportFieldByField(t *testing.T) {
	dir := t.TempDir()
	r := newRecorder(t, dir)
	recordDay(t, r)
	r.Close()
	// A torn line (crash mid-write) is skipped.
	f, _ := os.OpenFile(filepath.Join(dir, "2026-03-14.jsonl"), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"t":"2026-03-14T23:00:00Z","d":"example.org","pt":"st`)
	f.Close()

	// A new Recorder (a restart) sees the day.
	r = newRecorder(t, dir)
	ds, err := r.Domains(day0.Add(5 * time.Hour))
	if err != nil || !reflect.DeepEqual(ds, []string{"example.org", "other.example"}) {
		t.Fatalf("domains %v %v", ds, err)
	}
	rep, err := r.Report(day0.Add(13*time.Hour), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	js, err := rep.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"organization-name": "Posthorn Test Org",
		"date-range": map[string]any{
			"start-datetime": "2026-03-14T00:00:00Z",
			"end-datetime":   "2026-03-14T23:59:59Z",
		},
		"contact-info": "tls-reports@sender.example",
		"report-id":    "20260314.example.org@mx.sender.example",
		"policies": []any{
			map[string]any{
				"policy": map[string]any{
					"policy-type":   "sts",
					"policy-string": []any{"version: STSv1", "mode: testing", "mx: *.mail.example.org", "max_age: 86400"},
					"policy-domain": "example.org",
					"mx-host":       []any{"*.mail.example.org"},
				},
				"summary": map[string]any{"total-successful-session-count": 5.0, "total-failure-session-count": 6.0},
				"failure-details": []any{
					map[string]any{"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.1",
						"receiving-mx-hostname": "mx1.mail.example.org", "receiving-ip": "203.0.113.1", "failed-session-count": 3.0},
					map[string]any{"result-type": "starttls-not-supported", "sending-mta-ip": "192.0.2.1",
						"receiving-mx-hostname": "mx2.mail.example.org", "receiving-ip": "203.0.113.2", "failed-session-count": 2.0},
					map[string]any{"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.1",
						"receiving-mx-hostname": "mx2.mail.example.org", "receiving-ip": "203.0.113.2", "failed-session-count": 1.0},
				},
			},
			map[string]any{
				"policy": map[string]any{
					"policy-type":   "no-policy-found",
					"policy-domain": "example.org",
				},
				"summary": map[string]any{"total-successful-session-count": 1.0, "total-failure-session-count": 1.0},
				"failure-details": []any{
					map[string]any{"result-type": "sts-policy-fetch-error", "sending-mta-ip": "192.0.2.1",
						"additional-information": "HTTP status 404 Not Found", "failed-session-count": 1.0},
				},
			},
		},
	}
	// Records were written concurrently: compare policies and details as
	// sets.
	sortDetails(got)
	sortDetails(want)
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("report:\n%s\nwant:\n%s", g, w)
	}

	rep2, err := r.Report(day0, "other.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep2.Policies) != 1 {
		t.Fatalf("%+v", rep2.Policies)
	}
	p := rep2.Policies[0]
	if p.Policy.PolicyType != PolicyTLSA || p.Policy.PolicyDomain != "mx.other.example" || p.Summary != (Summary{1, 1}) ||
		len(p.FailureDetails) != 1 || p.FailureDetails[0].ResultType != TLSAInvalid ||
		p.FailureDetails[0].ReceivingMXHelo != "mx.other.example" || p.FailureDetails[0].FailureReasonCode != "X509_V_ERR_CERT_UNTRUSTED" {
		t.Errorf("tlsa report %+v", p)
	}
	b, _ := rep2.JSON()
	for _, k := range []string{`"receiving-mx-helo"`, `"failure-reason-code"`, `"receiving-ip": "2001:db8::25"`} {
		if !bytes.Contains(b, []byte(k)) {
			t.Errorf("no %s in %s", k, b)
		}
	}
	// A day without records: an empty policies list.
	rep3, _ := r.Report(day0.AddDate(0, 0, -5), "example.org")
	if b, _ := rep3.JSON(); !bytes.Contains(b, []byte(`"policies": []`)) {
		t.Errorf("empty report %s", b)
	}
}

func sortDetails(m map[string]any) {
	ps := m["policies"].([]any)
	key := func(x any) string { b, _ := json.Marshal(x); return string(b) }
	sortAny := func(xs []any) {
		for i := range xs {
			for j := i + 1; j < len(xs); j++ {
				if key(xs[j]) < key(xs[i]) {
					xs[i], xs[j] = xs[j], xs[i]
				}
			}
		}
	}
	for _, p := range ps {
		if fd, ok := p.(map[string]any)["failure-details"].([]any); ok {
			sortAny(fd)
		}
	}
	sortAny(ps)
}

func TestRecordValidation(t *testing.T) {
	r := newRecorder(t, t.TempDir())
	if err := r.Record(Attempt{}); err == nil {
		t.Error("attempt without domain accepted")
	}
	r.Record(Attempt{Domain: "x.example", Time: day0})
	r.Record(Attempt{Domain: "x.example", Time: day0, Success: true, Result: CertificateExpired})
	rep, _ := r.Report(day0, "x.example")
	if len(rep.Policies) != 1 || rep.Policies[0].Policy.PolicyType != PolicyNone || rep.Policies[0].Summary != (Summary{1, 1}) ||
		rep.Policies[0].FailureDetails[0].ResultType != ValidationFailure {
		t.Errorf("%+v", rep.Policies)
	}
	if _, err := New(Options{Submitter: "x"}); err == nil {
		t.Error("no dir accepted")
	}
	if _, err := New(Options{Dir: t.TempDir()}); err == nil {
		t.Error("no submitter accepted")
	}
}

func TestResultTypes(t *testing.T) {
	want := "starttls-not-supported certificate-host-mismatch certificate-expired certificate-not-trusted validation-failure " +
		"tlsa-invalid dnssec-invalid dane-required sts-policy-fetch-error sts-policy-invalid sts-webpki-invalid"
	var got []string
	for _, r := range ResultTypes {
		got = append(got, string(r))
	}
	if strings.Join(got, " ") != want {
		t.Error(got)
	}
}

func TestMessage(t *testing.T) {
	r := newRecorder(t, t.TempDir())
	recordDay(t, r)
	rep, _ := r.Report(day0, "example.org")
	var submitted []byte
	var to string
	err := Send(ctx, rep, []string{"mailto:tlsrpt%2Breports@example.org?subject=x"}, func(rcpt string, msg []byte) error {
		to, submitted = rcpt, msg
		return nil
	}, nil)
	if err != nil || to != "tlsrpt+reports@example.org" {
		t.Fatalf("send: %v, to %q", err, to)
	}
	if bytes.Contains(bytes.ReplaceAll(submitted, []byte("\r\n"), nil), []byte("\n")) {
		t.Error("bare LF in message")
	}
	mr, err := gomail.CreateReader(bytes.NewReader(submitted))
	if err != nil {
		t.Fatal(err)
	}
	h := mr.Header
	if s, _ := h.Subject(); s != "Report Domain: example.org Submitter: mx.sender.example Report-ID: <20260314.example.org@mx.sender.example>" {
		t.Errorf("subject %q", s)
	}
	if h.Get("TLS-Report-Domain") != "example.org" || h.Get("TLS-Report-Submitter") != "mx.sender.example" {
		t.Errorf("TLS-Report headers: %v", h)
	}
	from, _ := h.AddressList("From")
	tos, _ := h.AddressList("To")
	if len(from) != 1 || from[0].Address != "postmaster@mx.sender.example" || len(tos) != 1 || tos[0].Address != "tlsrpt+reports@example.org" {
		t.Errorf("from %v to %v", from, tos)
	}
	if d, err := h.Date(); err != nil || d.IsZero() {
		t.Errorf("date %v", err)
	}
	if id, err := h.MessageID(); err != nil || id == "" {
		t.Errorf("message-id %q %v", id, err)
	}
	ct, params, _ := h.ContentType()
	if ct != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Errorf("content type %s %v", ct, params)
	}
	var parts []string
	var js []byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ph := p.Header.(type) {
		case *gomail.InlineHeader:
			ct, _, _ := ph.ContentType()
			parts = append(parts, "inline "+ct)
			body, _ := io.ReadAll(p.Body)
			if !strings.Contains(string(body), "TLS report") {
				t.Errorf("text part %q", body)
			}
		case *gomail.AttachmentHeader:
			ct, _, _ := ph.ContentType()
			fn, _ := ph.Filename()
			parts = append(parts, "attachment "+ct+" "+fn)
			zr, err := gzip.NewReader(p.Body)
			if err != nil {
				t.Fatal(err)
			}
			js, _ = io.ReadAll(zr)
		}
	}
	wantParts := []string{"inline text/plain", "attachment application/tlsrpt+gzip mx.sender.example!example.org!1773446400!1773532799.json.gz"}
	if !reflect.DeepEqual(parts, wantParts) {
		t.Errorf("parts %q", parts)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if back.ReportID != rep.ReportID || !reflect.DeepEqual(back.Policies, rep.Policies) || !back.DateRange.Start.Equal(day0) {
		t.Errorf("attachment differs: %+v", back)
	}
	// The generic parser agrees on the structure.
	e, err := message.Read(bytes.NewReader(submitted))
	if err != nil {
		t.Fatal(err)
	}
	if e.MultipartReader() == nil {
		t.Error("not multipart")
	}
}

func TestHTTPSPost(t *testing.T) {
	var mu sync.Mutex
	var gotCT string
	var gotBody []byte
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/ok", http.StatusFound)
			return
		}
		gotCT = r.Header.Get("Content-Type")
		gotBody, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Fatalf("server at %s", srv.URL)
	}
	r := newRecorder(t, t.TempDir())
	recordDay(t, r)
	rep, _ := r.Report(day0, "other.example")
	if err := Send(ctx, rep, []string{srv.URL + "/ok"}, nil, srv.Client()); err != nil {
		t.Fatal(err)
	}
	if gotCT != "application/tlsrpt+gzip" {
		t.Errorf("content type %q", gotCT)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gotBody))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := io.ReadAll(zr)
	var back map[string]any
	if err := json.Unmarshal(js, &back); err != nil || back["report-id"] != "20260314.other.example@mx.sender.example" {
		t.Errorf("body %s %v", js, err)
	}
	// Failures are reported, redirects not followed, and every URI tried.
	var n int
	err = Send(ctx, rep, []string{srv.URL + "/fail", srv.URL + "/redirect", "mailto:a@example.org", "ftp://x"},
		func(string, []byte) error { n++; return nil }, srv.Client())
	if err == nil || n != 1 || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "302") ||
		!strings.Contains(err.Error(), "unsupported") {
		t.Errorf("err %v, %d mails", err, n)
	}
	// No trust in the server's certificate: an error.
	if err := Send(ctx, rep, []string{srv.URL + "/ok"}, nil, &http.Client{Timeout: 5 * time.Second}); err == nil {
		t.Error("untrusted certificate accepted")
	}
}

func TestParseRecord(t *testing.T) {
	for _, tc := range []struct {
		txt  []string
		want []string
	}{
		{[]string{"v=TLSRPTv1; rua=mailto:reports@example.org"}, []string{"mailto:reports@example.org"}},
		{[]string{"v=TLSRPTv1;rua=mailto:a@example.org,https://r.example.org/tlsrpt;"}, []string{"mailto:a@example.org", "https://r.example.org/tlsrpt"}},
		{[]string{"v=spf1 -all", "v=TLSRPTv1 ; ext=1 ; rua = x; rua=https://r.example.org/a%2Cb"}, nil}, // "rua " is an unknown field, "rua" a second one
		{[]string{"v=TLSRPTv1; rua=http://r.example.org/, mailto:x@example.org"}, []string{"mailto:x@example.org"}},
		{[]string{"v=TLSRPTv1; x=y; rua=https://r.example.org/a%2Cb"}, []string{"https://r.example.org/a%2Cb"}},
		{[]string{"v=TLSRPTv1; rua=mailto:not-an-address"}, nil},
		{[]string{"v=TLSRPTv1; rua=ftp://x"}, nil},
		{[]string{"v=TLSRPTv1"}, nil},
		{[]string{"v=TLSRPTv1; garbage"}, nil},
		{[]string{"v=TLSRPTv1; rua=mailto:a@example.org", "v=TLSRPTv1; rua=mailto:b@example.org"}, nil},
		{[]string{"v=TLSRPTv10; rua=mailto:a@example.org"}, nil},
		{nil, nil},
	} {
		got, err := ParseRecord(tc.txt)
		if tc.want == nil {
			if err == nil || !errors.Is(err, ErrNoPolicy) {
				t.Errorf("%q: %v %v", tc.txt, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %q %v", tc.txt, got, err)
		}
	}
}

func TestRuaAndSendDay(t *testing.T) {
	dns, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	var mu sync.Mutex
	posts := 0
	fail := true
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			http.Error(w, "later", http.StatusServiceUnavailable)
			return
		}
		posts++
	}))
	defer srv.Close()
	z := dns.Zone("example.org", dnsserver.Insecure)
	z.TXT("_smtp._tls", "v=TLSRPTv1; rua=mailto:tlsrpt@example.org")
	dns.Zone("other.example", dnsserver.Insecure).TXT("_smtp._tls.other.example", "v=TLSRPTv1; rua="+srv.URL+"/r")
	res, _ := resolver.New(resolver.Options{Server: dns.Addr(), Timeout: time.Second})

	if rua, err := Rua(ctx, res, "Example.Org."); err != nil || len(rua) != 1 || rua[0] != "mailto:tlsrpt@example.org" {
		t.Fatalf("rua %v %v", rua, err)
	}
	if _, err := Rua(ctx, res, "none.example.org"); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("no record: %v", err)
	}
	dns.Zone("bogus.example", dnsserver.Bogus)
	if _, err := Rua(ctx, res, "bogus.example"); err == nil || errors.Is(err, ErrNoPolicy) {
		t.Fatalf("servfail: %v", err)
	}

	var mails []string
	dir := t.TempDir()
	r := newRecorder(t, dir, func(o *Options) {
		o.Resolver = res
		o.HTTPClient = srv.Client()
		o.Submit = func(to string, msg []byte) error { mu.Lock(); mails = append(mails, to); mu.Unlock(); return nil }
	})
	recordDay(t, r)
	r.Record(Attempt{Time: day0, Domain: "none.example.org", Success: true}) // no TLSRPT record
	err = r.SendDay(ctx, day0)
	if err == nil || len(mails) != 1 || mails[0] != "tlsrpt@example.org" || posts != 0 {
		t.Fatalf("first round: %v, mails %v, posts %d", err, mails, posts)
	}
	// Retried: only the failed one goes again.
	mu.Lock()
	fail = false
	mu.Unlock()
	if err := r.SendDay(ctx, day0); err != nil || len(mails) != 1 || posts != 1 {
		t.Fatalf("second round: %v, mails %v, posts %d", err, mails, posts)
	}
	// Once sent, never again (also after a restart).
	r2 := newRecorder(t, dir, func(o *Options) {
		o.Resolver = res
		o.HTTPClient = srv.Client()
		o.Submit = func(to string, msg []byte) error { mails = append(mails, to); return nil }
	})
	if err := r2.SendDay(ctx, day0); err != nil || len(mails) != 1 || posts != 1 {
		t.Fatalf("third round: %v, mails %v, posts %d", err, mails, posts)
	}

	// DailyLoop sends yesterday's (Now is day0+36h) and prunes old files.
	old := filepath.Join(dir, "2026-01-01.jsonl")
	os.WriteFile(old, []byte("{}\n"), 0o600)
	os.Remove(filepath.Join(dir, "sent-2026-03-14"))
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { r2.DailyLoop(lctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := posts
		mu.Unlock()
		if _, err := os.Stat(old); n == 2 && os.IsNotExist(err) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if posts != 2 || len(mails) != 2 {
		t.Errorf("DailyLoop: posts %d mails %v", posts, mails)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Error("old file not pruned")
	}
}
