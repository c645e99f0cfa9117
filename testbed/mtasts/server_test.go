package mtasts

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func get(t *testing.T, s *Server, domain string) *http.Response {
	t.Helper()
	resp, err := s.Client().Get("https://mta-sts." + domain + WellKnownPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestPolicies(t *testing.T) {
	s := start(t)
	p := Policy("enforce", 86400, "mx.example.org", "*.example.net")
	if p != "version: STSv1\r\nmode: enforce\r\nmx: mx.example.org\r\nmx: *.example.net\r\nmax_age: 86400\r\n" {
		t.Fatalf("policy %q", p)
	}
	s.SetPolicy("example.org", p)
	s.SetPolicy("Other.Example.", Policy("testing", 60, "mx.other.example"))
	ctx := context.Background()
	got, err := s.Fetch(ctx, "example.org")
	if err != nil || got != p {
		t.Fatalf("fetch: %q %v", got, err)
	}
	got, err = s.Fetch(ctx, "other.example")
	if err != nil || !strings.Contains(got, "mode: testing") {
		t.Fatalf("fetch other: %q %v", got, err)
	}
	if _, err := s.Fetch(ctx, "nope.example"); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("missing: %v", err)
	}
	s.RemovePolicy("example.org")
	if _, err := s.Fetch(ctx, "example.org"); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("removed: %v", err)
	}
	if resp := get(t, s, "other.example"); resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	reqs := s.Requests()
	if len(reqs) != 5 || reqs[0].Host != "mta-sts.example.org" || reqs[0].SNI != "mta-sts.example.org" || reqs[0].Status != 200 || reqs[2].Status != 404 {
		t.Fatalf("requests %+v", reqs)
	}
	if u := s.URL("example.org"); !strings.HasPrefix(u, "https://mta-sts.example.org:") || !strings.HasSuffix(u, WellKnownPath) {
		t.Fatalf("URL %s", u)
	}
}

func TestMisbehaviours(t *testing.T) {
	s := start(t)
	p := Policy("enforce", 86400, "mx.example.org")
	for _, d := range []string{"status.test", "redirect.test", "huge.test", "slow.test", "ctype.test"} {
		s.SetPolicy(d, p)
	}
	s.SetBehaviour("status.test", Behaviour{Status: 500})
	s.SetBehaviour("redirect.test", Behaviour{RedirectTo: "https://elsewhere.test/policy"})
	s.SetBehaviour("huge.test", Behaviour{HugeBody: 1 << 20})
	s.SetBehaviour("slow.test", Behaviour{SlowBody: 200 * time.Millisecond})
	s.SetBehaviour("ctype.test", Behaviour{ContentType: "text/html"})

	if r := get(t, s, "status.test"); r.StatusCode != 500 {
		t.Fatalf("status %d", r.StatusCode)
	}
	if r := get(t, s, "redirect.test"); r.StatusCode != 301 || r.Header.Get("Location") != "https://elsewhere.test/policy" {
		t.Fatalf("redirect %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	r := get(t, s, "huge.test")
	body, _ := io.ReadAll(r.Body)
	if len(body) != 1<<20 || !strings.HasPrefix(string(body), p) {
		t.Fatalf("huge: %d bytes", len(body))
	}
	t0 := time.Now()
	r = get(t, s, "slow.test")
	body, _ = io.ReadAll(r.Body)
	if string(body) != p || time.Since(t0) < 150*time.Millisecond {
		t.Fatalf("slow: %q after %v", body, time.Since(t0))
	}
	if r := get(t, s, "ctype.test"); r.Header.Get("Content-Type") != "text/html" {
		t.Fatalf("ctype %q", r.Header.Get("Content-Type"))
	}
}

func TestCertificates(t *testing.T) {
	s := start(t)
	for _, d := range []string{"expired.test", "wrong.test", "self.test", "good.test"} {
		s.SetPolicy(d, Policy("enforce", 60, "mx."+d))
	}
	s.SetBehaviour("expired.test", Behaviour{Cert: CertExpired})
	s.SetBehaviour("wrong.test", Behaviour{Cert: CertWrongName})
	s.SetBehaviour("self.test", Behaviour{Cert: CertSelfSigned})
	ctx := context.Background()
	for d, want := range map[string]string{"expired.test": "expired", "wrong.test": "not mta-sts.wrong.test", "self.test": "unknown authority"} {
		if _, err := s.Fetch(ctx, d); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", d, err, want)
		}
	}
	if _, err := s.Fetch(ctx, "good.test"); err != nil {
		t.Fatal(err)
	}
}
