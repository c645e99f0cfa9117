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
