package database_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/posthorn/posthorn/mta/internal/database"
	"github.com/posthorn/posthorn/sdk/sqldb"
	"github.com/posthorn/posthorn/testbed/pgtest"
)

var steps = []string{
	"CREATE TABLE t_one (a INTEGER)",
	"CREATE TABLE t_two (b INTEGER); INSERT INTO t_two VALUES (1)",
}

// TestMigrateSQLite: steps apply once, in order; a schema newer than the
// binary is refused.
func TestMigrateSQLite(t *testing.T) {
	ctx := context.Background()
	db, err := database.OpenSQLite(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for range 2 {
		if err := sqldb.Migrate(ctx, db, sqldb.SQLite, "test", steps); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	db.QueryRow("SELECT COUNT(*) FROM t_two").Scan(&n)
	if n != 1 {
		t.Errorf("step 2 ran %d times", n)
	}
	err = sqldb.Migrate(ctx, db, sqldb.SQLite, "test", steps[:1])
	if err == nil || !strings.Contains(err.Error(), "newer than this program knows") {
		t.Errorf("older binary on a newer schema: %v", err)
	}
	// Components are versioned apart.
	if err := sqldb.Migrate(ctx, db, sqldb.SQLite, "other", []string{"CREATE TABLE t_other (c INTEGER)"}); err != nil {
		t.Error(err)
	}
}

// TestMigratePostgresConcurrently: five nodes starting at once migrate
// one at a time under the advisory lock; every step runs exactly once.
func TestMigratePostgresConcurrently(t *testing.T) {
	srv := pgtest.Start(t)
	cfg := srv.NewDatabase(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, _, err := database.OpenPostgres(ctx, cfg)
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			errs <- sqldb.Migrate(ctx, db, sqldb.Postgres, "test", steps)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	db, _, err := database.OpenPostgres(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, v int
	db.QueryRow("SELECT COUNT(*) FROM t_two").Scan(&n)
	db.QueryRow("SELECT COUNT(*) FROM posthorn_migrations WHERE component = 'test'").Scan(&v)
	if n != 1 || v != 2 {
		t.Errorf("step 2 ran %d times, %d versions recorded", n, v)
	}
}
