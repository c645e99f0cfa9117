package smime

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

// The plugin's look-ups in the SQLite store are cached (issue 19.4). A
// certificate removed, replaced or left pending by the CLI, by a second
// handle on the file or through the plugin's own store is not used for
// the next message, neither by CanHandle nor by Transform; without
// changes the store is not queried again.
func TestLookupCacheInvalidation(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	path := filepath.Join(f.dir, "certs.db")
	cache := f.p.st.store.(*sqlStore).cache
	bob1, bob2 := &f.bob, new(Identity)
	*bob2 = f.pki.leaf(t, "bob@ext.test")
	cli := func(args ...string) {
		t.Helper()
		var out, errb bytes.Buffer
		if code := CLI(append([]string{"certs", args[0], "-db", path}, args[1:]...), &out, &errb); code != 0 {
			t.Fatalf("certs %v: exit %d: %s", args, code, errb.String())
		}
	}
	bob1PEM := writeFile(t, f.dir, "bob1.pem", certPEM(bob1.Cert))
	// used is the certificate of Bob's that the next message to him is
	// encrypted to (nil: declined), CanHandle agreeing.
	used := func() *Identity {
		t.Helper()
		env := &sdk.Envelope{MailFrom: "alice@org.test"}
		rcpts := []sdk.Recipient{{Address: "bob@ext.test"}}
		ans, err := f.p.CanHandle(ctx, env, rcpts)
		if err != nil {
			t.Fatal(err)
		}
		res, err := f.p.Transform(ctx, env, rcpts, strings.NewReader(testMsg))
		if err != nil {
			t.Fatal(err)
		}
		if res.Action == sdk.OutboundDeclined {
			if ans[0].CanHandle {
				t.Fatalf("CanHandle: yes (%s); Transform declined", ans[0].Reason)
			}
			return nil
		}
		out, _ := io.ReadAll(res.Outputs[0].Body)
		_, e, err := Decrypt(mustDER(t, out), []Identity{*bob1, *bob2})
		if err != nil {
			t.Fatalf("Bob cannot read it: %v", err)
		}
		who := bob1
		if e.Recipient == bob2.Cert {
			who = bob2
		}
		if !ans[0].CanHandle || !strings.Contains(ans[0].Reason, Fingerprint(who.Cert)[:16]) {
			t.Fatalf("encrypted to %s; CanHandle said %+v", Fingerprint(who.Cert)[:16], ans[0])
		}
		return who
	}
	// same checks that the store was not queried (the cache works).
	same := func(want *Identity) {
		t.Helper()
		cache.mu.Lock()
		n := cache.queries
		cache.mu.Unlock()
		if got := used(); got != want {
			t.Fatalf("unchanged store: encrypted to %v, want %v", got, want)
		}
		cache.mu.Lock()
		defer cache.mu.Unlock()
		if cache.queries != n {
			t.Errorf("unchanged store queried again (%d queries)", cache.queries-n)
		}
	}

	// Imported with the CLI, removed with the CLI.
	cli("import", bob1PEM)
	if used() != bob1 {
		t.Fatal("imported certificate not used")
	}
	same(bob1)
	cli("remove", "bob@ext.test")
	if who := used(); who != nil {
		t.Fatal("certificate removed by the CLI still used")
	}
	same(nil)

	// Replaced through a second handle on the file.
	cli("import", bob1PEM)
	same2 := func() {
		t.Helper()
		if used() != bob1 {
			t.Fatal("certificate not used")
		}
		same(bob1)
	}
	same2()
	other, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Remove(ctx, Fingerprint(bob1.Cert)[:16]); err != nil {
		t.Fatal(err)
	}
	for _, r := range NewRecords(bob2.Cert, Capabilities{}, "import", time.Now()) {
		if err := other.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if who := used(); who != bob2 {
		t.Fatalf("after the replacement: encrypted to %v, want the new certificate", who)
	}
	same(bob2)

	// Left pending by another connection (what an operator's tool could
	// do; the CLI itself only approves).
	db, err := sqldb.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE smime_certs SET pending = 1`); err != nil {
		t.Fatal(err)
	}
	if who := used(); who != nil {
		t.Fatal("pending certificate used")
	}
	ans, _ := f.p.CanHandle(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "bob@ext.test"}})
	if !strings.Contains(ans[0].Reason, "waiting for operator approval") {
		t.Fatalf("reason %q", ans[0].Reason)
	}

	// The plugin's own store approves, then removes.
	if n, err := f.p.st.store.Approve(ctx, "bob@ext.test"); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	if used() != bob2 {
		t.Fatal("approved certificate not used")
	}
	same(bob2)
	if _, err := f.p.st.store.Remove(ctx, "bob@ext.test"); err != nil {
		t.Fatal(err)
	}
	if who := used(); who != nil {
		t.Fatal("certificate removed by the plugin's store still used")
	}
}

// Look-ups racing with writes through another handle: once a write has
// returned, a look-up that starts after it sees it.
func TestLookupCacheConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "certs.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	now := time.Now()
	rec := CertRecord{Fingerprint: "aaaaaaaa11", Address: "bob@ext.test", Subject: "CN=bob", Issuer: "CN=CA",
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DER: []byte{0x30, 0}, Source: "import", Added: now}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { // before the stores close
		close(stop)
		wg.Wait()
	}()
	for range 3 { // readers keeping the cache busy meanwhile
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.ForAddress(ctx, "bob@ext.test"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 30 {
		var writer Store = w
		if i%3 == 0 {
			writer = s // the store's own writes
		}
		if err := writer.Put(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if got, err := s.ForAddress(ctx, "bob@ext.test"); err != nil || len(got) != 1 {
			t.Fatalf("round %d, after Put: %d records, %v", i, len(got), err)
		}
		if _, err := writer.Remove(ctx, "bob@ext.test"); err != nil {
			t.Fatal(err)
		}
		if got, err := s.ForAddress(ctx, "bob@ext.test"); err != nil || len(got) != 0 {
			t.Fatalf("round %d, after Remove: %d records, %v", i, len(got), err)
		}
	}
}
