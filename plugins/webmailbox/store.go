package webmailbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
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
	// client and account in memory (throttle.go). Kept for the schema.
	Failed      int
	LockedUntil time.Time
	Created     time.Time
	LastActive  time.Time
	WarnedAt    time.Time // inactivity warning sent
	UsedBytes   int64
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

// Store is the persistence the plugin needs. SQLiteStore implements it for
// one machine; a PostgreSQL implementation for several nodes needs the
// same methods (the SQL is plain and portable apart from placeholders).
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

// SQLiteStore is the embedded Store (modernc.org/sqlite, no cgo).
type SQLiteStore struct{ db *sql.DB }

var _ Store = (*SQLiteStore)(nil)

const schema = `
CREATE TABLE IF NOT EXISTS mailbox (
	address TEXT PRIMARY KEY, state TEXT NOT NULL, language TEXT NOT NULL,
	public_key BLOB NOT NULL, wrapped_pw BLOB, wrapped_qa BLOB, wrapped_mk BLOB,
	question TEXT NOT NULL DEFAULT '', reset_allow INTEGER NOT NULL DEFAULT 0,
	pin_hash BLOB, tan_hash BLOB, failed INTEGER NOT NULL DEFAULT 0,
	locked_until INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL,
	last_active INTEGER NOT NULL, warned_at INTEGER NOT NULL DEFAULT 0,
	used_bytes INTEGER NOT NULL DEFAULT 0, pin_sealed BLOB);
CREATE TABLE IF NOT EXISTS message (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	mailbox TEXT NOT NULL REFERENCES mailbox(address) ON DELETE CASCADE,
	folder TEXT NOT NULL, received INTEGER NOT NULL, size INTEGER NOT NULL,
	unread INTEGER NOT NULL, meta BLOB NOT NULL, raw BLOB NOT NULL,
	reminded INTEGER NOT NULL DEFAULT 0, sender BLOB, queue_id TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS message_mailbox ON message(mailbox, folder, received);
CREATE TABLE IF NOT EXISTS token (
	hash BLOB PRIMARY KEY, mailbox TEXT NOT NULL REFERENCES mailbox(address) ON DELETE CASCADE,
	kind TEXT NOT NULL, expires INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS session (
	id_hash BLOB PRIMARY KEY, mailbox TEXT NOT NULL REFERENCES mailbox(address) ON DELETE CASCADE,
	wrapped BLOB NOT NULL, csrf TEXT NOT NULL, created INTEGER NOT NULL, last_seen INTEGER NOT NULL);
`

// OpenSQLite opens (creating if needed) the database at path.
func OpenSQLite(path string) (*SQLiteStore, error) {
	dsn := "file:" + path + "?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=secure_delete(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("webmailbox: opening %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // SQLite writes serialise anyway; avoids SQLITE_BUSY
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("webmailbox: creating schema in %s: %w", path, err)
	}
	return &SQLiteStore{db: db}, nil
}

// Close closes the database.
func (s *SQLiteStore) Close() error { return s.db.Close() }

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
	reset_allow, pin_hash, tan_hash, failed, locked_until, created, last_active, warned_at, used_bytes, pin_sealed`

func scanMailbox(sc interface{ Scan(...any) error }) (*Mailbox, error) {
	var m Mailbox
	var reset int
	var locked, created, active, warned int64
	err := sc.Scan(&m.Address, &m.State, &m.Language, &m.PublicKey, &m.WrappedPW, &m.WrappedQA, &m.WrappedMK,
		&m.Question, &reset, &m.PINHash, &m.TANHash, &m.Failed, &locked, &created, &active, &warned, &m.UsedBytes, &m.PINSealed)
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
func (s *SQLiteStore) GetMailbox(ctx context.Context, addr string) (*Mailbox, error) {
	return scanMailbox(s.db.QueryRowContext(ctx, `SELECT `+mailboxCols+` FROM mailbox WHERE address = ?`, strings.ToLower(addr)))
}

// CreateMailbox inserts m unless a mailbox for its address exists.
func (s *SQLiteStore) CreateMailbox(ctx context.Context, m *Mailbox) (bool, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO mailbox (`+mailboxCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT(address) DO NOTHING`,
		strings.ToLower(m.Address), m.State, m.Language, m.PublicKey, m.WrappedPW, m.WrappedQA, m.WrappedMK, m.Question,
		b2i(m.ResetAllow), m.PINHash, m.TANHash, m.Failed, ut(m.LockedUntil), ut(m.Created), ut(m.LastActive), ut(m.WarnedAt), m.UsedBytes, m.PINSealed)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// UpdateMailbox writes every field of m.
func (s *SQLiteStore) UpdateMailbox(ctx context.Context, m *Mailbox) error {
	res, err := s.db.ExecContext(ctx, `UPDATE mailbox SET state=?, language=?, public_key=?, wrapped_pw=?, wrapped_qa=?,
		wrapped_mk=?, question=?, reset_allow=?, pin_hash=?, tan_hash=?, failed=?, locked_until=?, created=?, last_active=?,
		warned_at=?, used_bytes=?, pin_sealed=? WHERE address=?`,
		m.State, m.Language, m.PublicKey, m.WrappedPW, m.WrappedQA, m.WrappedMK, m.Question, b2i(m.ResetAllow), m.PINHash,
		m.TANHash, m.Failed, ut(m.LockedUntil), ut(m.Created), ut(m.LastActive), ut(m.WarnedAt), m.UsedBytes, m.PINSealed, strings.ToLower(m.Address))
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteMailbox deletes the mailbox with its messages, tokens and sessions.
func (s *SQLiteStore) DeleteMailbox(ctx context.Context, addr string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM mailbox WHERE address = ?`, strings.ToLower(addr))
	return err
}

// ListMailboxes returns every mailbox.
func (s *SQLiteStore) ListMailboxes(ctx context.Context) ([]*Mailbox, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+mailboxCols+` FROM mailbox ORDER BY address`)
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
func (s *SQLiteStore) AddMessage(ctx context.Context, m *Message, limit int64) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if limit > 0 {
		var used int64
		if err := tx.QueryRowContext(ctx, `SELECT used_bytes FROM mailbox WHERE address = ?`, strings.ToLower(m.Mailbox)).Scan(&used); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return 0, ErrNotFound
			}
			return 0, err
		}
		if used+m.Size > limit {
			return 0, ErrQuota
		}
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO message (mailbox, folder, received, size, unread, meta, raw, reminded, sender, queue_id)
		VALUES (?,?,?,?,?,?,?,?,?,?)`, strings.ToLower(m.Mailbox), m.Folder, ut(m.Received), m.Size, b2i(m.Unread), m.Meta, m.Raw, m.Reminded, m.Sender, m.QueueID)
	if err != nil {
		return 0, err
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE mailbox SET used_bytes = used_bytes + ? WHERE address = ?`, m.Size, strings.ToLower(m.Mailbox)); err != nil {
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
func (s *SQLiteStore) GetMessage(ctx context.Context, mailbox string, id int64) (*Message, error) {
	return scanMessage(s.db.QueryRowContext(ctx, `SELECT `+messageCols+` FROM message WHERE mailbox = ? AND id = ?`, strings.ToLower(mailbox), id))
}

// HasQueueID reports whether a message with the queue id is stored.
func (s *SQLiteStore) HasQueueID(ctx context.Context, mailbox, queueID string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM message WHERE mailbox = ? AND queue_id = ? AND folder = 'inbox'`,
		strings.ToLower(mailbox), queueID).Scan(&n)
	return n > 0, err
}

// ListMessages returns a folder's messages, newest first.
func (s *SQLiteStore) ListMessages(ctx context.Context, mailbox, folder string) ([]*Message, error) {
	q := `SELECT ` + messageCols + ` FROM message WHERE mailbox = ?`
	args := []any{strings.ToLower(mailbox)}
	if folder != "" {
		q += ` AND folder = ?`
		args = append(args, folder)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY received DESC, id DESC`, args...)
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
func (s *SQLiteStore) MarkRead(ctx context.Context, mailbox string, id int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE message SET unread = 0 WHERE mailbox = ? AND id = ?`, strings.ToLower(mailbox), id)
	return err
}

// SetReminded records how many reminders were sent for a message.
func (s *SQLiteStore) SetReminded(ctx context.Context, mailbox string, id int64, n int) error {
	_, err := s.db.ExecContext(ctx, `UPDATE message SET reminded = ? WHERE mailbox = ? AND id = ?`, n, strings.ToLower(mailbox), id)
	return err
}

// DeleteMessage deletes a message and gives its size back to the quota.
func (s *SQLiteStore) DeleteMessage(ctx context.Context, mailbox string, id int64) error {
	mailbox = strings.ToLower(mailbox)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var size int64
	if err := tx.QueryRowContext(ctx, `SELECT size FROM message WHERE mailbox = ? AND id = ?`, mailbox, id).Scan(&size); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM message WHERE mailbox = ? AND id = ?`, mailbox, id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE mailbox SET used_bytes = MAX(0, used_bytes - ?) WHERE address = ?`, size, mailbox); err != nil {
		return err
	}
	return tx.Commit()
}

// DeleteMessagesBefore deletes every message received before t (retention).
func (s *SQLiteStore) DeleteMessagesBefore(ctx context.Context, t time.Time) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE mailbox SET used_bytes = MAX(0, used_bytes - (SELECT COALESCE(SUM(size),0)
		FROM message WHERE message.mailbox = mailbox.address AND received < ?))`, ut(t)); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM message WHERE received < ?`, ut(t))
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), tx.Commit()
}

// PutToken stores a token.
func (s *SQLiteStore) PutToken(ctx context.Context, t *Token) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO token (hash, mailbox, kind, expires, used) VALUES (?,?,?,?,?)`,
		t.Hash, strings.ToLower(t.Mailbox), t.Kind, ut(t.Expires), b2i(t.Used))
	return err
}

func (s *SQLiteStore) getToken(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, hash []byte, kind string, now time.Time) (*Token, error) {
	var t Token
	var exp int64
	var used int
	err := q.QueryRowContext(ctx, `SELECT hash, mailbox, kind, expires, used FROM token WHERE hash = ? AND kind = ?`, hash, kind).
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
func (s *SQLiteStore) PeekToken(ctx context.Context, hash []byte, kind string, now time.Time) (*Token, error) {
	return s.getToken(ctx, s.db, hash, kind, now)
}

// UseToken returns a valid token and marks it used, atomically.
func (s *SQLiteStore) UseToken(ctx context.Context, hash []byte, kind string, now time.Time) (*Token, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	t, err := s.getToken(ctx, tx, hash, kind, now)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE token SET used = 1 WHERE hash = ?`, hash); err != nil {
		return nil, err
	}
	return t, tx.Commit()
}

// PutSession stores a session.
func (s *SQLiteStore) PutSession(ctx context.Context, se *Session) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO session (id_hash, mailbox, wrapped, csrf, created, last_seen) VALUES (?,?,?,?,?,?)`,
		se.IDHash, strings.ToLower(se.Mailbox), se.Wrapped, se.CSRF, ut(se.Created), ut(se.LastSeen))
	return err
}

// GetSession returns a session by the hash of its id.
func (s *SQLiteStore) GetSession(ctx context.Context, idHash []byte) (*Session, error) {
	var se Session
	var c, l int64
	err := s.db.QueryRowContext(ctx, `SELECT id_hash, mailbox, wrapped, csrf, created, last_seen FROM session WHERE id_hash = ?`, idHash).
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
func (s *SQLiteStore) TouchSession(ctx context.Context, idHash []byte, t time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE session SET last_seen = ? WHERE id_hash = ?`, ut(t), idHash)
	return err
}

// DeleteSession ends a session.
func (s *SQLiteStore) DeleteSession(ctx context.Context, idHash []byte) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM session WHERE id_hash = ?`, idHash)
	return err
}

// DeleteSessionsBefore removes sessions idle since before t.
func (s *SQLiteStore) DeleteSessionsBefore(ctx context.Context, t time.Time) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM session WHERE last_seen < ?`, ut(t))
	return err
}

// DeleteSessionsOf ends the sessions of mailbox except keep.
func (s *SQLiteStore) DeleteSessionsOf(ctx context.Context, mailbox string, keep []byte) (int, error) {
	if keep == nil {
		keep = []byte{}
	}
	r, err := s.db.ExecContext(ctx, `DELETE FROM session WHERE mailbox = ? AND id_hash != ?`, strings.ToLower(mailbox), keep)
	if err != nil {
		return 0, err
	}
	n, err := r.RowsAffected()
	return int(n), err
}
