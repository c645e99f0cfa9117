package webmailbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

// fakeHost records what the plugin sends to the host.
type fakeHost struct {
	mu     sync.Mutex
	events []sdk.Event
	subs   []submission
	confs  []sdk.Confirmation
	// failEmits makes the next n Emit calls fail.
	failEmits int
	// unknown lists addresses the host rejects as not existing.
	unknown map[string]bool
	// failSubmits makes Submit fail as if the host were down.
	failSubmits bool
}

type submission struct {
	key  string
	env  *sdk.Envelope
	body string
}

func (h *fakeHost) Submit(_ context.Context, key string, env *sdk.Envelope, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range env.Recipients {
		if h.unknown[r.Address] {
			return "", fmt.Errorf("sdk: Host.Submit: %w: %s: no such user", sdk.ErrUnknownRecipient, r.Address)
		}
	}
	if h.failSubmits {
		return "", errors.New("sdk: Host.Submit: rpc error: code = Unavailable")
	}
	h.subs = append(h.subs, submission{key, env, string(b)})
	return "Q1", nil
}

func (h *fakeHost) Emit(_ context.Context, ev sdk.Event) error {
	if err := ev.ValidateEmitted(); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failEmits > 0 {
		h.failEmits--
		return errors.New("host busy")
	}
	h.events = append(h.events, ev)
	return nil
}

func (h *fakeHost) Confirm(_ context.Context, c sdk.Confirmation) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.confs = append(h.confs, c)
	return nil
}

func (h *fakeHost) eventsOf(typ string) []sdk.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []sdk.Event
	for _, e := range h.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func (h *fakeHost) submissions() []submission {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]submission(nil), h.subs...)
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t     *testing.T
	p     *Plugin
	sv    *Service
	host  *fakeHost
	clock *clock
	dir   string
	srv   *httptest.Server
	seq   int
	logs  *logBuffer // what the plugin logged
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func baseConfig() map[string]any {
	return map[string]any{
		"base_url":           "https://mail.example.org/box",
		"allowed_recipients": []string{"*@org.example", "boss@partner.example"},
		"kdf":                map[string]any{"time": 1, "memory_kib": 1024, "threads": 1},
	}
}

// newEnv configures the plugin in-process with cfg (baseConfig() plus
// changes) and serves its web interface over TLS on 127.0.0.1.
// prepare, if given, runs on the data dir before Configure.
func newEnv(t *testing.T, change func(map[string]any), prepare ...func(dataDir string)) *env {
	t.Helper()
	return newEnvDB(t, nil, change, prepare...)
}

// newEnvDB is newEnv with the store in the shared database db (nil:
// SQLite in the data dir).
func newEnvDB(t *testing.T, db *sdk.Database, change func(map[string]any), prepare ...func(dataDir string)) *env {
	t.Helper()
	cfg := baseConfig()
	if change != nil {
		change(cfg)
	}
	js, _ := json.Marshal(cfg)
	e := &env{t: t, host: &fakeHost{}, dir: t.TempDir(), clock: &clock{t: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)}, logs: &logBuffer{}}
	var out io.Writer = e.logs
	if testing.Verbose() {
		out = io.MultiWriter(e.logs, os.Stderr)
	}
	e.p = &Plugin{Logger: slog.New(slog.NewTextHandler(out, nil)), Now: e.clock.Now}
	for _, f := range prepare {
		f(e.dir)
	}
	if err := e.p.Configure(context.Background(), sdk.Config{JSON: js, DataDir: e.dir, Host: e.host, Database: db}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	t.Cleanup(func() {
		e.p.mu.Lock()
		e.p.shutdownLocked()
		e.p.mu.Unlock()
	})
	e.sv = e.p.svc
	e.srv = httptest.NewUnstartedServer(e.sv.Handler())
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

const testMsg = "From: Alice Sender <alice@org.example>\r\n" +
	"To: bob@partner.test\r\n" +
	"Subject: Quarterly figures SECRETSUBJECT\r\n" +
	"Message-ID: <m1@org.example>\r\n" +
	"Date: Tue, 24 Nov 2026 09:00:00 +0000\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=XYZ\r\n" +
	"\r\n" +
	"--XYZ\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Dear Bob, the figures are SECRETBODY. Grüße\r\n" +
	"--XYZ\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"\r\n" +
	"<p>Dear Bob <script>alert(1)</script><img src=\"https://tracker.example/x.gif\"></p>\r\n" +
	"--XYZ\r\n" +
	"Content-Type: application/pdf; name=\"figures.pdf\"\r\n" +
	"Content-Disposition: attachment; filename=\"figures.pdf\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"JVBERi0xLjQKU0VDUkVUQVRUQUNI\r\n" +
	"--XYZ--\r\n"

// divert runs Transform for rcpts like the host does.
func (e *env) divert(msg string, rcpts ...string) sdk.OutboundResult {
	e.t.Helper()
	e.seq++
	en := &sdk.Envelope{ID: fmt.Sprintf("Q%d", e.seq), MailFrom: "alice@org.example"}
	for _, r := range rcpts {
		en.Recipients = append(en.Recipients, sdk.Recipient{Address: r})
	}
	ans, err := e.p.CanHandle(context.Background(), en, en.Recipients)
	if err != nil || len(ans) != len(rcpts) || !ans[0].CanHandle {
		e.t.Fatalf("CanHandle = %v, %v", ans, err)
	}
	res, err := e.p.Transform(context.Background(), en, en.Recipients, strings.NewReader(msg))
	if err != nil {
		e.t.Fatalf("Transform: %v", err)
	}
	return res
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects.
type browser struct {
	t   *testing.T
	e   *env
	c   *http.Client
	url string
	// ip, when set, is sent as X-Real-IP (for envs configured with
	// client_ip_header = "X-Real-IP"): a client at another address.
	ip string
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := *e.srv.Client() // a client of its own: its own cookie jar
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: e.t, e: e, c: &c, url: e.srv.URL}
}

type resp struct {
	code int
	body string
	h    http.Header
	loc  string
}

func (b *browser) do(req *http.Request) resp {
	b.t.Helper()
	if b.ip != "" {
		req.Header.Set("X-Real-IP", b.ip)
	}
	r, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, string(body), r.Header, r.Header.Get("Location")}
}

func (b *browser) get(path string) resp {
	b.t.Helper()
	req, _ := http.NewRequest("GET", b.url+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) resp {
	b.t.Helper()
	req, _ := http.NewRequest("POST", b.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf fetches path and returns the page's CSRF token.
func (b *browser) csrf(path string) string {
	b.t.Helper()
	r := b.get(path)
	m := csrfRE.FindStringSubmatch(r.body)
	if m == nil {
		b.t.Fatalf("GET %s (%d): no csrf field in %s", path, r.code, r.body)
	}
	return m[1]
}

// activationLink returns the path+query of the last activation link.
func (e *env) activationLink(addr string) string {
	e.t.Helper()
	evs := e.host.eventsOf("webmailbox.activation")
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Recipient == addr {
			u, err := url.Parse(evs[i].Attributes["link"])
			if err != nil {
				e.t.Fatal(err)
			}
			return u.Path + "?" + u.RawQuery
		}
	}
	e.t.Fatalf("no activation event for %s", addr)
	return ""
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
