package directory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/auth"
	"github.com/posthorn/posthorn/mta/internal/directory"
	"github.com/posthorn/posthorn/mta/internal/router"
)

// benchDBs are SQLite directories of n mailboxes over 100 domains, made
// once per run (a million rows take a few seconds).
var (
	benchMu  sync.Mutex
	benchDBs = map[int]string{}
)

func benchDB(b *testing.B, n int) string {
	benchMu.Lock()
	defer benchMu.Unlock()
	if p, ok := benchDBs[n]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "posthorn-dirbench-")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "dir.db")
	s, err := directory.OpenSQLite(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	hash, _ := auth.Hash("the same password for everyone")
	start := time.Now()
	tx, err := s.DB().Begin()
	if err != nil {
		b.Fatal(err)
	}
	for d := range 100 {
		if _, err := tx.Exec("INSERT INTO directory_domains (name) VALUES ($1)", fmt.Sprintf("d%d.example", d)); err != nil {
			b.Fatal(err)
		}
	}
	// One statement: SQLite counts the rows out itself (a recursive CTE),
	// far faster than a million INSERTs through database/sql.
	if _, err := tx.Exec(`WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < $1)
		INSERT INTO directory_addresses (address, domain, kind, password, secure_alias)
		SELECT 'user' || i || '@d' || (i % 100) || '.example', 'd' || (i % 100) || '.example', 'mailbox', $2, i % 10 = 0 FROM c`,
		n-1, hash); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	b.Logf("made a directory of %d mailboxes in %v", n, time.Since(start).Round(time.Millisecond))
	benchDBs[n] = path
	return path
}

// BenchmarkDirectoryRCPT1M is the RCPT check (router.Check: exact
// address, then without extension, catch-all) against a million-mailbox
// SQLite directory with the cache off, so that every lookup reaches the
// database; half the addresses exist, half do not. Reports p50 and p99.
func BenchmarkDirectoryRCPT1M(b *testing.B) {
	const n = 1_000_000
	path := benchDB(b, n)
	s, err := directory.OpenSQLite(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	d, err := directory.New(context.Background(), s, directory.Options{Delimiter: "+", CacheSize: 0})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	r := router.NewWithDirectory(testConfig(), d)
	rng := rand.New(rand.NewPCG(1, 2))
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		i := rng.IntN(2 * n)
		addr := fmt.Sprintf("user%d@d%d.example", i, i%100)
		t0 := time.Now()
		err := r.Check(addr)
		lat = append(lat, time.Since(t0))
		if (i < n) != (err == nil) {
			b.Fatalf("Check(%s) = %v", addr, err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkDirectoryOpen is the directory's start (open, migrations
// check, domain list) at a thousand and at a million mailboxes: the same,
// since nothing is loaded per user.
func BenchmarkDirectoryOpen(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		path := benchDB(b, n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for range b.N {
				s, err := directory.OpenSQLite(context.Background(), path)
				if err != nil {
					b.Fatal(err)
				}
				d, err := directory.New(context.Background(), s, directory.Options{CacheSize: 100000})
				if err != nil {
					b.Fatal(err)
				}
				d.Close()
			}
		})
	}
}
