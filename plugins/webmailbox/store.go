package webmailbox

import (
	"context"
	"crypto/hmac"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

// ErrNotFound is returned when a mailbox, message, token or session does
// not exist.
var ErrNotFound = errors.New("webmailbox: not found")

// Mailbox states.
const (
	StatePending = "pending" // created by the first message, not activated
	StateActive  = "active"
)

// Mailbox is one recipient's mailbox. Secrets are stored only wrapped or
// hashed.
type Mailbox struct {
	Address    string
	State      string
	Language   string // "de" or "en"
	PublicKey  []byte
	WrappedPW  []byte // private key under argon2id(password)
	WrappedQA  []byte // private key under argon2id(answer); nil in no-reset mode
	WrappedMK  []byte // private key under the master key; only while pending
	Question   string
	ResetAllow bool
	PINHash    []byte // sender's PIN (slowHash); nil without PIN
	PINSealed  []byte // the PIN under the master key, to tell senders again until activation
	TANHash    []byte // operator's TAN (slowHash); nil without TAN
	// Failed and LockedUntil are no longer used: guessing is limited per
	// client and account in memory and, with PostgreSQL, in
	// webmailbox_failures (throttle.go). Kept for the schema.
	Failed      int
	LockedUntil time.Time
	Created     time.Time
	LastActive  time.Time
	WarnedAt    time.Time // inactivity warning sent
	UsedBytes   int64
	// TimeZone the owner chose for dates (IANA name); "" means the
	// organisation's time_zone.
	TimeZone string
}

// Message is one stored message. Raw and Meta are sealed to the mailbox's
// public key; only Size, times and flags are plain.
type Message struct {
	ID       int64
	Mailbox  string
	Folder   string // "inbox" or "sent"
	Received time.Time
	Size     int64
	Unread   bool
	Meta     []byte // sealed JSON: from, to, subject, date
	Raw      []byte // sealed RFC 5322 message
	Reminded int    // reminders sent for this message
	// Sender is the envelope sender sealed with the master key (for
	// reminders to the sender before the recipient ever logs in).
	Sender []byte
	// QueueID is the host's queue id of a diverted message: a retried
	// Transform for the same message does not store it twice.
	QueueID string
}

// Token is a single-use link token (activation); only its hash is stored.
type Token struct {
	Hash    []byte
	Mailbox string
	Kind    string
	Expires time.Time
	Used    bool
}

// Session is a login session. The private key is wrapped by a key that
// only the browser's cookie holds.
type Session struct {
	IDHash   []byte
	Mailbox  string
	Wrapped  []byte
	CSRF     string
	Created  time.Time
	LastSeen time.Time
}

// Store is the persistence the plugin needs. SQLStore implements it on
// SQLite for one machine and on PostgreSQL for several nodes.
type Store interface {
	GetMailbox(ctx context.Context, addr string) (*Mailbox, error)
	CreateMailbox(ctx context.Context, m *Mailbox) (created bool, err error)
	UpdateMailbox(ctx context.Context, m *Mailbox) error
	DeleteMailbox(ctx context.Context, addr string) error
	ListMailboxes(ctx context.Context) ([]*Mailbox, error)

	// AddMessage stores m and adds its size to the mailbox's usage; with
	// limit > 0 it fails with ErrQuota, storing nothing, when the usage
	// would exceed limit (checked atomically).
	AddMessage(ctx context.Context, m *Message, limit int64) (int64, error)
	GetMessage(ctx context.Context, mailbox string, id int64) (*Message, error)
	// HasQueueID reports whether the mailbox holds the message with the
	// host's queue id (an earlier, interrupted Transform stored it).
	HasQueueID(ctx context.Context, mailbox, queueID string) (bool, error)
	ListMessages(ctx context.Context, mailbox, folder string) ([]*Message, error)
	MarkRead(ctx context.Context, mailbox string, id int64) error
	SetReminded(ctx context.Context, mailbox string, id int64, n int) error
	DeleteMessage(ctx context.Context, mailbox string, id int64) error
	DeleteMessagesBefore(ctx context.Context, t time.Time) (int, error)

	PutToken(ctx context.Context, t *Token) error
	// UseToken marks the token used and returns it; ErrNotFound if it does
	// not exist, was used, or expired at now.
	UseToken(ctx context.Context, hash []byte, kind string, now time.Time) (*Token, error)
	PeekToken(ctx context.Context, hash []byte, kind string, now time.Time) (*Token, error)

	PutSession(ctx context.Context, s *Session) error
	GetSession(ctx context.Context, idHash []byte) (*Session, error)
	TouchSession(ctx context.Context, idHash []byte, t time.Time) error
	DeleteSession(ctx context.Context, idHash []byte) error
	DeleteSessionsBefore(ctx context.Context, t time.Time) error
	// DeleteSessionsOf ends every session of mailbox but the one whose id
	// hash is keep (nil: all) and says how many ended.
	DeleteSessionsOf(ctx context.Context, mailbox string, keep []byte) (int, error)

	Close() error
}

// SQLStore is the Store over SQL: an embedded SQLite file
// (modernc.org/sqlite, no cgo) on one machine, or the PostgreSQL database
// that the nodes of a cluster share, so that a mailbox activated through
// one node is read through any other. The SQL is the same for both;
// sqldb.Dialect fills in the differences. Message bodies and metadata are
// stored sealed to the mailbox's key in either: the database alone
// reveals no content.
type SQLStore struct {
	db *sql.DB
	d  sqldb.Dialect
}

var _ Store = (*SQLStore)(nil)

// schema is the versioned schema (component "webmailbox"), one statement
// a step. Versions 1-5 are the tables from before versioning, hence IF NOT
// EXISTS; INTEGER is 64-bit in SQLite but not in PostgreSQL, hence INT.
func schema(d sqldb.Dialect) []string {
	in, blob, id := "INTEGER", d.Blob(), d.AutoID()
	if d == sqldb.Postgres {
		in = "BIGINT"
	}
	return []string{
		`CREATE TABLE IF NOT EXISTS mailbox (
	address TEXT PRIMARY KEY, state TEXT NOT NULL, language TEXT NOT NULL,
	public_key ` + blob + ` NOT NULL, wrapped_pw ` + blob + `, wrapped_qa ` + blob + `, wrapped_mk ` + blob + `,
	question TEXT NOT NULL DEFAULT '', reset_allow ` + in + ` NOT NULL DEFAULT 0,
	pin_hash ` + blob + `, tan_hash ` + blob + `, failed ` + in + ` NOT NULL DEFAULT 0,
	locked_until ` + in + ` NOT NULL DEFAULT 0, created ` + in + ` NOT NULL,
	last_active ` + in + ` NOT NULL, warned_at ` + in + ` NOT NULL DEFAULT 0,
	used_bytes ` + in + ` NOT NULL DEFAULT 0, pin_sealed ` + blob + `)`,
		`CREATE TABLE IF NOT EXISTS message (
	id ` + id + `,
	mailbox TEXT NOT NULL REFERENCES mailbox(address) ON DELETE CASCADE,
	folder TEXT NOT NULL, received ` + in + ` NOT NULL, size ` + in + ` NOT NULL,
	unread ` + in + ` NOT NULL, meta ` + blob + ` NOT NULL, raw ` + blob + ` NOT NULL,
	reminded ` + in + ` NOT NULL DEFAULT 0, sender ` + blob + `, queue_id TEXT NOT NULL DEFAULT '')`,
		`CREATE INDEX IF NOT EXISTS message_mailbox ON message(mailbox, folder, received)`,
		`CREATE TABLE IF NOT EXISTS token (
	hash ` + blob + ` PRIMARY KEY, mailbox TEXT NOT NULL REFERENCES mailbox(address) ON DELETE CASCADE,
	kind TEXT NOT NULL, expires ` + in + ` NOT NULL, used ` + in + ` NOT NULL DEFAULT 0)`,
		`CREATE TABLE IF NOT EXISTS session (
	id_hash ` + blob + ` PRIMARY KEY, mailbox TEXT NOT NULL REFERENCES mailbox(address) ON DELETE CASCADE,
	wrapped ` + blob + ` NOT NULL, csrf TEXT NOT NULL, created ` + in + ` NOT NULL, last_seen ` + in + ` NOT NULL)`,
		// Version 6: settings every node must agree on (the master key's
		// check value).
		`CREATE TABLE IF NOT EXISTS webmailbox_meta (name TEXT PRIMARY KEY, value ` + blob + ` NOT NULL)`,
		// Version 7: guessing counters shared by the nodes (throttle.go).
		`CREATE TABLE IF NOT EXISTS webmailbox_failures (
	k TEXT PRIMARY KEY, n ` + in + ` NOT NULL, first_at ` + in + ` NOT NULL, last_at ` + in + ` NOT NULL)`,
		// Version 8: the time zone the owner chose ('' = the
		// organisation's). Append new steps; never change one.
		`ALTER TABLE mailbox ADD COLUMN time_zone TEXT NOT NULL DEFAULT ''`,
	}
}

// OpenSQLite opens (creating if needed) the database at path.
func OpenSQLite(path string) (*SQLStore, error) {
	db, err := sqldb.OpenSQLite(path, "secure_delete(1)")
	if err != nil {
		return nil, fmt.Errorf("webmailbox: %w", err)
	}
	if err := sqldb.Migrate(context.Background(), db, sqldb.SQLite, "webmailbox", schema(sqldb.SQLite)); err != nil {
		db.Close()
		return nil, fmt.Errorf("webmailbox: creating schema in %s: %w", path, err)
	}
	return &SQLStore{db: db, d: sqldb.SQLite}, nil
}

// OpenShared opens the store in the host's shared PostgreSQL database.
func OpenShared(ctx context.Context, c sdk.Database) (*SQLStore, error) {
	db, err := sqldb.OpenPostgres(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("webmailbox: %w", err)
	}
	if err := sqldb.Migrate(ctx, db, sqldb.Postgres, "webmailbox", schema(sqldb.Postgres)); err != nil {
		db.Close()
		return nil, fmt.Errorf("webmailbox: %w", err)
	}
	return &SQLStore{db: db, d: sqldb.Postgres}, nil
}

// failureCounters are the guessing counters the nodes share
// (throttle.go), or nil for SQLite: one machine counts in memory.
func (s *SQLStore) failureCounters() *sqldb.Counters {
	if s.d != sqldb.Postgres {
		return nil
	}
	return &sqldb.Counters{DB: s.db, Dialect: s.d, Table: "webmailbox_failures"}
}

// RunOnce runs a job once across the nodes sharing the store
// (sqldb.OnceRunner).
func (s *SQLStore) RunOnce(ctx context.Context, name string, period time.Duration, now time.Time, fn func(ctx context.Context) error) (bool, error) {
	return sqldb.RunOnce(ctx, s.db, s.d, name, period, now, fn)
}

// exec, query and row run SQL written with ? placeholders.
func (s *SQLStore) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return s.db.ExecContext(ctx, s.d.Rebind(q), args...)
}

func (s *SQLStore) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return s.db.QueryContext(ctx, s.d.Rebind(q), args...)
}

func (s *SQLStore) row(ctx context.Context, q string, args ...any) *sql.Row {
	return s.db.QueryRowContext(ctx, s.d.Rebind(q), args...)
}

// forUpdate locks the selected rows until the transaction ends
// (PostgreSQL; SQLite's transactions take the whole database).
func (s *SQLStore) forUpdate() string {
	if s.d == sqldb.Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// CheckMasterKey records the check value of the master key on first use
// and afterwards refuses a different one: every node sharing the database
// must use the same master key file, or mail stored by one could not be
// opened by another.
func (s *SQLStore) CheckMasterKey(ctx context.Context, check []byte) error {
	if _, err := s.exec(ctx, `INSERT INTO webmailbox_meta (name, value) VALUES ('master_key_check', ?) ON CONFLICT (name) DO NOTHING`, check); err != nil {
		return err
	}
	var have []byte
	if err := s.row(ctx, `SELECT value FROM webmailbox_meta WHERE name = 'master_key_check'`).Scan(&have); err != nil {
		return err
	}
	if !hmac.Equal(have, check) {
		return errors.New("webmailbox: the master key differs from the one this database was created with: copy the master key file of the first node to every node")
	}
	return nil
}

// Close closes the database.
func (s *SQLStore) Close() error { return s.db.Close() }

func ut(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func tu(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

const mailboxCols = `address, state, language, public_key, wrapped_pw, wrapped_qa, wrapped_mk, question,
	reset_allow, pin_hash, tan_hash, failed, locked_until, created, last_active, warned_at, used_bytes, pin_sealed, time_zone`

func scanMailbox(sc interface{ Scan(...any) error }) (*Mailbox, error) {
	var m Mailbox
	var reset int
	var locked, created, active, warned int64
	err := sc.Scan(&m.Address, &m.State, &m.Language, &m.PublicKey, &m.WrappedPW, &m.WrappedQA, &m.WrappedMK,
		&m.Question, &reset, &m.PINHash, &m.TANHash, &m.Failed, &locked, &created, &active, &warned, &m.UsedBytes, &m.PINSealed, &m.TimeZone)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	m.ResetAllow = reset == 1
	m.LockedUntil, m.Created, m.LastActive, m.WarnedAt = tu(locked), tu(created), tu(active), tu(warned)
	return &m, nil
}

// GetMailbox returns the mailbox for addr (lower-cased).
func (s *SQLStore) GetMailbox(ctx context.Context, addr string) (*Mailbox, error) {
	return scanMailbox(s.row(ctx, `SELECT `+mailboxCols+` FROM mailbox WHERE address = ?`, strings.ToLower(addr)))
}

// CreateMailbox inserts m unless a mailbox for its address exists.
func (s *SQLStore) CreateMailbox(ctx context.Context, m *Mailbox) (bool, error) {
	res, err := s.exec(ctx, `INSERT INTO mailbox (`+mailboxCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT(address) DO NOTHING`,
		strings.ToLower(m.Address), m.State, m.Language, m.PublicKey, m.WrappedPW, m.WrappedQA, m.WrappedMK, m.Question,
		b2i(m.ResetAllow), m.PINHash, m.TANHash, m.Failed, ut(m.LockedUntil), ut(m.Created), ut(m.LastActive), ut(m.WarnedAt), m.UsedBytes, m.PINSealed, m.TimeZone)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// UpdateMailbox writes every field of m.
func (s *SQLStore) UpdateMailbox(ctx context.Context, m *Mailbox) error {
	res, err := s.exec(ctx, `UPDATE mailbox SET state=?, language=?, public_key=?, wrapped_pw=?, wrapped_qa=?,
		wrapped_mk=?, question=?, reset_allow=?, pin_hash=?, tan_hash=?, failed=?, locked_until=?, created=?, last_active=?,
		warned_at=?, used_bytes=?, pin_sealed=?, time_zone=? WHERE address=?`,
		m.State, m.Language, m.PublicKey, m.WrappedPW, m.WrappedQA, m.WrappedMK, m.Question, b2i(m.ResetAllow), m.PINHash,
		m.TANHash, m.Failed, ut(m.LockedUntil), ut(m.Created), ut(m.LastActive), ut(m.WarnedAt), m.UsedBytes, m.PINSealed, m.TimeZone, strings.ToLower(m.Address))
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteMailbox deletes the mailbox with its messages, tokens and sessions.
func (s *SQLStore) DeleteMailbox(ctx context.Context, addr string) error {
	_, err := s.exec(ctx, `DELETE FROM mailbox WHERE address = ?`, strings.ToLower(addr))
	return err
}

// ListMailboxes returns every mailbox.
func (s *SQLStore) ListMailboxes(ctx context.Context) ([]*Mailbox, error) {
	rows, err := s.query(ctx, `SELECT `+mailboxCols+` FROM mailbox ORDER BY address`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Mailbox
	for rows.Next() {
		m, err := scanMailbox(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// AddMessage stores m within the quota limit (0: none).
func (s *SQLStore) AddMessage(ctx context.Context, m *Message, limit int64) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if limit > 0 {
		var used int64
		if err := tx.QueryRowContext(ctx, s.d.Rebind(`SELECT used_bytes FROM mailbox WHERE address = ?`+s.forUpdate()), strings.ToLower(m.Mailbox)).Scan(&used); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return 0, ErrNotFound
			}
			return 0, err
		}
		if used+m.Size > limit {
			return 0, ErrQuota
		}
	}
	var id int64
	err = tx.QueryRowContext(ctx, s.d.Rebind(`INSERT INTO message (mailbox, folder, received, size, unread, meta, raw, reminded, sender, queue_id)
		VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING id`), strings.ToLower(m.Mailbox), m.Folder, ut(m.Received), m.Size, b2i(m.Unread), m.Meta, m.Raw, m.Reminded, m.Sender, m.QueueID).Scan(&id)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, s.d.Rebind(`UPDATE mailbox SET used_bytes = used_bytes + ? WHERE address = ?`), m.Size, strings.ToLower(m.Mailbox)); err != nil {
		return 0, err
	}
	return id, tx.Commit()
}

const messageCols = `id, mailbox, folder, received, size, unread, meta, raw, reminded, sender, queue_id`

func scanMessage(sc interface{ Scan(...any) error }) (*Message, error) {
	var m Message
	var recv int64
	var unread int
	err := sc.Scan(&m.ID, &m.Mailbox, &m.Folder, &recv, &m.Size, &unread, &m.Meta, &m.Raw, &m.Reminded, &m.Sender, &m.QueueID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	m.Received, m.Unread = tu(recv), unread == 1
	return &m, nil
}

// GetMessage returns one message of a mailbox.
func (s *SQLStore) GetMessage(ctx context.Context, mailbox string, id int64) (*Message, error) {
	return scanMessage(s.row(ctx, `SELECT `+messageCols+` FROM message WHERE mailbox = ? AND id = ?`, strings.ToLower(mailbox), id))
}

// HasQueueID reports whether a message with the queue id is stored.
func (s *SQLStore) HasQueueID(ctx context.Context, mailbox, queueID string) (bool, error) {
	var n int
	err := s.row(ctx, `SELECT COUNT(*) FROM message WHERE mailbox = ? AND queue_id = ? AND folder = 'inbox'`,
		strings.ToLower(mailbox), queueID).Scan(&n)
	return n > 0, err
}

// ListMessages returns a folder's messages, newest first.
func (s *SQLStore) ListMessages(ctx context.Context, mailbox, folder string) ([]*Message, error) {
	q := `SELECT ` + messageCols + ` FROM message WHERE mailbox = ?`
	args := []any{strings.ToLower(mailbox)}
	if folder != "" {
		q += ` AND folder = ?`
		args = append(args, folder)
	}
	rows, err := s.query(ctx, q+` ORDER BY received DESC, id DESC`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// MarkRead clears the unread flag.
func (s *SQLStore) MarkRead(ctx context.Context, mailbox string, id int64) error {
	_, err := s.exec(ctx, `UPDATE message SET unread = 0 WHERE mailbox = ? AND id = ?`, strings.ToLower(mailbox), id)
	return err
}

// SetReminded records how many reminders were sent for a message.
func (s *SQLStore) SetReminded(ctx context.Context, mailbox string, id int64, n int) error {
	_, err := s.exec(ctx, `UPDATE message SET reminded = ? WHERE mailbox = ? AND id = ?`, n, strings.ToLower(mailbox), id)
	return err
}

// DeleteMessage deletes a message and gives its size back to the quota.
func (s *SQLStore) DeleteMessage(ctx context.Context, mailbox string, id int64) error {
	mailbox = strings.ToLower(mailbox)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var size int64
	if err := tx.QueryRowContext(ctx, s.d.Rebind(`SELECT size FROM message WHERE mailbox = ? AND id = ?`+s.forUpdate()), mailbox, id).Scan(&size); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	}
	res, err := tx.ExecContext(ctx, s.d.Rebind(`DELETE FROM message WHERE mailbox = ? AND id = ?`), mailbox, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound // another node deleted it meanwhile
	}
	if _, err := tx.ExecContext(ctx, s.d.Rebind(`UPDATE mailbox SET used_bytes = `+s.d.Greatest("0", "used_bytes - ?")+` WHERE address = ?`), size, mailbox); err != nil {
		return err
	}
	return tx.Commit()
}

// DeleteMessagesBefore deletes every message received before t (retention).
func (s *SQLStore) DeleteMessagesBefore(ctx context.Context, t time.Time) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, s.d.Rebind(`UPDATE mailbox SET used_bytes = `+s.d.Greatest("0", `used_bytes - (SELECT COALESCE(SUM(size),0)
		FROM message WHERE message.mailbox = mailbox.address AND received < ?)`)), ut(t)); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, s.d.Rebind(`DELETE FROM message WHERE received < ?`), ut(t))
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), tx.Commit()
}

// PutToken stores a token.
func (s *SQLStore) PutToken(ctx context.Context, t *Token) error {
	_, err := s.exec(ctx, `INSERT INTO token (hash, mailbox, kind, expires, used) VALUES (?,?,?,?,?)`,
		t.Hash, strings.ToLower(t.Mailbox), t.Kind, ut(t.Expires), b2i(t.Used))
	return err
}

func (s *SQLStore) getToken(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, hash []byte, kind string, now time.Time) (*Token, error) {
	var t Token
	var exp int64
	var used int
	err := q.QueryRowContext(ctx, s.d.Rebind(`SELECT hash, mailbox, kind, expires, used FROM token WHERE hash = ? AND kind = ?`), hash, kind).
		Scan(&t.Hash, &t.Mailbox, &t.Kind, &exp, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	t.Expires, t.Used = tu(exp), used == 1
	if t.Used || !now.Before(t.Expires) {
		return nil, ErrNotFound
	}
	return &t, nil
}

// PeekToken returns a valid token without using it.
func (s *SQLStore) PeekToken(ctx context.Context, hash []byte, kind string, now time.Time) (*Token, error) {
	return s.getToken(ctx, s.db, hash, kind, now)
}

// UseToken returns a valid token and marks it used, atomically.
func (s *SQLStore) UseToken(ctx context.Context, hash []byte, kind string, now time.Time) (*Token, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	t, err := s.getToken(ctx, tx, hash, kind, now)
	if err != nil {
		return nil, err
	}
	// used = 0 in the condition: of two nodes using the token at once,
	// the second finds it used once the first commits.
	res, err := tx.ExecContext(ctx, s.d.Rebind(`UPDATE token SET used = 1 WHERE hash = ? AND used = 0`), hash)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, ErrNotFound
	}
	return t, tx.Commit()
}

// PutSession stores a session.
func (s *SQLStore) PutSession(ctx context.Context, se *Session) error {
	_, err := s.exec(ctx, `INSERT INTO session (id_hash, mailbox, wrapped, csrf, created, last_seen) VALUES (?,?,?,?,?,?)`,
		se.IDHash, strings.ToLower(se.Mailbox), se.Wrapped, se.CSRF, ut(se.Created), ut(se.LastSeen))
	return err
}

// GetSession returns a session by the hash of its id.
func (s *SQLStore) GetSession(ctx context.Context, idHash []byte) (*Session, error) {
	var se Session
	var c, l int64
	err := s.row(ctx, `SELECT id_hash, mailbox, wrapped, csrf, created, last_seen FROM session WHERE id_hash = ?`, idHash).
		Scan(&se.IDHash, &se.Mailbox, &se.Wrapped, &se.CSRF, &c, &l)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	se.Created, se.LastSeen = tu(c), tu(l)
	return &se, nil
}

// TouchSession records activity.
func (s *SQLStore) TouchSession(ctx context.Context, idHash []byte, t time.Time) error {
	_, err := s.exec(ctx, `UPDATE session SET last_seen = ? WHERE id_hash = ?`, ut(t), idHash)
	return err
}

// DeleteSession ends a session.
func (s *SQLStore) DeleteSession(ctx context.Context, idHash []byte) error {
	_, err := s.exec(ctx, `DELETE FROM session WHERE id_hash = ?`, idHash)
	return err
}

// DeleteSessionsBefore removes sessions idle since before t.
func (s *SQLStore) DeleteSessionsBefore(ctx context.Context, t time.Time) error {
	_, err := s.exec(ctx, `DELETE FROM session WHERE last_seen < ?`, ut(t))
	return err
}

// DeleteSessionsOf ends the sessions of mailbox except keep.
func (s *SQLStore) DeleteSessionsOf(ctx context.Context, mailbox string, keep []byte) (int, error) {
	if keep == nil {
		keep = []byte{}
	}
	r, err := s.exec(ctx, `DELETE FROM session WHERE mailbox = ? AND id_hash != ?`, strings.ToLower(mailbox), keep)
	if err != nil {
		return 0, err
	}
	n, err := r.RowsAffected()
	return int(n), err
}
