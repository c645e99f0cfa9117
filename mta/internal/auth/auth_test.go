package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
)

func TestHashVerify(t *testing.T) {
	h, err := Hash("s3cret-pass")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("unexpected hash format %q", h)
	}
	if ok, err := Verify(h, "s3cret-pass"); !ok || err != nil {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, _ := Verify(h, "s3cret-pasS"); ok {
		t.Fatal("wrong password accepted")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5", "$argon2id$v=19$m=0,t=1,p=1$c2FsdHNhbHQ$a2V5",
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5", "plain"} {
		if _, err := Verify(bad, "x"); err == nil {
			t.Errorf("Verify(%q) accepted a malformed hash", bad)
		}
	}
}

func TestPasswordFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "passwd")
	if err := SetPassword(path, "Alice@Example.Test", "short"); err == nil {
		t.Fatal("short password accepted")
	}
	if err := SetPassword(path, "alice", "long enough"); err == nil {
		t.Fatal("user without domain accepted")
	}
	if err := SetPassword(path, "Alice@Example.Test", "first password"); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(path, "bob@example.test", "bobs password"); err != nil {
		t.Fatal(err)
	}
	u, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if !u.Authenticate("alice@example.test", "first password") || u.Authenticate("alice@example.test", "bobs password") {
		t.Fatal("authentication wrong")
	}
	if !u.Exists("ALICE@example.test") || u.Exists("carol@example.test") {
		t.Fatal("Exists wrong")
	}
	// Changing a password replaces the line and the daemon sees it
	// without a restart.
	if err := SetPassword(path, "alice@example.test", "second password"); err != nil {
		t.Fatal(err)
	}
	if u.Authenticate("alice@example.test", "first password") || !u.Authenticate("alice@example.test", "second password") {
		t.Fatal("password change not picked up")
	}
	b, _ := os.ReadFile(path)
	if n := strings.Count(string(b), "alice@example.test:"); n != 1 {
		t.Fatalf("alice has %d lines", n)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("password file mode %v", st.Mode().Perm())
	}
	// A broken file is reported with its line.
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("# comment\nnot a valid line\n"), 0o600)
	if _, err := Open(bad); err == nil || !strings.Contains(err.Error(), "bad:2:") {
		t.Fatalf("want error naming line 2, got %v", err)
	}
	// A missing file is no users.
	u, err = Open(filepath.Join(t.TempDir(), "none"))
	if err != nil || u.Authenticate("a@b", "whatever1") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestSASL(t *testing.T) {
	check := func(u, p string) error {
		if u == "a@b.c" && p == "pw" {
			return nil
		}
		return ErrAuthFailed
	}
	var got string
	done := func(u string) { got = u }

	s := LoginServer(check, done)
	ch, fin, err := s.Next(nil)
	if string(ch) != "Username:" || fin || err != nil {
		t.Fatalf("step 1: %q %v %v", ch, fin, err)
	}
	ch, _, _ = s.Next([]byte("a@b.c"))
	if string(ch) != "Password:" {
		t.Fatalf("step 2: %q", ch)
	}
	if _, fin, err := s.Next([]byte("pw")); !fin || err != nil || got != "a@b.c" {
		t.Fatalf("step 3: %v %v %q", fin, err, got)
	}
	s = LoginServer(check, done)
	s.Next([]byte("a@b.c")) // initial response
	if _, _, err := s.Next([]byte("wrong")); err == nil {
		t.Fatal("wrong password accepted")
	}

	p := PlainServer(check, done)
	if _, _, err := p.Next([]byte("\x00a@b.c\x00pw")); err != nil {
		t.Fatal(err)
	}
	p = PlainServer(check, done)
	if _, _, err := p.Next([]byte("other@x\x00a@b.c\x00pw")); err == nil {
		t.Fatal("authorization identity for someone else accepted")
	}
	var _ sasl.Server = p
}
