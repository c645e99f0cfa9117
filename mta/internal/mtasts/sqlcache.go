package mtasts

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"time"

	"github.com/posthorn/posthorn/sdk/sqldb"
)

// sqlCache keeps policies in the PostgreSQL database the nodes share. As
// with the files, the policy text is parsed again when read, so a row
// written by an older, laxer version or by hand is dropped.
type sqlCache struct{ db *sql.DB }

var sqlCacheSchema = []string{
	`CREATE TABLE IF NOT EXISTS mtasts_policies (
		domain TEXT PRIMARY KEY, id TEXT NOT NULL, fetched_at BIGINT NOT NULL, policy TEXT NOT NULL)`,
}

func openSQLCache(db *sql.DB) (*sqlCache, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sqldb.Migrate(ctx, db, sqldb.Postgres, "mtasts", sqlCacheSchema); err != nil {
		return nil, err
	}
	return &sqlCache{db: db}, nil
}

func sqlCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func (c *sqlCache) store(p *Policy) error {
	ctx, cancel := sqlCtx()
	defer cancel()
	// A newer fetch wins; an older one (a slow node) does not overwrite it.
	_, err := c.db.ExecContext(ctx, `INSERT INTO mtasts_policies (domain, id, fetched_at, policy) VALUES ($1, $2, $3, $4)
		ON CONFLICT (domain) DO UPDATE SET id = excluded.id, fetched_at = excluded.fetched_at, policy = excluded.policy
		WHERE mtasts_policies.fetched_at <= excluded.fetched_at`, p.Domain, p.ID, p.FetchedAt.UnixNano(), p.Text)
	return err
}

func (c *sqlCache) remove(domain string) {
	ctx, cancel := sqlCtx()
	defer cancel()
	c.db.ExecContext(ctx, `DELETE FROM mtasts_policies WHERE domain = $1`, domain)
}

func (c *sqlCache) parse(domain, id string, fetched int64, text string) (*Policy, error) {
	d, err := normDomain(domain)
	if err != nil || d != domain {
		return nil, errors.New("bad domain")
	}
	if id == "" || fetched == 0 {
		return nil, errors.New("no id or fetch time")
	}
	p, err := ParsePolicy([]byte(text))
	if err != nil {
		return nil, err
	}
	p.Domain, p.ID, p.FetchedAt = d, id, time.Unix(0, fetched).UTC()
	return p, nil
}

func (c *sqlCache) lookup(domain string) (*Policy, error) {
	ctx, cancel := sqlCtx()
	defer cancel()
	var id, text string
	var fetched int64
	err := c.db.QueryRowContext(ctx, `SELECT id, fetched_at, policy FROM mtasts_policies WHERE domain = $1`, domain).Scan(&id, &fetched, &text)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	p, err := c.parse(domain, id, fetched, text)
	if err != nil {
		c.remove(domain)
		return nil, nil
	}
	return p, nil
}

func (c *sqlCache) loadAll(log *slog.Logger) []*Policy {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := c.db.QueryContext(ctx, `SELECT domain, id, fetched_at, policy FROM mtasts_policies`)
	if err != nil {
		log.Warn("MTA-STS cache unreadable", "err", err)
		return nil
	}
	defer rows.Close()
	var out []*Policy
	for rows.Next() {
		var domain, id, text string
		var fetched int64
		if err := rows.Scan(&domain, &id, &fetched, &text); err != nil {
			log.Warn("MTA-STS cache unreadable", "err", err)
			return out
		}
		p, err := c.parse(domain, id, fetched, text)
		if err != nil {
			log.Warn("MTA-STS cache row dropped", "domain", domain, "err", err)
			continue
		}
		out = append(out, p)
	}
	return out
}
