package daemon

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/posthorn/posthorn/sdk/sqldb"
)

// sharedKeys keeps Host.Submit idempotency keys in the shared PostgreSQL
// database, so that a key used on one node is known on every node. A key
// is claimed (inserted with no queue ID) before the message is queued
// and settled with the queue ID after the fsync; a claim whose node died
// before settling is taken over after claimLease.
type sharedKeys struct {
	db   *sql.DB
	node string
}

// claimLease is how long an unsettled claim keeps other nodes from
// queueing the same key.
const claimLease = 2 * time.Minute

var submitKeySchema = []string{
	`CREATE TABLE IF NOT EXISTS submit_keys (
		key TEXT PRIMARY KEY, queue_id TEXT NOT NULL, node TEXT NOT NULL, at BIGINT NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS submit_keys_at ON submit_keys (at)`,
}

func (k *sharedKeys) open(ctx context.Context) error {
	if err := sqldb.Migrate(ctx, k.db, sqldb.Postgres, "submit_keys", submitKeySchema); err != nil {
		return err
	}
	// Keys are remembered for keyRetention, as in the file.
	_, err := k.db.ExecContext(ctx, `DELETE FROM submit_keys WHERE at < $1`, time.Now().Add(-keyRetention).Unix())
	return err
}

// claim takes key for this node. It reports false with the queue ID when
// the key is settled (a duplicate); an unsettled claim of another node
// younger than claimLease is an error (the plugin retries later).
func (k *sharedKeys) claim(ctx context.Context, key string) (string, bool, error) {
	now := time.Now().Unix()
	res, err := k.db.ExecContext(ctx, `INSERT INTO submit_keys (key, queue_id, node, at) VALUES ($1, '', $2, $3)
		ON CONFLICT (key) DO UPDATE SET node = excluded.node, at = excluded.at
		WHERE submit_keys.queue_id = '' AND submit_keys.at < $4`, key, k.node, now, now-int64(claimLease/time.Second))
	if err != nil {
		return "", false, err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return "", true, nil
	}
	var id string
	if err := k.db.QueryRowContext(ctx, `SELECT queue_id FROM submit_keys WHERE key = $1`, key).Scan(&id); err != nil {
		return "", false, err
	}
	if id == "" {
		return "", false, errors.New("another node is queueing a message with this key; try again")
	}
	return id, false, nil
}

// settle records the queue ID of a claimed key.
func (k *sharedKeys) settle(ctx context.Context, key, id string) error {
	_, err := k.db.ExecContext(context.WithoutCancel(ctx), `UPDATE submit_keys SET queue_id = $1, at = $2 WHERE key = $3`, id, time.Now().Unix(), key)
	return err
}

// release gives up a claim whose message was not queued.
func (k *sharedKeys) release(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k.db.ExecContext(ctx, `DELETE FROM submit_keys WHERE key = $1 AND queue_id = ''`, key)
}
