// Package database opens the SQL databases Posthorn keeps state in, the
// embedded SQLite file of one machine and the PostgreSQL database ([database]
// in the config) that many nodes share.
//
// Schemas are migrated at start with the SDK's sqldb.Migrate, the same
// code the plugins use: versions per component in posthorn_migrations,
// one node at a time under a PostgreSQL advisory lock (on SQLite the
// write transaction, BEGIN IMMEDIATE here, does the same), a newer schema
// refused.
package database

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // the "sqlite" driver

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

// Dialect is the SQL engine (the SDK's: sqldb.Migrate and the other
// helpers take it).
type Dialect = sqldb.Dialect

// The engines.
const (
	SQLite   = sqldb.SQLite
	Postgres = sqldb.Postgres
)

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
