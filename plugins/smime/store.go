package smime

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

// CertRecord is a correspondent's certificate known for an address.
type CertRecord struct {
	Fingerprint string // SHA-256 of the DER, lower-case hex
	Address     string // lower case
	Subject     string
	Issuer      string
	NotBefore   time.Time
	NotAfter    time.Time
	DER         []byte
	GCM         bool   // announced AES-256-GCM in SMIMECapabilities
	OAEP        bool   // announced RSAES-OAEP
	Source      string // "harvest", "import", "mail", "webmailbox upload"
	Added       time.Time
	// Pending: waiting for operator approval (approval = "manual" for its
	// source); never used for encryption until approved.
	Pending bool
}

// Cert parses the record's certificate.
//
// Parsed certificates are kept (by the SHA-256 of their DER, up to 1024):
// every outbound message looked its recipients' certificates up and
// parsed them twice (issue 19.4). The result is shared: do not modify it.
func (r *CertRecord) Cert() (*x509.Certificate, error) {
	key := sha256.Sum256(r.DER)
	parsed.Lock()
	c := parsed.m[key]
	parsed.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := x509.ParseCertificate(r.DER)
	if err != nil {
		return nil, err
	}
	parsed.Lock()
	if len(parsed.m) >= 1024 {
		clear(parsed.m)
	}
	parsed.m[key] = c
	parsed.Unlock()
	return c, nil
}

var parsed = struct {
	sync.Mutex
	m map[[32]byte]*x509.Certificate
}{m: map[[32]byte]*x509.Certificate{}}

// Fingerprint is the store key of a certificate.
func Fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// NewRecords makes one record per address of cert.
func NewRecords(cert *x509.Certificate, caps Capabilities, source string, now time.Time) []CertRecord {
	var out []CertRecord
	for _, a := range CertAddresses(cert) {
		out = append(out, CertRecord{
			Fingerprint: Fingerprint(cert), Address: a, Subject: cert.Subject.String(), Issuer: cert.Issuer.String(),
			NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), DER: cert.Raw,
			GCM: caps.GCM, OAEP: caps.OAEP, Source: source, Added: now.UTC(),
		})
	}
	return out
}

// Store keeps correspondents' certificates: OpenSQLite for one machine,
// OpenShared for the PostgreSQL database of a cluster.
type Store interface {
	// Put adds or updates a record (key: fingerprint and address). An
	// update keeps capabilities already learned (they are only ever
	// added).
	Put(ctx context.Context, r CertRecord) error
	// ForAddress returns the records for addr, newest NotAfter first.
	ForAddress(ctx context.Context, addr string) ([]CertRecord, error)
	// List returns every record, by address then NotAfter.
	List(ctx context.Context) ([]CertRecord, error)
	// Remove deletes the records whose fingerprint starts with prefix
	// (at least 8 hex digits) or whose address is prefix; it returns
	// how many.
	Remove(ctx context.Context, prefix string) (int, error)
	// Approve clears Pending of the records matching key (an address or
	// 8+ hex digits of a fingerprint) and marks them for an activation
	// notice; it returns how many it approved.
	Approve(ctx context.Context, key string) (int, error)
	// TakeActivated returns the records approved since the last call
	// (each once) and forgets them.
	TakeActivated(ctx context.Context) ([]CertRecord, error)
	Close() error
}

// Usable returns the best record of recs valid at now: the one that
// expires last.
func Usable(recs []CertRecord, now time.Time) *CertRecord {
	var best *CertRecord
	for i := range recs {
		r := &recs[i]
		if r.Pending || now.Before(r.NotBefore) || now.After(r.NotAfter) {
			continue
		}
		if best == nil || r.NotAfter.After(best.NotAfter) {
			best = r
		}
	}
	return best
}

// sqlStore is the Store over SQL: an SQLite file on one machine, or the
// PostgreSQL database the nodes of a cluster share. The SQL is the same
// for both (sqldb.Dialect fills in the differences).
type sqlStore struct {
	db *sql.DB
	d  sqldb.Dialect
	// forAddr is ForAddress's statement, prepared once: every outbound
	// message looks up each recipient, and SQLite spent most of that
	// preparing the query again (issue 19.4).
	prepare sync.Once
	forAddr *sql.Stmt
	// cache keeps ForAddress's answers of an SQLite store (nil for the
	// shared PostgreSQL one); see lookupCache.
	cache *lookupCache
}

// schema is the versioned schema (component "smime"). Version 1 is the
// table from before versioning, hence IF NOT EXISTS.
func schema(d sqldb.Dialect) []string {
	// The approval columns came before versioning: SQLite stores get them
	// from upgradeSQLite, PostgreSQL ones (new) in the table itself.
	extra := ""
	if d == sqldb.Postgres {
		extra = `
		pending     INTEGER NOT NULL DEFAULT 0,
		activated   INTEGER NOT NULL DEFAULT 0,`
	}
	return []string{
		`CREATE TABLE IF NOT EXISTS smime_certs (
		fingerprint TEXT NOT NULL,
		address     TEXT NOT NULL,
		subject     TEXT NOT NULL,
		issuer      TEXT NOT NULL,
		not_before  BIGINT NOT NULL,
		not_after   BIGINT NOT NULL,
		der         ` + d.Blob() + ` NOT NULL,
		gcm         INTEGER NOT NULL DEFAULT 0,
		oaep        INTEGER NOT NULL DEFAULT 0,
		source      TEXT NOT NULL,
		added       BIGINT NOT NULL,` + extra + `
		PRIMARY KEY (fingerprint, address)
	)`,
		`CREATE INDEX IF NOT EXISTS smime_certs_address ON smime_certs (address)`,
	}
}

// OpenSQLite opens (creating) the store in the SQLite file path.
func OpenSQLite(path string) (Store, error) {
	db, err := sqldb.OpenSQLite(path)
	if err != nil {
		return nil, fmt.Errorf("smime: opening the certificate store: %w", err)
	}
	if err := sqldb.Migrate(context.Background(), db, sqldb.SQLite, "smime", schema(sqldb.SQLite)); err != nil {
		db.Close()
		return nil, fmt.Errorf("smime: opening the certificate store %s: %w", path, err)
	}
	// Columns added later (operator approval): stores made before get
	// them here, every record approved.
	for _, col := range []string{"pending", "activated"} {
		if _, err := db.Exec(`ALTER TABLE smime_certs ADD COLUMN ` + col + ` INTEGER NOT NULL DEFAULT 0`); err != nil &&
			!strings.Contains(err.Error(), "duplicate column") {
			db.Close()
			return nil, fmt.Errorf("smime: upgrading the certificate store %s: %w", path, err)
		}
	}
	return &sqlStore{db: db, d: sqldb.SQLite, cache: &lookupCache{path: path}}, nil
}

// OpenShared opens the store in the host's shared PostgreSQL database, so
// that a certificate harvested on one node is used on every node.
func OpenShared(ctx context.Context, c sdk.Database) (Store, error) {
	db, err := sqldb.OpenPostgres(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("smime: certificate store: %w", err)
	}
	if err := sqldb.Migrate(ctx, db, sqldb.Postgres, "smime", schema(sqldb.Postgres)); err != nil {
		db.Close()
		return nil, fmt.Errorf("smime: certificate store: %w", err)
	}
	return &sqlStore{db: db, d: sqldb.Postgres}, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *sqlStore) Put(ctx context.Context, r CertRecord) error {
	_, err := s.db.ExecContext(ctx, s.d.Rebind(`INSERT INTO smime_certs
		(fingerprint, address, subject, issuer, not_before, not_after, der, gcm, oaep, source, added, pending)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (fingerprint, address) DO UPDATE SET
			gcm = `+s.d.Greatest("smime_certs.gcm", "excluded.gcm")+`, oaep = `+s.d.Greatest("smime_certs.oaep", "excluded.oaep")+`,
			pending = `+s.d.Least("smime_certs.pending", "excluded.pending")),
		r.Fingerprint, strings.ToLower(r.Address), r.Subject, r.Issuer, r.NotBefore.Unix(), r.NotAfter.Unix(),
		r.DER, b2i(r.GCM), b2i(r.OAEP), r.Source, r.Added.Unix(), b2i(r.Pending))
	s.wrote()
	return err
}

// wrote is called after every write of this handle: the cache forgets
// what it knows (data_version would tell it too, see lookupCache; this
// does not depend on the two connections staying apart).
func (s *sqlStore) wrote() {
	if s.cache != nil {
		s.cache.gen.Add(1)
	}
}

const cols = `fingerprint, address, subject, issuer, not_before, not_after, der, gcm, oaep, source, added, pending`

func (s *sqlStore) query(ctx context.Context, q string, args ...any) ([]CertRecord, error) {
	rows, err := s.db.QueryContext(ctx, s.d.Rebind(q), args...)
	if err != nil {
		return nil, err
	}
	return scanRecords(rows)
}

func scanRecords(rows *sql.Rows) ([]CertRecord, error) {
	defer rows.Close()
	var out []CertRecord
	for rows.Next() {
		var r CertRecord
		var nb, na, added int64
		var gcm, oaep, pending int
		if err := rows.Scan(&r.Fingerprint, &r.Address, &r.Subject, &r.Issuer, &nb, &na, &r.DER, &gcm, &oaep, &r.Source, &added, &pending); err != nil {
			return nil, err
		}
		r.NotBefore, r.NotAfter, r.Added = time.Unix(nb, 0).UTC(), time.Unix(na, 0).UTC(), time.Unix(added, 0).UTC()
		r.GCM, r.OAEP, r.Pending = gcm != 0, oaep != 0, pending != 0
		out = append(out, r)
	}
	return out, rows.Err()
}

const forAddressQuery = `SELECT ` + cols + ` FROM smime_certs WHERE address = ? ORDER BY not_after DESC, fingerprint`

func (s *sqlStore) ForAddress(ctx context.Context, addr string) ([]CertRecord, error) {
	if s.cache != nil {
		return s.cache.forAddress(ctx, strings.ToLower(addr), true)
	}
	return s.forAddress(ctx, addr)
}

// forAddress is ForAddress without the cache.
func (s *sqlStore) forAddress(ctx context.Context, addr string) ([]CertRecord, error) {
	s.prepare.Do(func() {
		// Not prepared (an error): each call prepares its own, as before.
		s.forAddr, _ = s.db.PrepareContext(context.Background(), s.d.Rebind(forAddressQuery))
	})
	if s.forAddr == nil {
		return s.query(ctx, forAddressQuery, strings.ToLower(addr))
	}
	rows, err := s.forAddr.QueryContext(ctx, strings.ToLower(addr))
	if err != nil {
		return nil, err
	}
	return scanRecords(rows)
}

func (s *sqlStore) List(ctx context.Context) ([]CertRecord, error) {
	return s.query(ctx, `SELECT `+cols+` FROM smime_certs ORDER BY address, not_after, fingerprint`)
}

func (s *sqlStore) Remove(ctx context.Context, prefix string) (int, error) {
	prefix = strings.ToLower(strings.TrimSpace(prefix))
	var res sql.Result
	var err error
	switch {
	case strings.Contains(prefix, "@"):
		res, err = s.db.ExecContext(ctx, s.d.Rebind(`DELETE FROM smime_certs WHERE address = ?`), prefix)
	case len(prefix) >= 8 && strings.Trim(prefix, "0123456789abcdef") == "":
		res, err = s.db.ExecContext(ctx, s.d.Rebind(`DELETE FROM smime_certs WHERE substr(fingerprint, 1, ?) = ?`), len(prefix), prefix)
	default:
		return 0, errors.New("smime: remove: give an address or at least 8 hex digits of a fingerprint")
	}
	s.wrote()
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// keyWhere is the WHERE clause for an address or a fingerprint prefix.
func keyWhere(key string) (string, []any, error) {
	key = strings.ToLower(strings.TrimSpace(key))
	switch {
	case strings.Contains(key, "@"):
		return `address = ?`, []any{key}, nil
	case len(key) >= 8 && strings.Trim(key, "0123456789abcdef") == "":
		return `substr(fingerprint, 1, ?) = ?`, []any{len(key), key}, nil
	}
	return "", nil, errors.New("smime: give an address or at least 8 hex digits of a fingerprint")
}

func (s *sqlStore) Approve(ctx context.Context, key string) (int, error) {
	where, args, err := keyWhere(key)
	if err != nil {
		return 0, err
	}
	res, err := s.db.ExecContext(ctx, s.d.Rebind(`UPDATE smime_certs SET pending = 0, activated = 1 WHERE pending = 1 AND `+where), args...)
	s.wrote()
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// TakeActivated clears and returns the flags in one statement, so that of
// several nodes asking at once each record goes to one.
func (s *sqlStore) TakeActivated(ctx context.Context) ([]CertRecord, error) {
	recs, err := s.query(ctx, `UPDATE smime_certs SET activated = 0 WHERE activated = 1 RETURNING `+cols)
	s.wrote()
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Address < recs[j].Address })
	return recs, nil
}

func (s *sqlStore) Close() error {
	s.prepare.Do(func() {}) // none prepared from now on
	if s.forAddr != nil {
		s.forAddr.Close()
	}
	if s.cache != nil {
		s.cache.close()
	}
	return s.db.Close()
}

// RunOnce runs a job once across the nodes sharing the store.
func (s *sqlStore) RunOnce(ctx context.Context, name string, period time.Duration, now time.Time, fn func(ctx context.Context) error) (bool, error) {
	return sqldb.RunOnce(ctx, s.db, s.d, name, period, now, fn)
}
