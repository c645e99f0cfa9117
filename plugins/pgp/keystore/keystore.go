// Package keystore keeps the OpenPGP plugin's keys: the organisation's own
// keys (with their secret parts) per address or per domain, and partners'
// public keys — imported by an operator, discovered through WKD or a
// keyserver, or harvested from inbound mail (Autocrypt headers, attached
// keys; marked unverified). Store is the interface; Open gives the
// embedded SQLite implementation (modernc.org/sqlite) and OpenShared the
// PostgreSQL one that every node of a cluster shares; both run the same SQL
// ($n placeholders, ON CONFLICT upserts) and the same versioned schema.
// Keys found by discovery (WKD, keyserver) are stored here, so the
// discovery cache is shared with the keys.
package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

// Sources of keys.
const (
	SourceGenerated = "generated"
	SourceImported  = "imported"
	SourceWKD       = "wkd"
	SourceKeyserver = "keyserver"
	SourceAutocrypt = "autocrypt"
	SourceAttached  = "attached"
)

// ErrNotFound is returned when no key matches.
var ErrNotFound = errors.New("key not found")

// Key is one stored key.
type Key struct {
	// Fingerprint of the primary key, upper-case hex.
	Fingerprint string
	// Addresses the key is for, lower-case: mail addresses, or a bare
	// domain ("example.org") for an organisation key that serves every
	// address at that domain.
	Addresses []string
	// Own marks the organisation's keys; Armored then holds the secret key.
	Own bool
	// Source is one of the Source constants.
	Source string
	// Verified is false for keys harvested from inbound mail.
	Verified bool
	// Armored is the key block (public, or secret for own keys).
	Armored []byte
	Created time.Time
	Expires time.Time // zero: never
	// Updated is when the key was last stored or refreshed (discovery
	// cache TTL).
	Updated time.Time
	// Pending: waiting for operator approval; never used for encryption
	// until approved. A key approved once stays approved when stored
	// again.
	Pending bool
}

// Store keeps keys. Implementations are safe for concurrent use.
type Store interface {
	// Put inserts or replaces the key with k.Fingerprint.
	Put(ctx context.Context, k Key) error
	// Get returns the key with fingerprint fpr (any case).
	Get(ctx context.Context, fpr string) (Key, error)
	// ByAddress returns the keys for an address or a bare domain, own
	// keys first, then the most recently updated.
	ByAddress(ctx context.Context, addr string) ([]Key, error)
	// List returns every key, ordered by first address then fingerprint.
	List(ctx context.Context) ([]Key, error)
	// Remove deletes the key; ErrNotFound if there is none.
	Remove(ctx context.Context, fpr string) error
	// Approve clears Pending of the key and marks it for an activation
	// notice; ErrNotFound when no pending key has that fingerprint.
	Approve(ctx context.Context, fpr string) error
	// TakeActivated returns the keys approved since the last call, each
	// once.
	TakeActivated(ctx context.Context) ([]Key, error)
	Close() error
}

// SQL is a Store over database/sql.
type SQL struct {
	db *sql.DB
	d  sqldb.Dialect
}

// schema is the versioned schema (sqldb.Migrate, component "pgp"); each
// step is one statement. Version 1 is the schema from before versioning,
// hence IF NOT EXISTS.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS pgp_keys (
		fingerprint TEXT PRIMARY KEY,
		own INTEGER NOT NULL,
		source TEXT NOT NULL,
		verified INTEGER NOT NULL,
		armored BYTEA NOT NULL,
		created BIGINT NOT NULL,
		expires BIGINT NOT NULL,
		updated BIGINT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS pgp_key_addresses (
		address TEXT NOT NULL,
		fingerprint TEXT NOT NULL REFERENCES pgp_keys(fingerprint) ON DELETE CASCADE,
		PRIMARY KEY (address, fingerprint))`,
	// Version 3: discovery misses ("not found" for a while), shared by
	// the nodes like the keys found.
	`CREATE TABLE IF NOT EXISTS pgp_discovery_misses (k TEXT PRIMARY KEY, until_at BIGINT NOT NULL)`,
}

// Open opens (creating if needed) the SQLite store keys.db in dir.
func Open(dir string) (*SQL, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "keys.db")
	db, err := sqldb.OpenSQLite(path)
	if err != nil {
		return nil, err
	}
	s, err := New(context.Background(), db, sqldb.SQLite)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("key store %s: %w", path, err)
	}
	return s, nil
}

// OpenShared opens the store in the host's shared PostgreSQL database.
func OpenShared(ctx context.Context, c sdk.Database) (*SQL, error) {
	db, err := sqldb.OpenPostgres(ctx, c)
	if err != nil {
		return nil, err
	}
	s, err := New(ctx, db, sqldb.Postgres)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("key store: %w", err)
	}
	return s, nil
}

// New uses db and brings its schema up to date.
func New(ctx context.Context, db *sql.DB, d sqldb.Dialect) (*SQL, error) {
	if err := sqldb.Migrate(ctx, db, d, "pgp", schema); err != nil {
		return nil, err
	}
	// Columns added later (operator approval); stores made before get
	// them with every key approved.
	for _, col := range []string{"pending", "activated"} {
		_, err := db.ExecContext(ctx, `ALTER TABLE pgp_keys ADD COLUMN `+col+` INTEGER NOT NULL DEFAULT 0`)
		if err != nil && !strings.Contains(err.Error(), "duplicate column") && !strings.Contains(err.Error(), "already exists") {
			return nil, err
		}
	}
	return &SQL{db: db, d: d}, nil
}

// MissedUntil returns until when the discovery miss key is remembered
// (zero: not, or no longer).
func (s *SQL) MissedUntil(ctx context.Context, key string, now time.Time) (time.Time, error) {
	var until int64
	err := s.db.QueryRowContext(ctx, s.d.Rebind(`SELECT until_at FROM pgp_discovery_misses WHERE k = ? AND until_at > ?`), key, now.UnixNano()).Scan(&until)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, until), nil
}

// RememberMiss remembers the discovery miss key until until (the later
// of two wins) and forgets the misses expired by now.
func (s *SQL) RememberMiss(ctx context.Context, key string, until, now time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.d.Rebind(`INSERT INTO pgp_discovery_misses (k, until_at) VALUES (?, ?)
		ON CONFLICT (k) DO UPDATE SET until_at = `+s.d.Greatest("pgp_discovery_misses.until_at", "excluded.until_at")), key, until.UnixNano()); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.d.Rebind(`DELETE FROM pgp_discovery_misses WHERE until_at <= ?`), now.UnixNano())
	return err
}

// NormalizeAddress lower-cases and trims an address or domain.
func NormalizeAddress(a string) string {
	return strings.ToLower(strings.Trim(strings.TrimSpace(a), "<>"))
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func fromUnix(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(n, 0).UTC()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *SQL) Put(ctx context.Context, k Key) error {
	k.Fingerprint = strings.ToUpper(k.Fingerprint)
	if k.Fingerprint == "" || len(k.Armored) == 0 {
		return errors.New("key without fingerprint or data")
	}
	if k.Updated.IsZero() {
		k.Updated = time.Now()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO pgp_keys (fingerprint, own, source, verified, armored, created, expires, updated, pending)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (fingerprint) DO UPDATE SET own = excluded.own, source = excluded.source, verified = excluded.verified,
		armored = excluded.armored, created = excluded.created, expires = excluded.expires, updated = excluded.updated,
		pending = CASE WHEN pgp_keys.pending = 0 THEN 0 ELSE excluded.pending END`,
		k.Fingerprint, b2i(k.Own), k.Source, b2i(k.Verified), k.Armored, unix(k.Created), unix(k.Expires), unix(k.Updated), b2i(k.Pending))
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM pgp_key_addresses WHERE fingerprint = $1`, k.Fingerprint); err != nil {
		return err
	}
	for _, a := range k.Addresses {
		if a = NormalizeAddress(a); a == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO pgp_key_addresses (address, fingerprint) VALUES ($1, $2) ON CONFLICT DO NOTHING`, a, k.Fingerprint); err != nil {
			return err
		}
	}
	return tx.Commit()
}

const cols = `fingerprint, own, source, verified, armored, created, expires, updated, pending`

func (s *SQL) scan(ctx context.Context, rows *sql.Rows) ([]Key, error) {
	defer rows.Close()
	var out []Key
	for rows.Next() {
		var k Key
		var own, verified, pending int
		var created, expires, updated int64
		if err := rows.Scan(&k.Fingerprint, &own, &k.Source, &verified, &k.Armored, &created, &expires, &updated, &pending); err != nil {
			return nil, err
		}
		k.Own, k.Verified, k.Pending = own != 0, verified != 0, pending != 0
		k.Created, k.Expires, k.Updated = fromUnix(created), fromUnix(expires), fromUnix(updated)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	for i := range out {
		ar, err := s.db.QueryContext(ctx, `SELECT address FROM pgp_key_addresses WHERE fingerprint = $1 ORDER BY address`, out[i].Fingerprint)
		if err != nil {
			return nil, err
		}
		for ar.Next() {
			var a string
			if err := ar.Scan(&a); err != nil {
				ar.Close()
				return nil, err
			}
			out[i].Addresses = append(out[i].Addresses, a)
		}
		ar.Close()
	}
	return out, nil
}

func (s *SQL) Get(ctx context.Context, fpr string) (Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+cols+` FROM pgp_keys WHERE fingerprint = $1`, strings.ToUpper(strings.ReplaceAll(fpr, " ", "")))
	if err != nil {
		return Key{}, err
	}
	ks, err := s.scan(ctx, rows)
	if err != nil {
		return Key{}, err
	}
	if len(ks) == 0 {
		return Key{}, ErrNotFound
	}
	return ks[0], nil
}

func (s *SQL) ByAddress(ctx context.Context, addr string) ([]Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+cols+` FROM pgp_keys WHERE fingerprint IN
		(SELECT fingerprint FROM pgp_key_addresses WHERE address = $1) ORDER BY own DESC, updated DESC, fingerprint`, NormalizeAddress(addr))
	if err != nil {
		return nil, err
	}
	return s.scan(ctx, rows)
}

func (s *SQL) List(ctx context.Context) ([]Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+cols+` FROM pgp_keys`)
	if err != nil {
		return nil, err
	}
	ks, err := s.scan(ctx, rows)
	if err != nil {
		return nil, err
	}
	first := func(k Key) string {
		if len(k.Addresses) == 0 {
			return ""
		}
		return k.Addresses[0]
	}
	sort.Slice(ks, func(i, j int) bool {
		if a, b := first(ks[i]), first(ks[j]); a != b {
			return a < b
		}
		return ks[i].Fingerprint < ks[j].Fingerprint
	})
	return ks, nil
}

func (s *SQL) Remove(ctx context.Context, fpr string) error {
	fpr = strings.ToUpper(strings.ReplaceAll(fpr, " ", ""))
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM pgp_key_addresses WHERE fingerprint = $1`, fpr); err != nil {
		return err
	}
	r, err := tx.ExecContext(ctx, `DELETE FROM pgp_keys WHERE fingerprint = $1`, fpr)
	if err != nil {
		return err
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return tx.Commit()
}

func (s *SQL) Close() error { return s.db.Close() }

func (s *SQL) Approve(ctx context.Context, fpr string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE pgp_keys SET pending = 0, activated = 1 WHERE fingerprint = $1 AND pending = 1`, strings.ToUpper(fpr))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return ErrNotFound
	}
	return nil
}

func (s *SQL) TakeActivated(ctx context.Context) ([]Key, error) {
	// One statement clears and returns the flags: of several nodes
	// asking at once, each key goes to one.
	rows, err := s.db.QueryContext(ctx, `UPDATE pgp_keys SET activated = 0 WHERE activated = 1 RETURNING `+cols)
	if err != nil {
		return nil, err
	}
	ks, err := s.scan(ctx, rows)
	if err != nil {
		return nil, err
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].Fingerprint < ks[j].Fingerprint })
	return ks, nil
}

// RunOnce runs a job once across the nodes sharing the store
// (sqldb.OnceRunner).
func (s *SQL) RunOnce(ctx context.Context, name string, period time.Duration, now time.Time, fn func(ctx context.Context) error) (bool, error) {
	return sqldb.RunOnce(ctx, s.db, s.d, name, period, now, fn)
}
