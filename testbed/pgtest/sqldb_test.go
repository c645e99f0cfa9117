package pgtest_test

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/posthorn/posthorn/sdk/sqldb"
	"github.com/posthorn/posthorn/testbed/pgtest"
)

// TestSQLDB runs the SDK's sqldb against a real PostgreSQL as several
// nodes would: migrations started together apply once, a periodic job
// runs on one node once per period, and a newer schema is refused.
func TestSQLDB(t *testing.T) {
	shared := pgtest.Start(t).NewShared(t)
	ctx := context.Background()
	const nodes = 4
	dbs := make([]*sql.DB, nodes)
	for i := range dbs {
		db, err := sqldb.OpenPostgres(ctx, shared)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs[i] = db
	}
	steps := []string{
		`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`,
		`INSERT INTO t (id, v) VALUES (1, 'one')`,
	}
	var wg sync.WaitGroup
	for _, h := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sqldb.Migrate(ctx, h, sqldb.Postgres, "test", steps); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var n int
	if err := dbs[0].QueryRow(`SELECT COUNT(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows after four migrations: %d %v", n, err)
	}
	if err := sqldb.Migrate(ctx, dbs[1], sqldb.Postgres, "test", steps[:1]); err == nil {
		t.Fatal("an older step list accepted a newer schema")
	}

	now := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	var runs atomic.Int32
	job := func(ctx context.Context) error {
		runs.Add(1)
		time.Sleep(50 * time.Millisecond) // hold the lock while the others try
		return nil
	}
	for round, at := range []time.Time{now, now.Add(time.Hour), now.Add(25 * time.Hour)} {
		for _, h := range dbs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := sqldb.RunOnce(ctx, h, sqldb.Postgres, "daily", 24*time.Hour, at, job); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		want := []int32{1, 1, 2}[round]
		if got := runs.Load(); got != want {
			t.Fatalf("round %d: the daily job ran %d times in all, want %d", round, got, want)
		}
	}
}

// TestCounters: two nodes add to the same shared counters at once and
// every event is counted; stale counts restart; Get, Delete and Prune.
func TestCounters(t *testing.T) {
	shared := pgtest.Start(t).NewShared(t)
	ctx := context.Background()
	var cs [2]sqldb.Counters
	for i := range cs {
		db, err := sqldb.OpenPostgres(ctx, shared)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		cs[i] = sqldb.Counters{DB: db, Dialect: sqldb.Postgres, Table: "failures"}
	}
	if _, err := cs[0].DB.Exec(`CREATE TABLE failures (k TEXT PRIMARY KEY, n BIGINT NOT NULL, first_at BIGINT NOT NULL, last_at BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := cs[i%2].Add(ctx, "p:x", now.Add(time.Duration(i)*time.Millisecond), time.Time{}, now.Add(-time.Hour)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, err := cs[1].Get(ctx, "p:x", "p:none")
	if err != nil {
		t.Fatal(err)
	}
	if c := got["p:x"]; len(got) != 1 || c.N != 40 || !c.First.Equal(now) && c.First.After(now.Add(40*time.Millisecond)) || !c.Last.Equal(now.Add(39*time.Millisecond)) {
		t.Fatalf("after 40 concurrent adds from two nodes: %+v", got)
	}
	// Quiet for longer than allowed: starts again.
	later := now.Add(2 * time.Hour)
	if c, err := cs[0].Add(ctx, "p:x", later, time.Time{}, later.Add(-time.Hour)); err != nil || c.N != 1 || !c.First.Equal(later) {
		t.Fatalf("after a quiet hour: %+v %v", c, err)
	}
	// A window that began too long ago: starts again, though not quiet.
	for i := 0; i < 3; i++ {
		if _, err := cs[i%2].Add(ctx, "ip:y", now.Add(time.Duration(i)*time.Minute), now.Add(-10*time.Minute), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	at := now.Add(11 * time.Minute)
	if c, err := cs[1].Add(ctx, "ip:y", at, at.Add(-10*time.Minute), time.Time{}); err != nil || c.N != 1 {
		t.Fatalf("window over: %+v %v", c, err)
	}
	if c, err := cs[0].Add(ctx, "ip:y", at.Add(time.Minute), at.Add(-9*time.Minute), time.Time{}); err != nil || c.N != 2 || !c.First.Equal(at) {
		t.Fatalf("same window: %+v %v", c, err)
	}
	if err := cs[0].Delete(ctx, "ip:y"); err != nil {
		t.Fatal(err)
	}
	if n, err := cs[1].Prune(ctx, "p:", later.Add(time.Second)); err != nil || n != 1 {
		t.Fatalf("prune: %d %v", n, err)
	}
	if got, err := cs[0].Get(ctx, "p:x", "ip:y"); err != nil || len(got) != 0 {
		t.Fatalf("left after Delete and Prune: %+v %v", got, err)
	}
}
