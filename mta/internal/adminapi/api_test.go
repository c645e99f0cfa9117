package adminapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/adminapi"
	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/directory"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/testbed/ca"
)

func digest(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

type apiEnv struct {
	t      *testing.T
	base   string
	client *http.Client
	q      *queue.Queue
	dir    *directory.Directory
}

// startAPI serves the API over real TLS on loopback, with a SQLite
// directory, a real queue and three tokens: "admin" (every scope),
// "reader" (directory:read) and "queue" (queue:read, queue:write).
func startAPI(t *testing.T) *apiEnv {
	t.Helper()
	tmp := t.TempDir()
	s, err := directory.OpenSQLite(context.Background(), filepath.Join(tmp, "dir.db"))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := directory.New(context.Background(), s, directory.Options{CacheSize: 100, CacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	q, err := queue.Open(queue.Options{Dir: filepath.Join(tmp, "spool")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	c, err := ca.New("API Test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Issue("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.Listen("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}}, adminapi.Config{
		Tokens: []conf.AdminToken{
			{Name: "admin", SHA256: digest("admin-token"), Scopes: []string{"*"}},
			{Name: "reader", SHA256: digest("reader-token"), Scopes: []string{"directory:read"}},
			{Name: "queue", SHA256: digest("queue-token"), Scopes: []string{"queue:read", "queue:write"}},
		},
		Dir:     dir,
		Queue:   control.New(q, slog.New(slog.DiscardHandler)),
		Plugins: func() (json.RawMessage, error) { return json.RawMessage(`[{"name":"notify","state":"running"}]`), nil },
		Preflight: func(ctx context.Context, from string, to []string) (any, error) {
			return map[string]any{"from": from, "recipients": []map[string]string{{"address": to[0], "tls_level": "may"}}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return &apiEnv{t: t, base: "https://" + srv.Addr(), q: q, dir: dir,
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.Pool(), ServerName: "localhost"}}}}
}

// call does one request and returns status and decoded JSON body.
func (e *apiEnv) call(token, method, path, body string) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, e.base+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.t.Fatalf("%s %s: not JSON: %q", method, path, raw)
		}
	}
	if resp.StatusCode >= 400 {
		ev, _ := out["error"].(map[string]any)
		if ev["code"] == "" || ev["message"] == "" {
			e.t.Errorf("%s %s: %d without a JSON error: %q", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

func (e *apiEnv) want(status int, token, method, path, body string) map[string]any {
	e.t.Helper()
	got, out := e.call(token, method, path, body)
	if got != status {
		e.t.Errorf("%s %s %s: status %d, want %d (%v)", method, path, body, got, status, out)
	}
	return out
}

func TestEndpoints(t *testing.T) {
	e := startAPI(t)
	const A = "admin-token"
	e.want(200, A, "GET", "/v1/domains", "")
	e.want(200, A, "PUT", "/v1/domains/Example.Test", `{}`)
	e.want(200, A, "PUT", "/v1/domains/other.test", `{"catch_all":"info","lmtp":"tcp:127.0.0.1:24"}`)
	out := e.want(200, A, "GET", "/v1/domains", "")
	if ds, _ := out["domains"].([]any); len(ds) != 2 {
		t.Errorf("domains: %v", out)
	}
	out = e.want(200, A, "PUT", "/v1/mailboxes/alice@example.test", `{"password":"alice's password"}`)
	if out["mailbox"] != true || out["address"] != "alice@example.test" {
		t.Errorf("mailbox: %v", out)
	}
	if _, leaked := out["password_hash"]; leaked {
		t.Error("the password hash is in the answer")
	}
	if ok, _ := e.dir.Authenticate(context.Background(), "alice@example.test", "alice's password"); !ok {
		t.Error("the password set by the API does not work")
	}
	e.want(200, A, "PUT", "/v1/mailboxes/bob@example.test", `{}`)
	e.want(200, A, "PUT", "/v1/aliases/team@example.test", `{"targets":["alice","bob","x@remote.example"]}`)
	out = e.want(200, A, "GET", "/v1/addresses/team@example.test", "")
	if ts, _ := out["targets"].([]any); len(ts) != 3 {
		t.Errorf("alias: %v", out)
	}
	out = e.want(200, A, "PUT", "/v1/addresses/alice@example.test/secure-alias", `{"enabled":true,"level":"dane-only"}`)
	if out["secure_alias"] != true || out["secure_level"] != "dane-only" {
		t.Errorf("secure alias: %v", out)
	}
	out = e.want(200, A, "DELETE", "/v1/addresses/alice@example.test/secure-alias", "")
	if out["secure_alias"] != false {
		t.Errorf("secure alias off: %v", out)
	}
	out = e.want(200, A, "GET", "/v1/domains/example.test/addresses?limit=2", "")
	if as, _ := out["addresses"].([]any); len(as) != 2 {
		t.Errorf("page 1: %v", out)
	}
	out = e.want(200, A, "GET", "/v1/domains/example.test/addresses?after=bob@example.test", "")
	if as, _ := out["addresses"].([]any); len(as) != 1 {
		t.Errorf("page 2: %v", out)
	}
	e.want(204, A, "DELETE", "/v1/addresses/team@example.test", "")
	e.want(404, A, "GET", "/v1/addresses/team@example.test", "")
	e.want(204, A, "DELETE", "/v1/domains/other.test", "")

	// Queue: a message held, shown, released, deleted.
	env := &queue.Envelope{ID: e.q.NewID(), From: "a@example.test", Recipients: []*queue.Recipient{{Addr: "b@remote.example"}}}
	if _, err := e.q.Enqueue(env, strings.NewReader("Subject: hi\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	out = e.want(200, A, "GET", "/v1/queue", "")
	if ms, _ := out["messages"].([]any); len(ms) != 1 {
		t.Errorf("queue: %v", out)
	}
	e.want(200, A, "GET", "/v1/queue/summary", "")
	out = e.want(200, A, "GET", "/v1/queue/"+env.ID, "")
	if !strings.Contains(out["text"].(string), "Subject: hi") {
		t.Errorf("show: %v", out)
	}
	e.want(200, A, "POST", "/v1/queue/"+env.ID+"/hold", "")
	e.want(200, A, "POST", "/v1/queue/"+env.ID+"/release", "")
	e.want(200, A, "POST", "/v1/queue/flush", "")
	e.want(200, A, "POST", "/v1/queue/"+env.ID+"/delete", "")
	e.want(404, A, "GET", "/v1/queue/"+env.ID, "")

	out = e.want(200, A, "GET", "/v1/plugins", "")
	if ps, _ := out["plugins"].([]any); len(ps) != 1 {
		t.Errorf("plugins: %v", out)
	}
	out = e.want(200, A, "GET", "/v1/preflight?from=alice@example.test&to=bob@remote.example", "")
	if _, ok := out["recipients"]; !ok {
		t.Errorf("preflight: %v", out)
	}
}

func TestScopesAndBadInput(t *testing.T) {
	e := startAPI(t)
	e.want(200, "admin-token", "PUT", "/v1/domains/example.test", `{}`)
	// Tokens and scopes.
	e.want(401, "", "GET", "/v1/domains", "")
	e.want(401, "wrong-token", "GET", "/v1/domains", "")
	e.want(200, "reader-token", "GET", "/v1/domains", "")
	e.want(403, "reader-token", "PUT", "/v1/domains/x.test", `{}`)
	e.want(403, "reader-token", "GET", "/v1/queue", "")
	e.want(200, "queue-token", "GET", "/v1/queue", "")
	e.want(403, "queue-token", "GET", "/v1/domains", "")
	e.want(403, "queue-token", "GET", "/v1/preflight?to=a@b.example", "")
	// Bad input: clear 4xx JSON errors.
	for _, c := range []struct {
		status             int
		method, path, body string
	}{
		{400, "PUT", "/v1/domains/not a domain", `{}`},
		{400, "PUT", "/v1/domains/x.test", `{"catch_all":"a@b"}`},
		{400, "PUT", "/v1/domains/x.test", `{"bogus":1}`},
		{400, "PUT", "/v1/domains/x.test", `{not json`},
		{400, "PUT", "/v1/mailboxes/no-at-sign", `{}`},
		{400, "PUT", "/v1/mailboxes/a@example.test", `{"password":"short"}`},
		{400, "PUT", "/v1/mailboxes/a@example.test", `{"password_hash":"md5:xyz"}`},
		{409, "PUT", "/v1/mailboxes/a@unknown.test", `{}`},
		{400, "PUT", "/v1/aliases/t@example.test", `{"targets":[]}`},
		{400, "PUT", "/v1/aliases/t@example.test", `{"targets":["a b"]}`},
		{404, "PUT", "/v1/addresses/ghost@example.test/secure-alias", `{"enabled":true}`},
		{400, "PUT", "/v1/addresses/ghost@example.test/secure-alias", `{"enabled":true,"level":"may"}`},
		{400, "PUT", "/v1/addresses/ghost@example.test/secure-alias", `{}`},
		{404, "DELETE", "/v1/domains/ghost.test", ""},
		{404, "GET", "/v1/domains/ghost.test/addresses", ""},
		{400, "GET", "/v1/domains/example.test/addresses?limit=0", ""},
		{404, "GET", "/v1/queue/NOSUCHID", ""},
		{400, "POST", "/v1/queue/NOSUCHID/explode", ""},
		{400, "GET", "/v1/preflight", ""},
		{400, "GET", "/v1/preflight?to=not-an-address", ""},
		{404, "GET", "/v2/anything", ""},
	} {
		e.want(c.status, "admin-token", c.method, c.path, c.body)
	}
	e.want(200, "admin-token", "PUT", "/v1/mailboxes/a@example.test", `{}`)
	e.want(409, "admin-token", "PUT", "/v1/aliases/a@example.test", `{"targets":["b"]}`)
}

// TestOpenAPIMatchesHandlers: every route is documented with its scope,
// and everything documented is routed.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(adminapi.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	documented := map[string]string{}
	param := regexp.MustCompile(`\{([a-z]+)\}`)
	for path, ops := range doc.Paths {
		for method, raw := range ops {
			var op struct {
				Scope      string `json:"x-posthorn-scope"`
				Parameters []struct {
					Name, In string
				} `json:"parameters"`
				Responses map[string]json.RawMessage `json:"responses"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			key := strings.ToUpper(method) + " " + path
			documented[key] = op.Scope
			for _, m := range param.FindAllStringSubmatch(path, -1) {
				found := false
				for _, p := range op.Parameters {
					found = found || p.In == "path" && p.Name == m[1]
				}
				if !found {
					t.Errorf("%s: path parameter %s not described", key, m[1])
				}
			}
			if _, ok := op.Responses["401"]; !ok {
				t.Errorf("%s: no 401 response documented", key)
			}
		}
	}
	srv := adminapi.New(adminapi.Config{Tokens: []conf.AdminToken{{Name: "x", SHA256: digest("x"), Scopes: []string{"*"}}}})
	routed := map[string]bool{}
	for _, r := range srv.Routes() {
		routed[r] = true
		if _, ok := documented[r]; !ok {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	var keys []string
	for k := range documented {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !routed[k] {
			t.Errorf("openapi.json documents %s, which no handler serves", k)
		}
	}
	// The scope each operation documents is the one the handler demands:
	// a token with every other scope gets 403.
	for _, k := range keys {
		method, path, _ := strings.Cut(k, " ")
		var others []string
		for _, s := range conf.AdminScopes {
			if s != documented[k] {
				others = append(others, s)
			}
		}
		srv := adminapi.New(adminapi.Config{Tokens: []conf.AdminToken{{Name: "x", SHA256: digest("x"), Scopes: others}}})
		req, _ := http.NewRequest(method, "https://x"+param.ReplaceAllString(path, "p"), nil)
		req.Header.Set("Authorization", "Bearer x")
		rec := &recorder{h: http.Header{}}
		srv.ServeHTTP(rec, req)
		if rec.status != http.StatusForbidden {
			t.Errorf("%s with every scope but %q: status %d, want 403", k, documented[k], rec.status)
		}
	}
}

type recorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(s int) { r.status = s }
