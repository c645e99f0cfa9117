// Package database opens the SQL databases Posthorn keeps state in, the
// embedded SQLite file of one machine and the PostgreSQL database ([database]
// in the config) that many nodes share, and applies versioned schema
// migrations at start.
//
// Migrations are numbered per component ("directory", and later every
// store that moves into PostgreSQL): step i of a component's list is
// version i+1, recorded in the table posthorn_migrations. On PostgreSQL
// the whole run holds a session advisory lock, so nodes starting together
// migrate one at a time; on SQLite a write transaction (BEGIN IMMEDIATE)
// does the same. A database whose version is newer than the binary knows
// is refused rather than used.
package database

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // the "sqlite" driver

	"github.com/posthorn/posthorn/conf"
)

// Dialect is the SQL engine.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string { return [...]string{"sqlite", "postgres"}[d] }

// OpenSQLite opens (creating it if needed) the SQLite database at path,
// in WAL mode with a busy timeout; transactions take the write lock at
// BEGIN.
func OpenSQLite(path string) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// PostgresConfig parses the [database] settings into a pgx connection
// config, applying tls and ca_file over the DSN's sslmode.
func PostgresConfig(c conf.Database) (*pgx.ConnConfig, error) {
	dsn := c.DSN
	if c.TLS != "" || c.CAFile != "" {
		if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
			u, err := url.Parse(dsn)
			if err != nil {
				return nil, fmt.Errorf("database.dsn: not a valid URL")
			}
			q := u.Query()
			if c.TLS != "" {
				q.Set("sslmode", c.TLS)
			}
			if c.CAFile != "" {
				q.Set("sslrootcert", c.CAFile)
			}
			u.RawQuery = q.Encode()
			dsn = u.String()
		} else {
			if c.TLS != "" {
				dsn += " sslmode=" + c.TLS
			}
			if c.CAFile != "" {
				dsn += " sslrootcert='" + strings.ReplaceAll(c.CAFile, "'", `\'`) + "'"
			}
		}
	}
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message can quote the DSN, password included.
		return nil, fmt.Errorf("database.dsn: cannot parse the connection string")
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = 10 * time.Second
	}
	return cc, nil
}

// OpenPostgres opens a pool of at most c.MaxConns connections and checks
// that the server answers.
func OpenPostgres(ctx context.Context, c conf.Database) (*sql.DB, *pgx.ConnConfig, error) {
	cc, err := PostgresConfig(c)
	if err != nil {
		return nil, nil, err
	}
	db := stdlib.OpenDB(*cc)
	if c.MaxConns > 0 {
		db.SetMaxOpenConns(c.MaxConns)
		db.SetMaxIdleConns(c.MaxConns)
	}
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("database: %w", err)
	}
	return db, cc, nil
}

// lockKey is the advisory lock all migrations share.
func lockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("posthorn schema migrations"))
	return int64(h.Sum64() >> 1)
}

// Migrate brings component's schema to len(steps), applying the missing
// steps in order, each in its own transaction with its version record.
func Migrate(ctx context.Context, db *sql.DB, d Dialect, component string, steps []string) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if d == Postgres {
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", lockKey()); err != nil {
			return fmt.Errorf("migrations: taking the lock: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey())
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS posthorn_migrations (
		component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL,
		PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	for {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		var have int
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM posthorn_migrations WHERE component = $1", component).Scan(&have); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrations: %w", err)
		}
		if have > len(steps) {
			tx.Rollback()
			return fmt.Errorf("migrations: the %s schema is at version %d, newer than this posthorn knows (%d): upgrade posthorn", component, have, len(steps))
		}
		if have == len(steps) {
			return tx.Rollback()
		}
		if _, err := tx.ExecContext(ctx, steps[have]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrations: %s version %d: %w", component, have+1, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO posthorn_migrations (component, version, applied_at) VALUES ($1, $2, $3)",
			component, have+1, time.Now().UTC().Format(time.RFC3339)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrations: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrations: %s version %d: %w", component, have+1, err)
		}
	}
}
