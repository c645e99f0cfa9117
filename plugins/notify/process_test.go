package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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

	"github.com/posthorn/posthorn/plugins/notify"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
	"github.com/posthorn/posthorn/sdk/plugintest"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pl")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, err = plugintest.BuildIn(dir, "./cmd/posthorn-notify")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestConformance(t *testing.T) {
	plugintest.Run(t, bin, plugintest.Options{
		Config: map[string]any{"from": "postmaster@example.test"},
	})
}

// api is the host side standing in for the queue.
type api struct {
	mu   sync.Mutex
	keys map[string]string
	got  chan queued
}

type queued struct {
	key string
	env *sdk.Envelope
	msg []byte
}

func (a *api) Submit(_ context.Context, s hostside.Submission) (hostside.SubmitResult, error) {
	a.mu.Lock()
	id, dup := a.keys[s.IdempotencyKey]
	a.mu.Unlock()
	if dup {
		return hostside.SubmitResult{QueueID: id, Duplicate: true}, nil
	}
	b, err := io.ReadAll(s.Body)
	if err != nil {
		return hostside.SubmitResult{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	id = fmt.Sprintf("Q%d", len(a.keys)+1)
	a.keys[s.IdempotencyKey] = id
	a.got <- queued{s.IdempotencyKey, s.Envelope, b}
	return hostside.SubmitResult{QueueID: id}, nil
}

func (a *api) Emit(context.Context, sdk.Event) error           { return nil }
func (a *api) Confirm(context.Context, sdk.Confirmation) error { return nil }

// host is the notify plugin running under the SDK's host side.
type host struct {
	t *testing.T
	c *hostside.Client
}

// Emit delivers ev to the plugin, stamped with the time as the MTA's
// event fan-out does.
func (h host) Emit(ev sdk.Event) {
	h.t.Helper()
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if err := h.c.DeliverEvent(context.Background(), ev); err != nil {
		h.t.Fatalf("DeliverEvent %s: %v", ev.ID, err)
	}
}

func (a *api) next(t *testing.T) queued {
	t.Helper()
	select {
	case q := <-a.got:
		return q
	case <-time.After(15 * time.Second):
		t.Fatal("no submission")
	}
	return queued{}
}

func startNotify(t *testing.T, cfg map[string]any) (host, *api) {
	t.Helper()
	a := &api{keys: map[string]string{}, got: make(chan queued, 20)}
	c := plugintest.Start(t, bin, hostside.Options{Name: "notify", Logger: plugintest.TestLogger(t, slog.LevelWarn)})
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Configure(ctx, js, filepath.Join(t.TempDir(), "notify"), a); err != nil {
		t.Fatal(err)
	}
	return host{t, c}, a
}

func TestLocalizedMailThroughHost(t *testing.T) {
	h, a := startNotify(t, map[string]any{"from": "secure@example.org", "from_name": "Beispiel Sicherheit", "default_language": "en"})
	if info, err := h.c.Describe(context.Background()); err != nil || info.Version != notify.Version {
		t.Fatalf("describe %+v %v", info, err)
	}
	attrs := map[string]string{"link": "https://secure.example.org/activate/abc123", "expires": "2026-12-08T09:30:00Z"}
	h.Emit(sdk.Event{ID: "act-1", Type: "webmailbox.activation", Sender: "alice@example.org", Recipient: "bob@partner.example",
		Language: "de-DE", Attributes: attrs, SourcePlugin: "webmailbox"})
	h.Emit(sdk.Event{ID: "act-2", Type: "webmailbox.activation", Sender: "alice@example.org", Recipient: "carol@partner.example",
		Attributes: attrs})

	mails := map[string]queued{}
	for range 2 {
		q := a.next(t)
		mails[q.env.Recipients[0].Address] = q
	}
	for _, tc := range []struct {
		rcpt, key, lang, subject string
		body                     []string
	}{
		{"bob@partner.example", "mail:act-1:bob@partner.example", "de",
			"Eine verschlüsselte Nachricht für Sie von alice@example.org",
			[]string{"Guten Tag,", "richten Sie bitte Ihr sicheres Webpostfach ein", "  https://secure.example.org/activate/abc123\n", "Der Link ist gültig bis 08.12.2026, 09:30 UTC."}},
		{"carol@partner.example", "mail:act-2:carol@partner.example", "en",
			"An encrypted message for you from alice@example.org",
			[]string{"Hello,", "set up your secure web mailbox", "  https://secure.example.org/activate/abc123\n", "The link is valid until 8 December 2026, 09:30 UTC."}},
	} {
		q, ok := mails[tc.rcpt]
		if !ok {
			t.Fatalf("no mail to %s", tc.rcpt)
		}
		if q.key != tc.key || q.env.MailFrom != "secure@example.org" || len(q.env.Recipients) != 1 {
			t.Errorf("%s: key %q envelope %+v", tc.rcpt, q.key, q.env)
		}
		m, err := mail.ReadMessage(strings.NewReader(string(q.msg)))
		if err != nil {
			t.Fatal(err)
		}
		subj, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
		if err != nil || subj != tc.subject {
			t.Errorf("%s: Subject %q, want %q", tc.rcpt, subj, tc.subject)
		}
		from, err := m.Header.AddressList("From")
		if err != nil || from[0].Name != "Beispiel Sicherheit" || from[0].Address != "secure@example.org" {
			t.Errorf("%s: From %v %v", tc.rcpt, from, err)
		}
		for name, want := range map[string]string{
			"To": "<" + tc.rcpt + ">", "Content-Language": tc.lang, "Auto-Submitted": "auto-generated",
			"Content-Type": "text/plain; charset=utf-8", "Content-Transfer-Encoding": "quoted-printable",
			"Mime-Version": "1.0", "X-Posthorn-Event": "webmailbox.activation",
		} {
			if got := m.Header.Get(name); got != want {
				t.Errorf("%s: %s: %q, want %q", tc.rcpt, name, got, want)
			}
		}
		if _, err := m.Header.Date(); err != nil || m.Header.Get("Message-Id") == "" {
			t.Errorf("%s: Date/Message-ID: %v", tc.rcpt, err)
		}
		raw, err := io.ReadAll(quotedprintable.NewReader(m.Body))
		if err != nil {
			t.Fatal(err)
		}
		body := strings.ReplaceAll(string(raw), "\r\n", "\n")
		for _, want := range tc.body {
			if !strings.Contains(body, want) {
				t.Errorf("%s: body lacks %q:\n%s", tc.rcpt, want, body)
			}
		}
	}

	// The same event again (a redelivery): the host sees the same key and
	// queues nothing new.
	h.Emit(sdk.Event{ID: "act-1", Type: "webmailbox.activation", Sender: "alice@example.org", Recipient: "bob@partner.example",
		Language: "de", Attributes: attrs})
	// The PIN goes to the sender.
	h.Emit(sdk.Event{ID: "pin-1", Type: "webmailbox.pin", Sender: "alice@example.org", Recipient: "bob@partner.example",
		Language: "en", Attributes: map[string]string{"pin": "831277"}})
	q := a.next(t)
	if q.key != "mail:pin-1:alice@example.org" || !strings.Contains(string(q.msg), "831277") {
		t.Errorf("pin mail %q\n%s", q.key, q.msg)
	}
	select {
	case q := <-a.got:
		t.Errorf("unexpected submission %q", q.key)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestWebhookThroughHost(t *testing.T) {
	const secret = "hook-secret"
	var mu sync.Mutex
	var calls int
	got := make(chan notify.Payload, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify([]byte(secret), r.Header.Get(notify.HeaderTimestamp), r.Header.Get(notify.HeaderSignature), body, time.Now(), time.Minute); err != nil {
			t.Errorf("signature: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var p notify.Payload
		if err := json.Unmarshal(body, &p); err != nil {
			t.Error(err)
		}
		got <- p
	}))
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("server on %s", srv.URL)
	}
	h, a := startNotify(t, map[string]any{
		"from": "secure@example.org",
		"webhook": []any{map[string]any{
			"url": srv.URL + "/posthorn", "secret": secret, "events": []any{"bounced", "deferred"}, "timeout": "5s",
		}},
	})
	h.Emit(sdk.Event{ID: "ev-77", Type: sdk.EventBounced, QueueID: "Q123", Sender: "alice@example.org", Recipient: "nobody@partner.example",
		Attributes: map[string]string{"reason": "550 5.1.1 no such user"}})
	h.Emit(sdk.Event{ID: "ev-78", Type: sdk.EventDelivered, QueueID: "Q124"}) // not selected
	select {
	case p := <-got:
		if p.ID != "ev-77" || p.Type != "bounced" || p.QueueID != "Q123" || p.Recipient != "nobody@partner.example" ||
			p.Attributes["reason"] != "550 5.1.1 no such user" || p.Time.IsZero() {
			t.Errorf("payload %+v", p)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("webhook not called")
	}
	mu.Lock()
	n := calls
	mu.Unlock()
	if n != 2 {
		t.Errorf("%d calls, want a retry after the 500", n)
	}
	select {
	case p := <-got:
		t.Errorf("unexpected webhook %+v", p)
	case q := <-a.got:
		t.Errorf("unexpected mail %q", q.key)
	case <-time.After(300 * time.Millisecond):
	}
}
