package webmailbox

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk/sqldb"
	"github.com/posthorn/posthorn/testbed/pgtest"
)

// storeSuite checks the Store contract; a PostgreSQL store runs the same.
func storeSuite(t *testing.T, st Store) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mb := &Mailbox{Address: "Bob@X.test", State: StatePending, Language: "de", PublicKey: []byte{1}, Created: now, LastActive: now}
	if created, err := st.CreateMailbox(ctx, mb); err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if created, err := st.CreateMailbox(ctx, mb); err != nil || created {
		t.Fatalf("second create: %v %v", created, err)
	}
	got, err := st.GetMailbox(ctx, "bob@x.TEST")
	if err != nil || got.Address != "bob@x.test" || !got.Created.Equal(now) {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := st.GetMailbox(ctx, "none@x.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing mailbox: %v", err)
	}
	if got.TimeZone != "" {
		t.Errorf("new mailbox has time zone %q", got.TimeZone)
	}
	got.State, got.Failed, got.LockedUntil, got.TimeZone = StateActive, 2, now.Add(time.Hour), "America/New_York"
	if err := st.UpdateMailbox(ctx, got); err != nil {
		t.Fatal(err)
	}
	if g, _ := st.GetMailbox(ctx, "bob@x.test"); g.State != StateActive || g.Failed != 2 || !g.LockedUntil.Equal(now.Add(time.Hour)) || g.TimeZone != "America/New_York" {
		t.Errorf("update lost: %+v", g)
	}

	// Messages and quota.
	id, err := st.AddMessage(ctx, &Message{Mailbox: "bob@x.test", Folder: "inbox", Received: now, Size: 60, Unread: true, Meta: []byte{1}, Raw: []byte{2}, QueueID: "Q1"}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddMessage(ctx, &Message{Mailbox: "bob@x.test", Folder: "inbox", Received: now, Size: 50, Meta: []byte{1}, Raw: []byte{2}}, 100); !errors.Is(err, ErrQuota) {
		t.Errorf("over quota: %v", err)
	}
	if _, err := st.AddMessage(ctx, &Message{Mailbox: "bob@x.test", Folder: "sent", Received: now.Add(time.Hour), Size: 50, Meta: []byte{1}, Raw: []byte{2}}, 0); err != nil {
		t.Errorf("no limit: %v", err)
	}
	if dup, _ := st.HasQueueID(ctx, "bob@x.test", "Q1"); !dup {
		t.Error("queue id not found")
	}
	if ms, _ := st.ListMessages(ctx, "bob@x.test", "inbox"); len(ms) != 1 || ms[0].ID != id || !ms[0].Unread {
		t.Errorf("inbox: %+v", ms)
	}
	if ms, _ := st.ListMessages(ctx, "bob@x.test", ""); len(ms) != 2 || ms[0].Folder != "sent" {
		t.Errorf("all, newest first: %+v", ms)
	}
	st.MarkRead(ctx, "bob@x.test", id)
	if m, _ := st.GetMessage(ctx, "bob@x.test", id); m.Unread {
		t.Error("still unread")
	}
	if _, err := st.GetMessage(ctx, "other@x.test", id); !errors.Is(err, ErrNotFound) {
		t.Errorf("message of another mailbox: %v", err)
	}
	if err := st.DeleteMessage(ctx, "bob@x.test", id); err != nil {
		t.Fatal(err)
	}
	if g, _ := st.GetMailbox(ctx, "bob@x.test"); g.UsedBytes != 50 {
		t.Errorf("used after delete = %d", g.UsedBytes)
	}
	if n, err := st.DeleteMessagesBefore(ctx, now.Add(2*time.Hour)); err != nil || n != 1 {
		t.Errorf("retention: %d %v", n, err)
	}
	if g, _ := st.GetMailbox(ctx, "bob@x.test"); g.UsedBytes != 0 {
		t.Errorf("used after retention = %d", g.UsedBytes)
	}

	// Tokens: single use, expiring.
	tok := &Token{Hash: []byte("h1"), Mailbox: "bob@x.test", Kind: "activate", Expires: now.Add(time.Hour)}
	if err := st.PutToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PeekToken(ctx, []byte("h1"), "other", now); !errors.Is(err, ErrNotFound) {
		t.Errorf("wrong kind: %v", err)
	}
	if _, err := st.UseToken(ctx, []byte("h1"), "activate", now.Add(2*time.Hour)); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired: %v", err)
	}
	if _, err := st.UseToken(ctx, []byte("h1"), "activate", now); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UseToken(ctx, []byte("h1"), "activate", now); !errors.Is(err, ErrNotFound) {
		t.Errorf("reused: %v", err)
	}

	// Sessions.
	se := &Session{IDHash: []byte("s1"), Mailbox: "bob@x.test", Wrapped: []byte{3}, CSRF: "c", Created: now, LastSeen: now}
	if err := st.PutSession(ctx, se); err != nil {
		t.Fatal(err)
	}
	st.TouchSession(ctx, []byte("s1"), now.Add(time.Minute))
	if g, err := st.GetSession(ctx, []byte("s1")); err != nil || !g.LastSeen.Equal(now.Add(time.Minute)) {
		t.Errorf("session: %+v %v", g, err)
	}
	st.DeleteSessionsBefore(ctx, now.Add(time.Hour))
	if _, err := st.GetSession(ctx, []byte("s1")); !errors.Is(err, ErrNotFound) {
		t.Errorf("idle session kept: %v", err)
	}

	// Deleting a mailbox takes everything with it.
	st.AddMessage(ctx, &Message{Mailbox: "bob@x.test", Folder: "inbox", Received: now, Size: 1, Meta: []byte{1}, Raw: []byte{2}}, 0)
	st.PutSession(ctx, &Session{IDHash: []byte("s2"), Mailbox: "bob@x.test", Wrapped: []byte{3}, CSRF: "c", Created: now, LastSeen: now})
	if err := st.DeleteMailbox(ctx, "bob@x.test"); err != nil {
		t.Fatal(err)
	}
	if ms, _ := st.ListMessages(ctx, "bob@x.test", ""); len(ms) != 0 {
		t.Error("messages outlived their mailbox")
	}
	if _, err := st.GetSession(ctx, []byte("s2")); !errors.Is(err, ErrNotFound) {
		t.Error("session outlived its mailbox")
	}
}

// migrationSuite: a database at schema version 7 (before time zones)
// with a mailbox in it is migrated by opening it: the mailbox keeps its
// fields and gets the organisation's zone ("") until its owner chooses.
func migrationSuite(t *testing.T, db *sql.DB, d sqldb.Dialect, open func() (Store, error)) {
	ctx := context.Background()
	if err := sqldb.Migrate(ctx, db, d, "webmailbox", schema(d)[:7]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, d.Rebind(`INSERT INTO mailbox (address, state, language, public_key, created, last_active) VALUES (?,?,?,?,?,?)`),
		"old@x.test", StateActive, "en", []byte{1}, 1, 2); err != nil {
		t.Fatal(err)
	}
	st, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mb, err := st.GetMailbox(ctx, "old@x.test")
	if err != nil || mb.TimeZone != "" || mb.Language != "en" || mb.State != StateActive {
		t.Fatalf("after migration: %+v %v", mb, err)
	}
	mb.TimeZone = "Asia/Tokyo"
	if err := st.UpdateMailbox(ctx, mb); err != nil {
		t.Fatal(err)
	}
	if mb, _ := st.GetMailbox(ctx, "old@x.test"); mb.TimeZone != "Asia/Tokyo" {
		t.Errorf("time zone not stored: %q", mb.TimeZone)
	}
	var v int
	if err := db.QueryRowContext(ctx, d.Rebind(`SELECT MAX(version) FROM posthorn_migrations WHERE component = ?`), "webmailbox").Scan(&v); err != nil || v != len(schema(d)) {
		t.Errorf("schema version %d (%v), want %d", v, err, len(schema(d)))
	}
}

func TestSQLiteMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sqldb.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	migrationSuite(t, db, sqldb.SQLite, func() (Store, error) { return OpenSQLite(path) })
}

func TestPostgresMigration(t *testing.T) {
	c := pgtest.Start(t).NewShared(t)
	ctx := context.Background()
	db, err := sqldb.OpenPostgres(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	migrationSuite(t, db, sqldb.Postgres, func() (Store, error) { return OpenShared(ctx, c) })
}

func TestSQLiteStore(t *testing.T) {
	st, err := OpenSQLite(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	storeSuite(t, st)
	masterKeySuite(t, st)
}

// TestPostgresStore runs the same contract against a real PostgreSQL, and
// what only several nodes can do to one database: two stores (two nodes)
// racing for one activation token, one quota and one message.
func TestPostgresStore(t *testing.T) {
	db := pgtest.Start(t).NewShared(t)
	ctx := context.Background()
	st, err := OpenShared(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	storeSuite(t, st)
	masterKeySuite(t, st)

	// A second node opens the same database: the schema is there.
	st2, err := OpenShared(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := st.CreateMailbox(ctx, &Mailbox{Address: "c@x.test", State: StatePending, Language: "en", PublicKey: []byte{1}, Created: now, LastActive: now}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		h := []byte{byte(i)}
		if err := st.PutToken(ctx, &Token{Hash: h, Mailbox: "c@x.test", Kind: "activate", Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		for _, s := range []Store{st, st2, st, st2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.UseToken(ctx, h, "activate", now); err == nil {
					wins.Add(1)
				} else if !errors.Is(err, ErrNotFound) {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("token %d used %d times", i, n)
		}
	}
	// 40 messages of 10 bytes against a quota of 100, from both nodes.
	var stored atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		s := []Store{st, st2}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.AddMessage(ctx, &Message{Mailbox: "c@x.test", Folder: "inbox", Received: now, Size: 10, Meta: []byte{1}, Raw: []byte{2}}, 100)
			if err == nil {
				stored.Add(1)
			} else if !errors.Is(err, ErrQuota) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	mb, _ := st2.GetMailbox(ctx, "c@x.test")
	if stored.Load() != 10 || mb.UsedBytes != 100 {
		t.Fatalf("stored %d messages, used %d bytes; want 10 and 100", stored.Load(), mb.UsedBytes)
	}
	// Both nodes delete the same message: the quota is given back once.
	ms, _ := st.ListMessages(ctx, "c@x.test", "inbox")
	var okDel atomic.Int32
	for _, s := range []Store{st, st2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.DeleteMessage(ctx, "c@x.test", ms[0].ID) == nil {
				okDel.Add(1)
			}
		}()
	}
	wg.Wait()
	if mb, _ := st.GetMailbox(ctx, "c@x.test"); okDel.Load() != 1 || mb.UsedBytes != 90 {
		t.Fatalf("deleted %d times, used %d; want 1 and 90", okDel.Load(), mb.UsedBytes)
	}
}

// masterKeySuite: the first master key is recorded, another is refused.
func masterKeySuite(t *testing.T, st *SQLStore) {
	ctx := context.Background()
	a, b := masterKeyCheck([]byte("key a")), masterKeyCheck([]byte("key b"))
	if err := st.CheckMasterKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := st.CheckMasterKey(ctx, a); err != nil {
		t.Fatalf("same key again: %v", err)
	}
	if err := st.CheckMasterKey(ctx, b); err == nil {
		t.Fatal("a different master key was accepted")
	}
}

func TestOpenSQLiteErrors(t *testing.T) {
	if _, err := OpenSQLite(filepath.Join(t.TempDir(), "no", "such", "dir", "t.db")); err == nil {
		t.Error("opened a database in a missing directory")
	}
}
