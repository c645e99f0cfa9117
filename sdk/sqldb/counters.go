package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"time"
)

// Counters are per-key event counts several nodes share, such as failed
// logins per client and account: each node adds to the same row, so a
// limit holds across the cluster however the load balancer spreads the
// attempts. They live in a table of the caller's schema with the columns
//
//	k TEXT PRIMARY KEY, n BIGINT NOT NULL, first_at BIGINT NOT NULL, last_at BIGINT NOT NULL
//
// (times in Unix nanoseconds). A count restarts at 1 instead of growing
// when it is stale: its window began too long ago or it has been quiet too
// long. Keys are the caller's; hash them when they name people.
type Counters struct {
	DB      *sql.DB
	Dialect Dialect
	Table   string
}

// Count is the state of one counter.
type Count struct {
	N           int64
	First, Last time.Time
}

// nanos is t in Unix nanoseconds; the zero time is before every other.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

// Add counts one event of key at now in one statement (INSERT … ON
// CONFLICT … RETURNING, so two nodes adding at once both count) and
// returns the new state. The count starts again at 1 when it began
// before windowStart or its last event was before quietSince (a zero
// time switches that rule off).
func (c Counters) Add(ctx context.Context, key string, now, windowStart, quietSince time.Time) (Count, error) {
	t := c.Table
	q := c.Dialect.Rebind(`INSERT INTO ` + t + ` (k, n, first_at, last_at) VALUES (?, 1, ?, ?)
		ON CONFLICT (k) DO UPDATE SET
		n = CASE WHEN ` + t + `.first_at < ? OR ` + t + `.last_at < ? THEN 1 ELSE ` + t + `.n + 1 END,
		first_at = CASE WHEN ` + t + `.first_at < ? OR ` + t + `.last_at < ? THEN excluded.first_at ELSE ` + t + `.first_at END,
		last_at = ` + c.Dialect.Greatest(t+".last_at", "excluded.last_at") + `
		RETURNING n, first_at, last_at`)
	ws, qs := nanos(windowStart), nanos(quietSince)
	var n, first, last int64
	if err := c.DB.QueryRowContext(ctx, q, key, now.UnixNano(), now.UnixNano(), ws, qs, ws, qs).Scan(&n, &first, &last); err != nil {
		return Count{}, fmt.Errorf("sqldb: counter: %w", err)
	}
	return Count{N: n, First: time.Unix(0, first), Last: time.Unix(0, last)}, nil
}

// Get returns the counters of keys that exist, as stored (the caller
// judges staleness).
func (c Counters) Get(ctx context.Context, keys ...string) (map[string]Count, error) {
	out := map[string]Count{}
	if len(keys) == 0 {
		return out, nil
	}
	args := make([]any, len(keys))
	for i, k := range keys {
		args[i] = k
	}
	rows, err := c.DB.QueryContext(ctx, c.Dialect.Rebind(`SELECT k, n, first_at, last_at FROM `+c.Table+
		` WHERE k IN (?`+strings.Repeat(", ?", len(keys)-1)+`)`), args...)
	if err != nil {
		return nil, fmt.Errorf("sqldb: counters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var n, first, last int64
		if err := rows.Scan(&k, &n, &first, &last); err != nil {
			return nil, fmt.Errorf("sqldb: counters: %w", err)
		}
		out[k] = Count{N: n, First: time.Unix(0, first), Last: time.Unix(0, last)}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqldb: counters: %w", err)
	}
	return out, nil
}

// Delete removes the counters of keys.
func (c Counters) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	args := make([]any, len(keys))
	for i, k := range keys {
		args[i] = k
	}
	_, err := c.DB.ExecContext(ctx, c.Dialect.Rebind(`DELETE FROM `+c.Table+` WHERE k IN (?`+strings.Repeat(", ?", len(keys)-1)+`)`), args...)
	if err != nil {
		return fmt.Errorf("sqldb: counters: %w", err)
	}
	return nil
}

// Prune removes the counters whose key starts with prefix and whose last
// event was before cut (expiry; run it from a periodic job).
func (c Counters) Prune(ctx context.Context, prefix string, cut time.Time) (int64, error) {
	res, err := c.DB.ExecContext(ctx, c.Dialect.Rebind(`DELETE FROM `+c.Table+` WHERE k LIKE ? ESCAPE '\' AND last_at < ?`),
		strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(prefix)+"%", nanos(cut))
	if err != nil {
		return 0, fmt.Errorf("sqldb: counters: %w", err)
	}
	return res.RowsAffected()
}
