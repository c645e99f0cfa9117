package pgp_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/posthorn/posthorn/plugins/pgp"
	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/testbed/ca"
)

// TestKeyserver: VKS and HKP lookups over HTTPS, cached for the TTL,
// a key for another address refused, misses cached too.
func TestKeyserver(t *testing.T) {
	c, err := ca.New("keyserver CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := c.Issue("keys.example.net")
	caFile, _ := c.WriteCAFile(t.TempDir())
	dave, _ := pgpmail.Generate("dave@partner.test", pgpmail.GenerateOptions{})
	daveArm, _ := pgpmail.Armor(dave, false)
	mallory, _ := pgpmail.Generate("mallory@evil.test", pgpmail.GenerateOptions{})
	malArm, _ := pgpmail.Armor(mallory, false)
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		var who string
		switch {
		case strings.HasPrefix(r.URL.Path, "/vks/v1/by-email/"):
			who = strings.TrimPrefix(r.URL.Path, "/vks/v1/by-email/")
		case r.URL.Path == "/pks/lookup" && r.URL.Query().Get("op") == "get":
			who = r.URL.Query().Get("search")
		}
		switch who {
		case "dave@partner.test":
			w.Write(daveArm)
		case "eve@partner.test":
			w.Write(malArm) // a key without Eve's address
		default:
			http.NotFound(w, r)
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	ctx := context.Background()

	for _, proto := range []string{"vks", "hkp"} {
		var skew atomic.Int64 // the test's clock: time.Now() + skew
		p := &pgp.Plugin{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }}
		cfg := `{"discovery":["local","keyserver"],"keyserver":"https://keys.example.net","keyserver_protocol":"` + proto +
			`","ca_file":"` + caFile + `","resolve":{"keys.example.net":"` + addr + `"},"cache_ttl":"1h","miss_ttl":"1h"}`
		if err := p.Configure(ctx, sdk.Config{JSON: []byte(cfg), DataDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
		hits.Store(0)
		rcpts := []sdk.Recipient{{Address: "dave@partner.test"}, {Address: "eve@partner.test"}, {Address: "nobody@partner.test"}}
		ans, err := p.CanHandle(ctx, &sdk.Envelope{}, rcpts)
		if err != nil || !ans[0].CanHandle || !strings.Contains(ans[0].Reason, "(keyserver)") || ans[1].CanHandle || ans[2].CanHandle {
			t.Fatalf("%s: %+v %v", proto, ans, err)
		}
		if n := hits.Load(); n != 3 {
			t.Errorf("%s: %d requests, want 3", proto, n)
		}
		// Within the TTL: no requests at all (keys and misses cached).
		p.CanHandle(ctx, &sdk.Envelope{}, rcpts)
		if n := hits.Load(); n != 3 {
			t.Errorf("%s: %d requests after a cached round, want 3", proto, n)
		}
		// After the TTL: looked up again.
		skew.Store(int64(2 * time.Hour))
		p.CanHandle(ctx, &sdk.Envelope{}, rcpts)
		if n := hits.Load(); n != 6 {
			t.Errorf("%s: %d requests after the TTL, want 6", proto, n)
		}
	}
}

// TestSlowLookupFinishesForNextTime: the hook gives up before a slow
// keyserver answers; the lookup goes on and the next call finds the key.
func TestSlowLookupFinishesForNextTime(t *testing.T) {
	c, _ := ca.New("slow CA")
	cert, _ := c.Issue("slow.example.net")
	caFile, _ := c.WriteCAFile(t.TempDir())
	k, _ := pgpmail.Generate("gina@partner.test", pgpmail.GenerateOptions{})
	arm, _ := pgpmail.Armor(k, false)
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		time.Sleep(600 * time.Millisecond) // the slow keyserver is what is tested
		w.Write(arm)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	p := &pgp.Plugin{}
	cfg := `{"discovery":["keyserver"],"keyserver":"https://slow.example.net","ca_file":"` + caFile +
		`","resolve":{"slow.example.net":"` + srv.Listener.Addr().String() + `"},"lookup_timeout":"5s"}`
	if err := p.Configure(context.Background(), sdk.Config{JSON: []byte(cfg), DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	defer p.Configure(context.Background(), sdk.Config{JSON: []byte(`{}`), DataDir: t.TempDir()})
	rc := []sdk.Recipient{{Address: "gina@partner.test"}}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	_, err := p.CanHandle(ctx, &sdk.Envelope{}, rc)
	cancel()
	if err != context.DeadlineExceeded {
		t.Fatalf("first call: %v", err)
	}
	// A second caller joins the lookup under way instead of starting one.
	ans, err := p.CanHandle(context.Background(), &sdk.Envelope{}, rc)
	if err != nil || !ans[0].CanHandle {
		t.Fatalf("second call: %+v %v", ans, err)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}
