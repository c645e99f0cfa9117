package daemon

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/posthorn/posthorn/mta/internal/database"
	"github.com/posthorn/posthorn/testbed/pgtest"
)

// TestSharedSubmitKeys: two nodes claiming one key at once: one queues,
// the other learns the queue ID once it is settled; a claim given up is
// free again.
func TestSharedSubmitKeys(t *testing.T) {
	cfg := pgtest.Start(t).NewDatabase(t)
	ctx := context.Background()
	var nodes []*sharedKeys
	for _, name := range []string{"a.example", "b.example"} {
		db, _, err := database.OpenPostgres(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		k := &sharedKeys{db: db, node: name}
		if err := k.open(ctx); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, k)
	}
	for i := range 20 {
		key := "webmailbox:activation:" + string(rune('a'+i))
		var wins atomic.Int32
		var wg sync.WaitGroup
		for _, k := range append(nodes, nodes...) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, ok, err := k.claim(ctx, key); ok {
					wins.Add(1)
				} else if err == nil {
					t.Error("an unsettled claim was answered as a duplicate")
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("key %s claimed %d times", key, wins.Load())
		}
		if err := nodes[0].settle(ctx, key, "Q"+key); err != nil {
			t.Fatal(err)
		}
		if id, ok, err := nodes[1].claim(ctx, key); ok || err != nil || id != "Q"+key {
			t.Fatalf("after settling: %q %v %v", id, ok, err)
		}
	}
	if _, ok, _ := nodes[0].claim(ctx, "given-up"); !ok {
		t.Fatal("fresh key not claimed")
	}
	nodes[0].release("given-up")
	if _, ok, err := nodes[1].claim(ctx, "given-up"); !ok || err != nil {
		t.Fatalf("released key: %v %v", ok, err)
	}
}
