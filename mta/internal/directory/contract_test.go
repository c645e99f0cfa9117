package directory_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/auth"
	"github.com/posthorn/posthorn/mta/internal/directory"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/testbed/pgtest"
)

// The fixture every backend holds:
//
//	example.test     postmaster, bob (password), alice (password, secure
//	                 alias at verify), carol (secure alias at the default
//	                 level); alias team -> bob, alice, friend@remote.example
//	catch.test       postmaster; catch-all postmaster
//	aliascatch.test  catch-all "everyone", an alias of postmaster@example.test
const (
	bobPW   = "bob's password"
	alicePW = "alice's password"
)

func testConfig() *conf.Config {
	return &conf.Config{
		Local:       conf.Local{MaildirRoot: "/m", RecipientDelimiter: "+"},
		SecureAlias: conf.SecureAlias{Subdomain: "secure", Level: conf.TLSEncrypt},
	}
}

// staticFixture is the fixture as a small site writes it today.
func staticFixture(t *testing.T) *directory.Directory {
	cfg := testConfig()
	cfg.Domains = []conf.Domain{
		{Name: "example.test", Mailboxes: []string{"postmaster", "carol"},
			Aliases: map[string][]string{"team": {"bob", "alice", "friend@remote.example"}}},
		{Name: "catch.test", Mailboxes: []string{"postmaster"}, CatchAll: "postmaster"},
		{Name: "aliascatch.test", CatchAll: "everyone", Aliases: map[string][]string{"everyone": {"postmaster@example.test"}}},
	}
	cfg.SecureAlias.Users = []string{"alice@example.test", "carol@example.test"}
	cfg.SecureAlias.Levels = map[string]conf.TLSLevel{"alice@example.test": conf.TLSVerify}
	pw := filepath.Join(t.TempDir(), "passwd")
	if err := auth.SetPassword(pw, "bob@example.test", bobPW); err != nil {
		t.Fatal(err)
	}
	if err := auth.SetPassword(pw, "alice@example.test", alicePW); err != nil {
		t.Fatal(err)
	}
	users, err := auth.Open(pw)
	if err != nil {
		t.Fatal(err)
	}
	d, err := directory.New(context.Background(), directory.NewStatic(cfg, users), directory.Options{Delimiter: "+"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// fill writes the fixture through a Writer.
func fill(t *testing.T, w directory.Writer) {
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	hash := func(pw string) string {
		h, err := auth.Hash(pw)
		must(err)
		return h
	}
	must(w.PutDomain(ctx, directory.Domain{Name: "Example.Test"}))
	must(w.PutDomain(ctx, directory.Domain{Name: "catch.test", CatchAll: "postmaster"}))
	must(w.PutDomain(ctx, directory.Domain{Name: "aliascatch.test", CatchAll: "everyone"}))
	must(w.PutMailbox(ctx, "postmaster@example.test", ""))
	must(w.PutMailbox(ctx, "Bob@example.test", hash(bobPW)))
	must(w.PutMailbox(ctx, "alice@example.test", hash(alicePW)))
	must(w.PutMailbox(ctx, "carol@example.test", ""))
	must(w.SetSecureAlias(ctx, "alice@example.test", true, "verify"))
	must(w.SetSecureAlias(ctx, "carol@example.test", true, ""))
	must(w.PutAlias(ctx, "team@example.test", []string{"bob", "alice", "friend@remote.example"}))
	must(w.PutMailbox(ctx, "postmaster@catch.test", ""))
	must(w.PutAlias(ctx, "everyone@aliascatch.test", []string{"postmaster@example.test"}))
}

func openFront(t *testing.T, b directory.Backend, ttl time.Duration) *directory.Directory {
	t.Helper()
	d, err := directory.New(context.Background(), b, directory.Options{Delimiter: "+", CacheSize: 1000, CacheTTL: ttl,
		Logger: slog.New(slog.DiscardHandler), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d.Start()
	t.Cleanup(func() { d.Close() })
	return d
}

func TestContract(t *testing.T) {
	t.Run("static", func(t *testing.T) {
		d := staticFixture(t)
		readContract(t, d)
		if _, ok := d.Writer(); ok {
			t.Error("the static directory offers a writer")
		}
	})
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "dir.db")
		open := func() *directory.SQL {
			s, err := directory.OpenSQLite(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		d := openFront(t, open(), time.Hour)
		w, _ := d.Writer()
		fill(t, w)
		d.Invalidate("")
		readContract(t, d)
		writeContract(t, d)
		// Opening again migrates nothing and sees the same data.
		d2 := openFront(t, open(), time.Hour)
		if _, err := d2.Address(context.Background(), "dave@example.test"); err != nil {
			t.Errorf("reopened: %v", err)
		}
		// An outage: the database closed under the directory.
		outageContract(t, d2, func() { d2.Backend().(*directory.SQL).DB().Close() })
	})
	t.Run("postgres", func(t *testing.T) {
		srv := pgtest.Start(t)
		db := srv.NewDatabase(t)
		open := func() *directory.SQL {
			s, err := directory.OpenPostgres(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		a := openFront(t, open(), time.Hour)
		w, _ := a.Writer()
		fill(t, w)
		a.Invalidate("")
		readContract(t, a)
		writeContract(t, a)

		// A second node: sees node A's changes through NOTIFY, long
		// before its hour-long TTL.
		b := openFront(t, open(), time.Hour)
		rb := router.NewWithDirectory(testConfig(), b)
		if _, _, ok := rb.SecureAlias("erin@secure.example.test"); ok {
			t.Fatal("erin has a secure alias before opting in")
		}
		if err := w.PutMailbox(context.Background(), "erin@example.test", ""); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "node B sees erin", func() bool { return rb.Check("erin@example.test") == nil })
		if err := w.SetSecureAlias(context.Background(), "erin@example.test", true, "dane-only"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "node B sees erin's opt-in", func() bool {
			_, l, ok := rb.SecureAlias("erin@secure.example.test")
			return ok && l == conf.TLSDaneOnly
		})
		// A change written by someone else (a portal writing SQL).
		s := b.Backend().(*directory.SQL)
		if _, err := s.DB().Exec("UPDATE directory_addresses SET secure_alias = FALSE WHERE address = 'erin@example.test'"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "node B sees a change made in SQL", func() bool {
			_, _, ok := rb.SecureAlias("erin@secure.example.test")
			return !ok
		})
		// The migrations ran once; a third open is a no-op.
		var n int
		if err := s.DB().QueryRow("SELECT COUNT(*) FROM posthorn_migrations WHERE component = 'directory'").Scan(&n); err != nil || n != 2 {
			t.Errorf("migrations recorded: %d, %v", n, err)
		}
		open().Close()

		outageContract(t, b, srv.Stop)
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readContract checks the fixture through the router, as RCPT, alias
// expansion, secure aliases and AUTH see it.
func readContract(t *testing.T, d *directory.Directory) {
	t.Helper()
	ctx := context.Background()
	r := router.NewWithDirectory(testConfig(), d)
	var names []string
	for _, dm := range d.Domains() {
		names = append(names, dm.Name)
	}
	sort.Strings(names)
	if want := []string{"aliascatch.test", "catch.test", "example.test"}; !reflect.DeepEqual(names, want) {
		t.Errorf("domains %v, want %v", names, want)
	}
	for addr, want := range map[string]error{
		"postmaster@example.test":        nil,
		"BOB@Example.Test":               nil,
		"bob+lists@example.test":         nil,
		"team@example.test":              nil,
		"nobody@example.test":            router.ErrNoSuchUser,
		"nobody+x@example.test":          router.ErrNoSuchUser,
		"anything@catch.test":            nil,
		"anything@aliascatch.test":       nil,
		"someone@remote.example":         nil,
		"alice@secure.example.test":      nil,
		"bob@secure.example.test":        router.ErrNoSuchUser,
		"team@secure.example.test":       router.ErrNoSuchUser,
		"alice+tag@secure.example.test":  nil,
		"nobody@secure.example.test":     router.ErrNoSuchUser,
		"postmaster@secure.catch.test":   router.ErrNoSuchUser,
		"someone@secure.remote.example":  nil,
		"carol@secure.example.test":      nil,
		"everyone@aliascatch.test":       nil,
		"postmaster@aliascatch.test":     nil,
		"Postmaster@EXAMPLE.TEST":        nil,
		"bob+lists+more@example.test":    nil,
		"team+x@example.test":            nil,
		"friend@remote.example":          nil,
		"nobody@secure.aliascatch.test":  router.ErrNoSuchUser,
		"x@secure.secure.example.test":   nil,
		"postmaster@secure.example.test": router.ErrNoSuchUser,
	} {
		if err := r.Check(addr); !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("Check(%s) = %v, want %v", addr, err, want)
		}
	}
	dests, err := r.Expand("team@example.test")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range dests {
		got = append(got, x.Addr)
	}
	if want := []string{"bob@example.test", "alice@example.test", "friend@remote.example"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Expand(team) = %v, want %v", got, want)
	}
	dests, err = r.Expand("who@aliascatch.test")
	if err != nil || len(dests) != 1 || dests[0].Mailbox != "postmaster@example.test" {
		t.Errorf("Expand(who@aliascatch.test) = %+v, %v", dests, err)
	}
	dests, err = r.Expand("bob+x@example.test")
	if err != nil || len(dests) != 1 || dests[0].Mailbox != "bob@example.test" || dests[0].Maildir != "/m/example.test/bob" {
		t.Errorf("Expand(bob+x) = %+v, %v", dests, err)
	}
	for addr, want := range map[string]string{
		"alice@secure.example.test": "verify",
		"carol@secure.example.test": "encrypt",
		"bob@secure.example.test":   "",
		"alice@example.test":        "",
	} {
		base, level, ok := r.SecureAlias(addr)
		if ok != (want != "") || ok && level.String() != want || ok && base != directory.Normalize(addr[:len(addr)-len("secure.example.test")]+"example.test") {
			t.Errorf("SecureAlias(%s) = %q, %q, %v; want level %q", addr, base, level, ok, want)
		}
	}
	if ok, err := r.Owns("bob@example.test", "team@example.test"); !ok || err != nil {
		t.Errorf("bob does not own team@: %v", err)
	}
	for _, c := range []struct {
		user, pw string
		want     bool
	}{
		{"bob@example.test", bobPW, true},
		{"BOB@example.test", bobPW, true},
		{"bob@example.test", alicePW, false},
		{"alice@example.test", alicePW, true},
		{"carol@example.test", "", false},
		{"team@example.test", bobPW, false},
		{"nobody@example.test", bobPW, false},
	} {
		ok, err := d.Authenticate(ctx, c.user, c.pw)
		if ok != c.want || err != nil {
			t.Errorf("Authenticate(%s) = %v, %v; want %v", c.user, ok, err, c.want)
		}
	}
}

// writeContract checks the writer and that every change is seen by the
// next lookup, cached or not.
func writeContract(t *testing.T, d *directory.Directory) {
	t.Helper()
	ctx := context.Background()
	r := router.NewWithDirectory(testConfig(), d)
	w, ok := d.Writer()
	if !ok {
		t.Fatal("no writer")
	}
	// A negative answer is cached, and dropped by the write.
	if err := r.Check("dave@example.test"); !errors.Is(err, router.ErrNoSuchUser) {
		t.Fatalf("dave before: %v", err)
	}
	if err := w.PutMailbox(ctx, "dave@example.test", ""); err != nil {
		t.Fatal(err)
	}
	if err := r.Check("dave@example.test"); err != nil {
		t.Errorf("dave after PutMailbox: %v", err)
	}
	// Opt-in and level take effect on the next lookup.
	if _, _, ok := r.SecureAlias("bob@secure.example.test"); ok {
		t.Fatal("bob has a secure alias")
	}
	if err := w.SetSecureAlias(ctx, "bob@example.test", true, "dane-only"); err != nil {
		t.Fatal(err)
	}
	if _, l, ok := r.SecureAlias("bob@secure.example.test"); !ok || l != conf.TLSDaneOnly {
		t.Errorf("bob after opt-in: %q %v", l, ok)
	}
	if err := w.SetSecureAlias(ctx, "bob@example.test", false, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := r.SecureAlias("bob@secure.example.test"); ok {
		t.Error("bob still has a secure alias after opting out")
	}
	// A new password works at once, the old one no longer.
	h, _ := auth.Hash("bob's new password")
	if err := w.PutMailbox(ctx, "bob@example.test", h); err != nil {
		t.Fatal(err)
	}
	if ok, _ := d.Authenticate(ctx, "bob@example.test", "bob's new password"); !ok {
		t.Error("new password refused")
	}
	if ok, _ := d.Authenticate(ctx, "bob@example.test", bobPW); ok {
		t.Error("old password still accepted")
	}
	// PutMailbox without a hash keeps the password.
	if err := w.PutMailbox(ctx, "bob@example.test", ""); err != nil {
		t.Fatal(err)
	}
	if ok, _ := d.Authenticate(ctx, "bob@example.test", "bob's new password"); !ok {
		t.Error("password lost by PutMailbox without a hash")
	}
	// Conflicts and bad input.
	for name, err := range map[string]error{
		"alias over mailbox":  w.PutAlias(ctx, "bob@example.test", []string{"x@y.example"}),
		"mailbox over alias":  w.PutMailbox(ctx, "team@example.test", ""),
		"unknown domain":      w.PutMailbox(ctx, "x@unknown.example", ""),
		"alias without":       w.PutAlias(ctx, "empty@example.test", nil),
		"bad level":           w.SetSecureAlias(ctx, "bob@example.test", true, "may"),
		"secure on an alias":  w.SetSecureAlias(ctx, "team@example.test", true, ""),
		"delete unknown":      w.DeleteAddress(ctx, "ghost@example.test"),
		"delete unknown dom.": w.DeleteDomain(ctx, "ghost.example"),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !errors.Is(err, directory.ErrConflict) && !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("%s: %v is neither ErrConflict nor ErrNotFound", name, err)
		}
	}
	// Aliases change at once.
	if err := w.PutAlias(ctx, "team@example.test", []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	if dests, err := r.Expand("team@example.test"); err != nil || len(dests) != 1 || dests[0].Mailbox != "dave@example.test" {
		t.Errorf("team after change: %+v %v", dests, err)
	}
	// Paging through a domain.
	var all []string
	after := ""
	for {
		page, err := w.ListAddresses(ctx, "example.test", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, a := range page {
			all = append(all, a.Addr)
		}
		after = page[len(page)-1].Addr
	}
	if want := []string{"alice@example.test", "bob@example.test", "carol@example.test", "dave@example.test", "postmaster@example.test", "team@example.test"}; !reflect.DeepEqual(all, want) {
		t.Errorf("ListAddresses: %v, want %v", all, want)
	}
	// A deleted domain is no longer local, its addresses are gone.
	if err := w.DeleteDomain(ctx, "catch.test"); err != nil {
		t.Fatal(err)
	}
	if r.IsLocal("x@catch.test") {
		t.Error("catch.test still local")
	}
	if err := w.PutDomain(ctx, directory.Domain{Name: "catch.test"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Check("postmaster@catch.test"); !errors.Is(err, router.ErrNoSuchUser) {
		t.Errorf("postmaster@catch.test survived its domain: %v", err)
	}
	if err := w.DeleteAddress(ctx, "dave@example.test"); err != nil {
		t.Fatal(err)
	}
	if err := r.Check("dave@example.test"); !errors.Is(err, router.ErrNoSuchUser) {
		t.Errorf("dave after delete: %v", err)
	}
	if err := w.PutMailbox(ctx, "dave@example.test", ""); err != nil {
		t.Fatal(err)
	}
}

// outageContract: with the backend gone, an address seen before is still
// answered from the cache, an unseen one is an ErrUnavailable (never
// ErrNoSuchUser, which would be a 5xx), and AUTH says "try later".
func outageContract(t *testing.T, d *directory.Directory, stop func()) {
	t.Helper()
	r := router.NewWithDirectory(testConfig(), d)
	if err := r.Check("dave@example.test"); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := r.Check("dave@example.test"); err != nil {
		t.Errorf("cached address during the outage: %v", err)
	}
	err := r.Check("unseen@example.test")
	if !errors.Is(err, router.ErrUnavailable) || errors.Is(err, router.ErrNoSuchUser) {
		t.Errorf("unseen address during the outage: %v, want ErrUnavailable", err)
	}
	if _, err := d.Authenticate(context.Background(), "unseen2@example.test", "x"); !errors.Is(err, directory.ErrUnavailable) {
		t.Errorf("AUTH during the outage: %v, want ErrUnavailable", err)
	}
	if ok, err := r.Owns("dave@example.test", "unseen3@example.test"); ok || !errors.Is(err, router.ErrUnavailable) {
		t.Errorf("Owns during the outage: %v %v", ok, err)
	}
	// A secure-alias subdomain fails closed: an alias with no valid
	// level, which never connects (delivery defers).
	if _, level, ok := r.SecureAlias("unseen4@secure.example.test"); !ok || level != conf.TLSUnset {
		t.Errorf("SecureAlias during the outage: %v %v, want TLSUnset", level, ok)
	}
}
