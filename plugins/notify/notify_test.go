package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

// fakeHost is an sdk.Host recording submissions, deduplicating on the
// idempotency key.
type fakeHost struct {
	mu   sync.Mutex
	subs map[string][]byte
	envs map[string]*sdk.Envelope
	n    int
}

func (h *fakeHost) Submit(_ context.Context, key string, env *sdk.Envelope, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs == nil {
		h.subs, h.envs = map[string][]byte{}, map[string]*sdk.Envelope{}
	}
	if _, ok := h.subs[key]; !ok {
		h.n++
	}
	h.subs[key], h.envs[key] = b, env
	return "Q1", nil
}
func (h *fakeHost) Emit(context.Context, sdk.Event) error           { return nil }
func (h *fakeHost) Confirm(context.Context, sdk.Confirmation) error { return nil }

func configure(t *testing.T, cfg map[string]any, host sdk.Host) *Plugin {
	t.Helper()
	js, _ := json.Marshal(cfg)
	p := &Plugin{sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() }}
	if err := p.Configure(context.Background(), sdk.Config{JSON: js, DataDir: t.TempDir(), Host: host}); err != nil {
		t.Fatal(err)
	}
	return p
}

func parse(t *testing.T, raw []byte) (*mail.Message, string) {
	t.Helper()
	if strings.Contains(strings.ReplaceAll(string(raw), "\r\n", ""), "\n") {
		t.Errorf("bare LF in %q", raw)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(m.Body))
	if err != nil {
		t.Fatal(err)
	}
	return m, strings.ReplaceAll(string(body), "\r\n", "\n")
}

func TestComposeLanguages(t *testing.T) {
	host := &fakeHost{}
	p := configure(t, map[string]any{"from": "noreply@example.org", "organization": "Beispiel GmbH", "default_language": "de"}, host)
	ev := sdk.Event{
		ID: "ev1", Type: "webmailbox.activation", Sender: "alice@example.org", Recipient: "bob@partner.example",
		Attributes: map[string]string{"link": "https://mail.example.org/a/TOKEN", "expires": "2026-12-01T10:00:00Z"},
	}
	for _, tc := range []struct {
		lang, wantLang, subject, text string
	}{
		{"en-GB", "en", "An encrypted message for you from alice@example.org", "The link is valid until 1 December 2026, 10:00 UTC."},
		{"de", "de", "Eine verschlüsselte Nachricht für Sie von alice@example.org", "Der Link ist gültig bis 01.12.2026, 10:00 UTC."},
		{"", "de", "Eine verschlüsselte Nachricht für Sie", "richten Sie bitte Ihr sicheres Webpostfach ein"}, // default_language
		{"fr", "de", "Eine verschlüsselte Nachricht", "Beispiel GmbH"},
	} {
		ev := ev
		ev.Language = tc.lang
		ev.ID = "ev-" + tc.lang
		if err := p.HandleEvent(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		raw := host.subs["mail:"+ev.ID+":bob@partner.example"]
		m, body := parse(t, raw)
		subj, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
		if err != nil || !strings.HasPrefix(subj, tc.subject) {
			t.Errorf("%s: Subject %q (%v)", tc.lang, subj, err)
		}
		if got := m.Header.Get("Content-Language"); got != tc.wantLang {
			t.Errorf("%s: Content-Language %q", tc.lang, got)
		}
		if !strings.Contains(body, tc.text) || !strings.Contains(body, "  https://mail.example.org/a/TOKEN\n") {
			t.Errorf("%s: body\n%s", tc.lang, body)
		}
		if m.Header.Get("Auto-Submitted") != "auto-generated" || m.Header.Get("From") != `"Posthorn" <noreply@example.org>` ||
			m.Header.Get("To") != "<bob@partner.example>" || !strings.HasSuffix(m.Header.Get("Message-Id"), "@example.org>") {
			t.Errorf("%s: headers %v", tc.lang, m.Header)
		}
		env := host.envs["mail:"+ev.ID+":bob@partner.example"]
		if env.MailFrom != "noreply@example.org" || env.Recipients[0].Address != "bob@partner.example" {
			t.Errorf("envelope %+v", env)
		}
	}
	// A redelivered event submits with the same key: one mail.
	n := host.n
	ev.ID, ev.Language = "ev-de", "de"
	if err := p.HandleEvent(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if host.n != n {
		t.Errorf("redelivery queued a new mail")
	}
}

// TestDatesInTimeZone: the event's time_zone decides where times are
// shown, in summer and winter; an unknown zone keeps the written offset.
func TestDatesInTimeZone(t *testing.T) {
	host := &fakeHost{}
	p := configure(t, map[string]any{"from": "noreply@example.org"}, host)
	for i, tc := range []struct {
		lang, zone, expires, want string
	}{
		{"de", "Europe/Berlin", "2026-12-01T10:00:00Z", "Der Link ist gültig bis 01.12.2026, 11:00 CET."},
		{"de", "Europe/Berlin", "2026-07-01T10:00:00Z", "Der Link ist gültig bis 01.07.2026, 12:00 CEST."},
		{"en", "America/New_York", "2026-12-01T11:00:00+01:00", "The link is valid until 1 December 2026, 05:00 EST."},
		{"en", "Asia/Tokyo", "2026-12-01T10:00:00Z", "The link is valid until 1 December 2026, 19:00 JST."},
		{"en", "Mars/Olympus", "2026-12-01T10:00:00Z", "The link is valid until 1 December 2026, 10:00 UTC."},
		{"en", "", "2026-12-01T10:00:00Z", "The link is valid until 1 December 2026, 10:00 UTC."},
	} {
		ev := sdk.Event{ID: fmt.Sprintf("tz%d", i), Type: "webmailbox.activation", Recipient: "bob@partner.example", Language: tc.lang,
			Attributes: map[string]string{"link": "https://mail.example.org/a/T", "expires": tc.expires, "time_zone": tc.zone}}
		if err := p.HandleEvent(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		_, body := parse(t, host.subs["mail:"+ev.ID+":bob@partner.example"])
		if !strings.Contains(body, tc.want) {
			t.Errorf("%s %s: want %q in\n%s", tc.zone, tc.expires, tc.want, body)
		}
	}
}

func TestTargets(t *testing.T) {
	host := &fakeHost{}
	p := configure(t, map[string]any{"from": "noreply@example.org"}, host)
	events := []sdk.Event{
		{ID: "1", Type: "webmailbox.pin", Sender: "alice@example.org", Recipient: "bob@x.example", Attributes: map[string]string{"pin": "4711"}},
		{ID: "2", Type: "webmailbox.reminder_sender", Sender: "alice@example.org", Recipient: "bob@x.example", Attributes: map[string]string{"state": "unactivated"}},
		{ID: "3", Type: "smime.cert_expiring", Recipient: "carol@example.org", Attributes: map[string]string{"subject": "CN=Carol", "not_after": "2027-01-31T00:00:00Z"}},
		{ID: "4", Type: "pgp.key_expiring", Recipient: "dave@example.org", Attributes: map[string]string{"not_after": "2027-01-31T00:00:00Z", "notify_to": "admin@example.org"}},
		{ID: "5", Type: "webmailbox.new_message", Recipient: "bob@x.example", Attributes: map[string]string{"link": "https://l"}},
		{ID: "6", Type: "webmailbox.reminder_recipient", Recipient: "bob@x.example", Attributes: map[string]string{"link": "https://l"}},
		{ID: "7", Type: "webmailbox.quota_exceeded", Recipient: "bob@x.example", Attributes: map[string]string{"used": "10 MB", "limit": "10 MB"}},
		{ID: "8", Type: "bounced", Sender: "alice@example.org", Recipient: "bob@x.example"}, // no template: no mail
	}
	want := map[string]string{
		"mail:1:alice@example.org": "4711",
		"mail:2:alice@example.org": "has not yet activated their secure web mailbox",
		"mail:3:carol@example.org": "CN=Carol",
		"mail:4:admin@example.org": "expires on 31 January 2027",
		"mail:5:bob@x.example":     "https://l",
		"mail:6:bob@x.example":     "https://l",
		"mail:7:bob@x.example":     "(10 MB of 10 MB)",
	}
	for _, ev := range events {
		for _, lang := range []string{"en", "de"} {
			ev.Language = lang
			if err := p.HandleEvent(context.Background(), ev); err != nil {
				t.Fatalf("%s %s: %v", ev.Type, lang, err)
			}
			if lang == "en" {
				for k, text := range want {
					if strings.HasPrefix(k, "mail:"+ev.ID+":") {
						_, body := parse(t, host.subs[k])
						if !strings.Contains(body, text) {
							t.Errorf("%s: body lacks %q:\n%s", k, text, body)
						}
					}
				}
			}
		}
	}
	if len(host.subs) != len(want) {
		t.Errorf("%d mails, want %d: %v", len(host.subs), len(want), host.subs)
	}
	// A template missing a required attribute fails clearly.
	err := p.HandleEvent(context.Background(), sdk.Event{ID: "9", Type: "webmailbox.activation", Recipient: "bob@x.example"})
	if err == nil || !strings.Contains(err.Error(), `map has no entry for key "link"`) {
		t.Errorf("missing link: %v", err)
	}
}

func TestTemplateDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "webmailbox.activation.en.tmpl"), []byte("Subject: Custom {{.Organization}}\n\nGo to {{.Attr.link}} now.\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "custom.thing.en.tmpl"), []byte("Subject: thing\n\n{{.Event.Recipient}}\n"), 0o644)
	host := &fakeHost{}
	p := configure(t, map[string]any{"from": "n@example.org", "organization": "Org", "template_dir": dir, "mail_events": []string{"webmailbox.*", "custom.thing"}}, host)
	p.HandleEvent(context.Background(), sdk.Event{ID: "1", Type: "webmailbox.activation", Recipient: "b@x.example", Attributes: map[string]string{"link": "L"}})
	m, body := parse(t, host.subs["mail:1:b@x.example"])
	if m.Header.Get("Subject") != "Custom Org" || body != "Go to L now.\n" {
		t.Errorf("override: %q %q", m.Header.Get("Subject"), body)
	}
	// German still built in.
	p.HandleEvent(context.Background(), sdk.Event{ID: "2", Type: "webmailbox.activation", Recipient: "b@x.example", Language: "de", Attributes: map[string]string{"link": "L"}})
	if _, body := parse(t, host.subs["mail:2:b@x.example"]); !strings.Contains(body, "Webpostfach") {
		t.Errorf("de: %q", body)
	}
	// smime.* is not in mail_events: no mail.
	p.HandleEvent(context.Background(), sdk.Event{ID: "3", Type: "smime.cert_expiring", Recipient: "b@x.example", Attributes: map[string]string{"subject": "x", "not_after": "y"}})
	if _, ok := host.subs["mail:3:b@x.example"]; ok {
		t.Error("smime mail sent although not selected")
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bad.en.tmpl"), []byte("Subject: {{.Nope"), 0o644)
	for _, tc := range []struct {
		cfg map[string]any
		key string
	}{
		{map[string]any{}, "from"},
		{map[string]any{"from": "Name <a@b.example>"}, "from"},
		{map[string]any{"from": "a@b.example", "default_language": "fr"}, "default_language"},
		{map[string]any{"from": "a@b.example", "colour": "blue"}, "colour"},
		{map[string]any{"from": "a@b.example", "template_dir": dir}, "template_dir"},
		{map[string]any{"from": "a@b.example", "mail_events": []string{"bounced"}}, "mail_events[0]"},
		{map[string]any{"from": "a@b.example", "webhook": []any{map[string]any{"url": "ftp://x", "secret": "s"}}}, "webhook[0].url"},
		{map[string]any{"from": "a@b.example", "webhook": []any{map[string]any{"url": "https://x"}}}, "webhook[0].secret"},
		{map[string]any{"from": "a@b.example", "webhook": []any{map[string]any{"url": "https://x", "secret": "s", "timeout": "soon"}}}, "webhook[0].timeout"},
		{map[string]any{"from": "a@b.example", "webhook": []any{map[string]any{"url": "https://x", "secret_file": "nope"}}}, "webhook[0].secret_file"},
		{map[string]any{"from": "a@b.example", "webhook": []any{map[string]any{"url": "https://x", "secret": "s", "attempts": 99}}}, "webhook[0].attempts"},
	} {
		js, _ := json.Marshal(tc.cfg)
		err := (&Plugin{}).Configure(context.Background(), sdk.Config{JSON: js, DataDir: t.TempDir()})
		var ce *sdk.ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%s: %v, want a config error for %s", js, err, tc.key)
		}
	}
}

// hookServer is a webhook receiver on 127.0.0.1 that verifies
// signatures and fails the first fail requests with 500.
type hookServer struct {
	*httptest.Server
	mu       sync.Mutex
	fail     int
	status   int
	requests int
	payloads []Payload
	errs     []error
}

func newHookServer(t *testing.T, secret string, fail int) *hookServer {
	h := &hookServer{fail: fail, status: 200}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.requests++
		if err := Verify([]byte(secret), r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
			h.errs = append(h.errs, err)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || r.Header.Get(HeaderEventID) == "" {
			h.errs = append(h.errs, errors.New("bad request "+r.Method))
		}
		if h.fail > 0 {
			h.fail--
			http.Error(w, "try later", http.StatusInternalServerError)
			return
		}
		var p Payload
		if err := json.Unmarshal(body, &p); err != nil {
			h.errs = append(h.errs, err)
		}
		h.payloads = append(h.payloads, p)
		w.WriteHeader(h.status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) snapshot() (int, []Payload, []error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests, append([]Payload(nil), h.payloads...), append([]error(nil), h.errs...)
}

func TestWebhook(t *testing.T) {
	srv := newHookServer(t, "s3cret", 2)
	other := newHookServer(t, "other", 0)
	var slept []time.Duration
	host := &fakeHost{}
	p := configure(t, map[string]any{
		"from": "n@example.org",
		"webhook": []any{
			map[string]any{"url": srv.URL + "/hook", "secret": "s3cret", "events": []string{"bounced", "webmailbox.*"}},
			map[string]any{"url": other.URL, "secret": "other", "events": []string{"delivered"}},
		},
	}, host)
	p.sleep = func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }

	ev := sdk.Event{ID: "b1", Type: "bounced", QueueID: "Q9", Sender: "a@example.org", Recipient: "x@y.example",
		Time: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC), Attributes: map[string]string{"reason": "550 no such user"}, Language: "de"}
	if err := p.HandleEvent(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	n, got, errs := srv.snapshot()
	if len(errs) > 0 || n != 3 || len(got) != 1 {
		t.Fatalf("%d requests, payloads %+v, errors %v", n, got, errs)
	}
	want := Payload{ID: "b1", Type: "bounced", Time: ev.Time, QueueID: "Q9", Sender: "a@example.org", Recipient: "x@y.example",
		Attributes: map[string]string{"reason": "550 no such user"}, Language: "de"}
	if g := got[0]; g.ID != want.ID || g.Type != want.Type || !g.Time.Equal(want.Time) || g.QueueID != want.QueueID ||
		g.Attributes["reason"] != want.Attributes["reason"] || g.Recipient != want.Recipient {
		t.Errorf("payload %+v", g)
	}
	if len(slept) != 2 || slept[0] != 500*time.Millisecond || slept[1] != time.Second {
		t.Errorf("backoff %v", slept)
	}
	if n, _, _ := other.snapshot(); n != 0 {
		t.Errorf("unsubscribed webhook got %d requests", n)
	}
	if len(host.subs) != 0 {
		t.Errorf("bounced sent mail")
	}

	// Always failing: bounded attempts, then an error (the host
	// redelivers later).
	srv.mu.Lock()
	srv.fail = 100
	srv.mu.Unlock()
	err := p.HandleEvent(context.Background(), sdk.Event{ID: "b2", Type: "bounced"})
	if err == nil || !strings.Contains(err.Error(), "HTTP 500") {
		t.Errorf("failing webhook: %v", err)
	}
	if n, _, _ := srv.snapshot(); n != 3+4 {
		t.Errorf("%d requests, want 4 attempts more", n-3)
	}

	// A permanent refusal is not retried and not an error.
	srv.mu.Lock()
	srv.fail, srv.status = 0, http.StatusGone
	srv.mu.Unlock()
	if err := p.HandleEvent(context.Background(), sdk.Event{ID: "b3", Type: "bounced"}); err != nil {
		t.Errorf("410: %v", err)
	}
	if n, _, _ := srv.snapshot(); n != 8 {
		t.Errorf("410 retried: %d", n)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"x"}`)
	sig := Sign([]byte("k"), "1800000000", body)
	if err := Verify([]byte("k"), "1800000000", sig, body, now, time.Minute); err != nil {
		t.Error(err)
	}
	for name, err := range map[string]error{
		"other key":  Verify([]byte("j"), "1800000000", sig, body, now, time.Minute),
		"other body": Verify([]byte("k"), "1800000000", sig, []byte(`{"id":"y"}`), now, time.Minute),
		"replayed":   Verify([]byte("k"), "1800000000", sig, body, now.Add(time.Hour), time.Minute),
		"other time": Verify([]byte("k"), "1800000001", sig, body, now, time.Minute),
		"bad time":   Verify([]byte("k"), "soon", sig, body, now, time.Minute),
	} {
		if err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}
