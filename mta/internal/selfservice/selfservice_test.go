package selfservice

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/mta/internal/auth"
	"github.com/posthorn/posthorn/mta/internal/directory"
)

// TestFormsWithoutScriptAndCSRF: the pages carry no script, a settings
// change without the session's CSRF token is refused, and one with it is
// stored.
func TestFormsWithoutScriptAndCSRF(t *testing.T) {
	ctx := context.Background()
	s, err := directory.OpenSQLite(ctx, filepath.Join(t.TempDir(), "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := directory.New(ctx, s, directory.Options{CacheSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	w, _ := dir.Writer()
	h, _ := auth.Hash("bob's password")
	if err := w.PutDomain(ctx, directory.Domain{Name: "example.org"}); err != nil {
		t.Fatal(err)
	}
	if err := w.PutMailbox(ctx, "bob@example.org", h); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(New(Config{Dir: dir, Auth: dir, Subdomain: "secure", DefaultLevel: "encrypt", FailDelay: 1}))
	defer srv.Close()
	jar, _ := cookiejar.New(nil)
	c := srv.Client()
	c.Jar = jar
	get := func(resp *http.Response, err error) (int, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if strings.Contains(strings.ToLower(string(b)), "<script") {
			t.Errorf("%s has a script", resp.Request.URL)
		}
		return resp.StatusCode, string(b)
	}
	get(c.Get(srv.URL + "/"))
	code, page := get(c.PostForm(srv.URL+"/login", url.Values{"address": {"bob@example.org"}, "password": {"bob's password"}}))
	if code != 200 || !strings.Contains(page, "bob@secure.example.org") {
		t.Fatalf("login: %d\n%s", code, page)
	}
	if code, _ := get(c.PostForm(srv.URL+"/settings", url.Values{"secure": {"on"}, "level": {"verify"}, "csrf": {"forged"}})); code != http.StatusForbidden {
		t.Errorf("forged CSRF token: status %d", code)
	}
	if a, _ := dir.Address(ctx, "bob@example.org"); a.SecureAlias {
		t.Fatal("a forged form changed the setting")
	}
	i := strings.Index(page, `name="csrf" value="`)
	tok := page[i+len(`name="csrf" value="`):]
	tok = tok[:strings.IndexByte(tok, '"')]
	if code, page := get(c.PostForm(srv.URL+"/settings", url.Values{"secure": {"on"}, "level": {"may"}, "csrf": {tok}})); code != http.StatusBadRequest {
		t.Errorf("level may: status %d\n%s", code, page)
	}
	if code, _ := get(c.PostForm(srv.URL+"/settings", url.Values{"secure": {"on"}, "level": {"verify"}, "csrf": {tok}})); code != 200 {
		t.Errorf("save: status %d", code)
	}
	if a, _ := dir.Address(ctx, "bob@example.org"); !a.SecureAlias || a.SecureLevel != "verify" {
		t.Errorf("not stored: %+v", a)
	}
	if code, _ := get(c.PostForm(srv.URL+"/login", url.Values{"address": {"bob@example.org"}, "password": {"wrong"}})); code != http.StatusUnauthorized {
		t.Errorf("wrong password: status %d", code)
	}
}

// TestGuardThrottles: with a guard (the SMTP server's AuthGuard in the
// daemon), a throttled client is refused with 429 and its password is
// not checked.
func TestGuardThrottles(t *testing.T) {
	checked := false
	srv := httptest.NewTLSServer(New(Config{Guard: func(ctx context.Context, ip net.IP, user, pw string) (bool, bool, error) {
		if ip == nil {
			t.Error("no client address given to the guard")
		}
		return false, true, nil
	}, Auth: authFunc(func() { checked = true }), FailDelay: 1}))
	defer srv.Close()
	resp, err := srv.Client().PostForm(srv.URL+"/login", url.Values{"address": {"a@example.org"}, "password": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || checked {
		t.Errorf("throttled login: status %d, password checked %v", resp.StatusCode, checked)
	}
}

type authFunc func()

func (f authFunc) Authenticate(context.Context, string, string) (bool, error) { f(); return true, nil }
