package daemon

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

// sharedGuard keeps the AUTH guard's failure counts in the shared
// PostgreSQL database (smtpd.GuardStore), so that SMTP AUTH and the
// self-service login are limited across the nodes: a client blocked on
// one node is blocked on all. Keys are stored hashed, prefixed by their
// scope; rows quiet for longer than any limit looks back are pruned.
type sharedGuard struct {
	c sqldb.Counters

	mu        sync.Mutex
	lastPrune time.Time
}

var authFailureSchema = []string{
	`CREATE TABLE IF NOT EXISTS auth_failures (
		k TEXT PRIMARY KEY, n BIGINT NOT NULL, first_at BIGINT NOT NULL, last_at BIGINT NOT NULL)`,
}

// guardKeep is how long a row may matter: the day a login is remembered,
// with room for the longest window and block.
const guardKeep = 48 * time.Hour

func newSharedGuard(ctx context.Context, db *sql.DB) (*sharedGuard, error) {
	if err := sqldb.Migrate(ctx, db, sqldb.Postgres, "auth_guard", authFailureSchema); err != nil {
		return nil, err
	}
	return &sharedGuard{c: sqldb.Counters{DB: db, Dialect: sqldb.Postgres, Table: "auth_failures"}}, nil
}

var _ smtpd.GuardStore = (*sharedGuard)(nil)

// key is the stored form of a guard key: "scope:" and a hash of the rest.
func (g *sharedGuard) key(k string) string {
	scope, rest, _ := strings.Cut(k, "\x00")
	sum := sha256.Sum256([]byte(rest))
	return scope + ":" + hex.EncodeToString(sum[:16])
}

func (g *sharedGuard) Counts(ctx context.Context, keys ...string) (map[string]smtpd.GuardCount, error) {
	stored := make([]string, len(keys))
	for i, k := range keys {
		stored[i] = g.key(k)
	}
	cs, err := g.c.Get(ctx, stored...)
	if err != nil {
		return nil, err
	}
	out := map[string]smtpd.GuardCount{}
	for i, k := range keys {
		if c, ok := cs[stored[i]]; ok {
			out[k] = smtpd.GuardCount{N: int(c.N), Since: c.First, Last: c.Last}
		}
	}
	return out, nil
}

func (g *sharedGuard) AddFailure(ctx context.Context, now time.Time, window time.Duration, keys ...string) ([]smtpd.GuardCount, error) {
	g.prune(now)
	out := make([]smtpd.GuardCount, len(keys))
	for i, k := range keys {
		c, err := g.c.Add(ctx, g.key(k), now, now.Add(-window), time.Time{})
		if err != nil {
			return nil, err
		}
		out[i] = smtpd.GuardCount{N: int(c.N), Since: c.First, Last: c.Last}
	}
	return out, nil
}

func (g *sharedGuard) LoggedIn(ctx context.Context, now time.Time, key string) error {
	g.prune(now)
	_, err := g.c.Add(ctx, g.key(key), now, time.Time{}, time.Time{})
	return err
}

// prune removes old rows, at most hourly per node, in the background.
func (g *sharedGuard) prune(now time.Time) {
	g.mu.Lock()
	due := now.Sub(g.lastPrune) >= time.Hour
	if due {
		g.lastPrune = now
	}
	g.mu.Unlock()
	if due {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			g.c.Prune(ctx, "", now.Add(-guardKeep))
		}()
	}
}
