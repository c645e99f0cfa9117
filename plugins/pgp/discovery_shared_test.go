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
	"github.com/posthorn/posthorn/testbed/pgtest"
)

// TestDiscoverySharedByNodes: two plugin instances (two nodes) share a
// real PostgreSQL. A key one node found and an address it found no key
// for are both known to the other node: it asks the keyserver nothing
// until the miss expires.
func TestDiscoverySharedByNodes(t *testing.T) {
	db := pgtest.Start(t).NewShared(t)
	c, err := ca.New("keyserver CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := c.Issue("keys.example.net")
	caFile, _ := c.WriteCAFile(t.TempDir())
	dave, _ := pgpmail.Generate("dave@partner.test", pgpmail.GenerateOptions{})
	daveArm, _ := pgpmail.Armor(dave, false)
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/vks/v1/by-email/dave@partner.test" {
			w.Write(daveArm)
			return
		}
		http.NotFound(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	ctx := context.Background()
	var skew atomic.Int64 // both nodes' clock: time.Now() + skew
	node := func() *pgp.Plugin {
		p := &pgp.Plugin{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }}
		cfg := `{"discovery":["local","keyserver"],"keyserver":"https://keys.example.net","ca_file":"` + caFile +
			`","resolve":{"keys.example.net":"` + srv.Listener.Addr().String() + `"},"cache_ttl":"1h","miss_ttl":"10m"}`
		if err := p.Configure(ctx, sdk.Config{JSON: []byte(cfg), DataDir: t.TempDir(), Database: &db}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Configure(ctx, sdk.Config{JSON: []byte(`{}`), DataDir: t.TempDir()}) })
		return p
	}
	a, b := node(), node()
	rcpts := []sdk.Recipient{{Address: "dave@partner.test"}, {Address: "nobody@partner.test"}}
	ans, err := a.CanHandle(ctx, &sdk.Envelope{}, rcpts)
	if err != nil || !ans[0].CanHandle || ans[1].CanHandle {
		t.Fatalf("node A: %+v %v", ans, err)
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("node A made %d requests, want 2", n)
	}
	ans, err = b.CanHandle(ctx, &sdk.Envelope{}, rcpts)
	if err != nil || !ans[0].CanHandle || !strings.Contains(ans[0].Reason, "(keyserver)") || ans[1].CanHandle {
		t.Fatalf("node B: %+v %v", ans, err)
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("node B asked the keyserver again (%d requests): the key or the miss is not shared", n)
	}
	// After the miss TTL (not the key's): B asks once for nobody, and A
	// then knows B's fresh miss.
	skew.Store(int64(11 * time.Minute))
	b.CanHandle(ctx, &sdk.Envelope{}, rcpts)
	a.CanHandle(ctx, &sdk.Envelope{}, rcpts)
	if n := hits.Load(); n != 3 {
		t.Errorf("%d requests after the miss TTL, want 3", n)
	}
}
