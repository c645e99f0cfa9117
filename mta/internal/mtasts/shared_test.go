package mtasts

import (
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/database"
	"github.com/posthorn/posthorn/testbed/mtasts"
	"github.com/posthorn/posthorn/testbed/pgtest"
)

// TestSharedCache: node A fetches an enforce policy into the shared
// PostgreSQL cache; node B, which never fetched it and cannot reach the
// policy host, still enforces it; a node started later loads it.
func TestSharedCache(t *testing.T) {
	cfg := pgtest.Start(t).NewDatabase(t)
	w := newWorld(t)
	node := func() *Fetcher {
		db, _, err := database.OpenPostgres(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return w.fetcher(func(o *Options) { o.CacheDir, o.CacheDB = "", db })
	}
	a, b := node(), node()
	d := "shared.example.org"
	if p, st, _ := b.Lookup(ctx, "none.example.org"); p != nil || st == Fetched {
		t.Fatalf("a domain without a policy: %v %v", p, st)
	}
	w.setID(d, "1")
	w.sts.SetPolicy(d, mtasts.Policy("enforce", 86400, "mx.example.org"))
	pa, st, err := a.Lookup(ctx, d)
	if err != nil || st != Fetched || pa.Mode != "enforce" {
		t.Fatalf("node A: %v %v %v", pa, st, err)
	}
	// The policy host goes away: B has never seen the policy.
	w.sts.RemovePolicy(d)
	pb, st, err := b.Lookup(ctx, d)
	if pb == nil || st != Cached || pb.Mode != "enforce" || pb.ID != "1" || err != nil {
		t.Fatalf("node B: %v %v %v", pb, st, err)
	}
	if c := node().Cached(d); c == nil || c.Mode != "enforce" {
		t.Fatalf("a node started later: %v", c)
	}
	// Expired: removed for everyone.
	w.clk.Add(86401 * time.Second)
	if p, _, _ := a.Lookup(ctx, d); p != nil {
		t.Fatalf("expired policy still used: %v", p)
	}
	if c := node().Cached(d); c != nil {
		t.Fatalf("expired policy still cached: %v", c)
	}
}
