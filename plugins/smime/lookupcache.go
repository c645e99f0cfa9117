package smime

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/posthorn/posthorn/sdk/sqldb"
)

// lookupCache keeps the answers of an SQLite store's ForAddress: every
// outbound message looks its recipients and its sender up, in CanHandle
// and again in Transform, and the query cost more than the checks of
// the certificates found (issue 19.4).
//
// An answer must never outlive the records it came from: a certificate
// that the CLI (another process), a second handle on the file or this
// store removed, replaced or left pending must not be used for a
// message whose look-up starts after that change committed. So every
// look-up first asks the file whether anything changed:
//
//   - PRAGMA data_version, on one connection of the cache's own that
//     does nothing but read (query_only), and is pinned: the value
//     changes when another connection, in this process or another,
//     committed to the file since it was last read on this connection;
//     values of different connections mean nothing to each other. The
//     store's writes go through its other handle, a different
//     connection, so they change it too. When the value differs from
//     the one the answers were read under, they are all forgotten.
//   - gen, which the store's own writes bump after they are done: the
//     answers are forgotten too (this alone would not see the CLI's
//     writes; data_version alone would do, but gen does not depend on
//     the writes and the look-ups keeping to different connections).
//
// The version is read before the query it saves, in the same read
// order: an answer read after it is at least as new as the version it
// is filed under, never older. A connection that fails is dropped with
// everything known through it. The data_version query is prepared once
// and costs about a third of a ForAddress query that finds one
// certificate (≈5 µs against ≈15 µs); within one hook call (lookups)
// it is read once.
//
// The shared PostgreSQL store has no such cache: several nodes write it
// and nothing as cheap tells of their commits.
type lookupCache struct {
	path string
	gen  atomic.Uint64 // bumped by every write through the store

	mu      sync.Mutex
	db      *sql.DB   // the cache's own handle on the file
	conn    *sql.Conn // its connection, pinned
	version *sql.Stmt // PRAGMA data_version on conn
	query   *sql.Stmt // forAddressQuery on conn
	m       map[string][]CertRecord
	ver     int64  // data_version the answers in m were read under
	seen    uint64 // gen when they were
	closed  bool
	queries int // ForAddress queries run (tests)
}

// maxCached answers are kept at most; then they are forgotten and
// collected again.
const maxCached = 4096

// forAddress returns the records of addr (lower case). check false skips
// the data_version check: only for a later look-up of the same hook call
// (lookups), whose first look-up checked. The answers kept were then
// valid at a check made after that call began (every check starts one);
// what changed since began after the call did.
func (c *lookupCache) forAddress(ctx context.Context, addr string, check bool) ([]CertRecord, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("smime: certificate store closed")
	}
	if c.conn == nil {
		if err := c.connect(ctx); err != nil {
			return nil, fmt.Errorf("smime: certificate store: %w", err)
		}
		check = true
	}
	if check || c.m == nil {
		var v int64
		if err := c.version.QueryRowContext(ctx).Scan(&v); err != nil {
			c.disconnect()
			return nil, fmt.Errorf("smime: certificate store: %w", err)
		}
		if g := c.gen.Load(); c.m == nil || v != c.ver || g != c.seen {
			c.m, c.ver, c.seen = make(map[string][]CertRecord), v, g
		}
	}
	if recs, ok := c.m[addr]; ok {
		return slices.Clone(recs), nil
	}
	c.queries++
	rows, err := c.query.QueryContext(ctx, addr)
	if err != nil {
		c.disconnect()
		return nil, err
	}
	recs, err := scanRecords(rows)
	if err != nil {
		c.disconnect()
		return nil, err
	}
	if len(c.m) >= maxCached {
		clear(c.m)
	}
	c.m[addr] = recs
	return slices.Clone(recs), nil
}

// connect opens the cache's handle (at the first look-up: the CLI's
// store never needs it) and pins a connection.
func (c *lookupCache) connect(ctx context.Context) error {
	if c.db == nil {
		db, err := sqldb.OpenSQLite(c.path, "query_only(1)")
		if err != nil {
			return err
		}
		c.db = db
	}
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return err
	}
	version, err := conn.PrepareContext(ctx, `PRAGMA data_version`)
	if err != nil {
		conn.Close()
		return err
	}
	query, err := conn.PrepareContext(ctx, forAddressQuery)
	if err != nil {
		version.Close()
		conn.Close()
		return err
	}
	c.conn, c.version, c.query, c.m = conn, version, query, nil
	return nil
}

// disconnect drops the connection and what was read through it.
func (c *lookupCache) disconnect() {
	if c.conn == nil {
		return
	}
	c.version.Close()
	c.query.Close()
	c.conn.Close()
	c.conn, c.version, c.query, c.m = nil, nil, nil, nil
}

func (c *lookupCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.disconnect()
	if c.db != nil {
		c.db.Close()
	}
	c.closed = true
}
