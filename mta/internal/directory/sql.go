package directory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/database"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

// SQL is the database backend: an embedded SQLite file, or PostgreSQL
// shared by many nodes (which also announces changes by NOTIFY).
type SQL struct {
	db      *sql.DB
	lookup  *sql.Stmt // Address, prepared once: the hot path of every RCPT
	dialect database.Dialect
	pg      *pgx.ConnConfig // for LISTEN; nil on SQLite
}

var (
	_ Backend = (*SQL)(nil)
	_ Writer  = (*SQL)(nil)
)

// notifyChannel is the PostgreSQL channel of directory changes; the
// payload is the cache key ("d:DOMAIN" or "a:ADDRESS").
const notifyChannel = "posthorn_directory"

const schemaV1 = `
CREATE TABLE directory_domains (
	name      TEXT PRIMARY KEY,
	catch_all TEXT NOT NULL DEFAULT '',
	lmtp      TEXT NOT NULL DEFAULT ''
);
CREATE TABLE directory_addresses (
	address      TEXT PRIMARY KEY,
	domain       TEXT NOT NULL REFERENCES directory_domains(name) ON DELETE CASCADE,
	kind         TEXT NOT NULL CHECK (kind IN ('mailbox', 'alias')),
	targets      TEXT NOT NULL DEFAULT '',
	password     TEXT NOT NULL DEFAULT '',
	secure_alias BOOLEAN NOT NULL DEFAULT FALSE,
	secure_level TEXT NOT NULL DEFAULT ''
);
CREATE INDEX directory_addresses_domain ON directory_addresses (domain, address);
`

// pgNotifyV2 makes every change to the directory tables a NOTIFY, sent
// when the writing transaction commits.
const pgNotifyV2 = `
CREATE FUNCTION posthorn_directory_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE k TEXT;
BEGIN
	IF TG_TABLE_NAME = 'directory_domains' THEN
		IF TG_OP = 'DELETE' THEN k := 'd:' || OLD.name; ELSE k := 'd:' || NEW.name; END IF;
	ELSE
		IF TG_OP = 'DELETE' THEN k := 'a:' || OLD.address; ELSE k := 'a:' || NEW.address; END IF;
	END IF;
	PERFORM pg_notify('` + notifyChannel + `', k);
	RETURN NULL;
END $$;
CREATE TRIGGER directory_domains_notify AFTER INSERT OR UPDATE OR DELETE ON directory_domains
	FOR EACH ROW EXECUTE FUNCTION posthorn_directory_notify();
CREATE TRIGGER directory_addresses_notify AFTER INSERT OR UPDATE OR DELETE ON directory_addresses
	FOR EACH ROW EXECUTE FUNCTION posthorn_directory_notify();
`

// Migrations are the directory's schema steps per dialect (version = index+1).
var Migrations = map[database.Dialect][]string{
	database.SQLite:   {schemaV1},
	database.Postgres: {schemaV1, pgNotifyV2},
}

// OpenSQLite opens the SQLite directory at path, creating and migrating it.
func OpenSQLite(ctx context.Context, path string) (*SQL, error) {
	db, err := database.OpenSQLite(path)
	if err != nil {
		return nil, fmt.Errorf("directory %s: %w", path, err)
	}
	if err := sqldb.Migrate(ctx, db, sqldb.SQLite, "directory", Migrations[database.SQLite]); err != nil {
		db.Close()
		return nil, fmt.Errorf("directory %s: %w", path, err)
	}
	return newSQL(db, database.SQLite, nil)
}

// OpenPostgres connects to the [database] and migrates the directory's
// tables (one node at a time).
func OpenPostgres(ctx context.Context, c conf.Database) (*SQL, error) {
	db, cc, err := database.OpenPostgres(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := sqldb.Migrate(ctx, db, sqldb.Postgres, "directory", Migrations[database.Postgres]); err != nil {
		db.Close()
		return nil, err
	}
	return newSQL(db, database.Postgres, cc)
}

const lookupSQL = "SELECT kind, targets, password, secure_alias, secure_level FROM directory_addresses WHERE address = $1"

func newSQL(db *sql.DB, d database.Dialect, cc *pgx.ConnConfig) (*SQL, error) {
	st, err := db.Prepare(lookupSQL)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("directory: %w", err)
	}
	return &SQL{db: db, lookup: st, dialect: d, pg: cc}, nil
}

// DB is the database handle (tests, tools).
func (s *SQL) DB() *sql.DB { return s.db }

// Close implements Backend.
func (s *SQL) Close() error {
	s.lookup.Close()
	return s.db.Close()
}

// Domains implements Backend.
func (s *SQL) Domains(ctx context.Context) ([]Domain, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT name, catch_all, lmtp FROM directory_domains ORDER BY name")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Domain
	for rows.Next() {
		var d Domain
		if err := rows.Scan(&d.Name, &d.CatchAll, &d.LMTP); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Address implements Backend.
func (s *SQL) Address(ctx context.Context, addr string) (*Address, error) {
	a := &Address{Addr: Normalize(addr)}
	var kind, targets string
	err := s.lookup.QueryRowContext(ctx, a.Addr).
		Scan(&kind, &targets, &a.PasswordHash, &a.SecureAlias, &a.SecureLevel)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	a.Mailbox = kind == "mailbox"
	if !a.Mailbox {
		a.Targets = splitTargets(targets)
	}
	return a, nil
}

func splitTargets(s string) []string {
	var out []string
	for _, t := range strings.Split(s, "\n") {
		if t != "" {
			out = append(out, t)
		}
	}
	return out
}

// PutDomain implements Writer.
func (s *SQL) PutDomain(ctx context.Context, d Domain) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO directory_domains (name, catch_all, lmtp) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET catch_all = excluded.catch_all, lmtp = excluded.lmtp`,
		strings.ToLower(d.Name), strings.ToLower(d.CatchAll), d.LMTP)
	return err
}

// DeleteDomain implements Writer.
func (s *SQL) DeleteDomain(ctx context.Context, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		name = strings.ToLower(name)
		// Explicit, so that SQLite without foreign keys behaves the same.
		if _, err := tx.ExecContext(ctx, "DELETE FROM directory_addresses WHERE domain = $1", name); err != nil {
			return err
		}
		return affected(tx.ExecContext(ctx, "DELETE FROM directory_domains WHERE name = $1", name))
	})
}

// put writes an address of kind inside a transaction, refusing to turn a
// mailbox into an alias or back, and addresses of unknown domains.
func (s *SQL) put(ctx context.Context, addr, kind string, write func(tx *sql.Tx, addr, domain string) error) error {
	addr = Normalize(addr)
	_, dom := Split(addr)
	return s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM directory_domains WHERE name = $1", dom).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%w: %q is not a local domain", ErrConflict, dom)
		}
		var have string
		err := tx.QueryRowContext(ctx, "SELECT kind FROM directory_addresses WHERE address = $1", addr).Scan(&have)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case have != kind:
			return fmt.Errorf("%w: %s is an existing %s", ErrConflict, addr, have)
		}
		return write(tx, addr, dom)
	})
}

// PutMailbox implements Writer.
func (s *SQL) PutMailbox(ctx context.Context, addr, hash string) error {
	return s.put(ctx, addr, "mailbox", func(tx *sql.Tx, addr, dom string) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO directory_addresses (address, domain, kind, password) VALUES ($1, $2, 'mailbox', $3)
			ON CONFLICT (address) DO UPDATE SET password = CASE WHEN excluded.password = '' THEN directory_addresses.password ELSE excluded.password END`,
			addr, dom, hash)
		return err
	})
}

// PutAlias implements Writer.
func (s *SQL) PutAlias(ctx context.Context, addr string, targets []string) error {
	if len(targets) == 0 {
		return fmt.Errorf("%w: an alias needs at least one target", ErrConflict)
	}
	return s.put(ctx, addr, "alias", func(tx *sql.Tx, addr, dom string) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO directory_addresses (address, domain, kind, targets) VALUES ($1, $2, 'alias', $3)
			ON CONFLICT (address) DO UPDATE SET targets = excluded.targets`,
			addr, dom, strings.Join(targets, "\n"))
		return err
	})
}

// DeleteAddress implements Writer.
func (s *SQL) DeleteAddress(ctx context.Context, addr string) error {
	return affected(s.db.ExecContext(ctx, "DELETE FROM directory_addresses WHERE address = $1", Normalize(addr)))
}

// SetSecureAlias implements Writer.
func (s *SQL) SetSecureAlias(ctx context.Context, addr string, on bool, level string) error {
	if !ValidSecureLevel(level) {
		return fmt.Errorf("%w: level %q (use %s)", ErrConflict, level, strings.Join(SecureLevels, ", "))
	}
	return affected(s.db.ExecContext(ctx, "UPDATE directory_addresses SET secure_alias = $2, secure_level = $3 WHERE address = $1 AND kind = 'mailbox'",
		Normalize(addr), on, level))
}

// ListAddresses implements Writer.
func (s *SQL) ListAddresses(ctx context.Context, domain, after string, limit int) ([]Address, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT address, kind, targets, secure_alias, secure_level FROM directory_addresses
		WHERE domain = $1 AND address > $2 ORDER BY address LIMIT $3`, strings.ToLower(domain), Normalize(after), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Address{}
	for rows.Next() {
		var a Address
		var kind, targets string
		if err := rows.Scan(&a.Addr, &kind, &targets, &a.SecureAlias, &a.SecureLevel); err != nil {
			return nil, err
		}
		a.Mailbox = kind == "mailbox"
		if !a.Mailbox {
			a.Targets = splitTargets(targets)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func (s *SQL) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func affected(r sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Watch implements Notifier on PostgreSQL: a connection of its own
// LISTENs for the triggers' notices. On SQLite (one machine; every write
// goes through this process) it just waits.
func (s *SQL) Watch(ctx context.Context, changed func(key string)) error {
	if s.pg == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	conn, err := pgx.ConnectConfig(ctx, s.pg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	changed("") // notices before LISTEN are lost: start afresh
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		changed(n.Payload)
	}
}
