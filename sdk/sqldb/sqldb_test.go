package sqldb

import (
	"strings"
	"testing"

	"github.com/posthorn/posthorn/sdk"
)

func TestRebind(t *testing.T) {
	for _, c := range []struct{ in, pg string }{
		{"SELECT 1", "SELECT 1"},
		{"a = ? AND b = ?", "a = $1 AND b = $2"},
		{"x = '?' AND y = ? AND \"q?\" = ?", "x = '?' AND y = $1 AND \"q?\" = $2"},
		{"VALUES (?,?,?)", "VALUES ($1,$2,$3)"},
	} {
		if got := Postgres.Rebind(c.in); got != c.pg {
			t.Errorf("Rebind(%q) = %q, want %q", c.in, got, c.pg)
		}
		if got := SQLite.Rebind(c.in); got != c.in {
			t.Errorf("SQLite changed %q to %q", c.in, got)
		}
	}
}

func TestDSN(t *testing.T) {
	for _, c := range []struct {
		in   sdk.Database
		want string
	}{
		{sdk.Database{DSN: "postgres://u:p@h/db"}, "postgres://u:p@h/db"},
		{sdk.Database{DSN: "postgres://u:p@h/db?sslmode=disable", TLS: "verify-full", CAFile: "/ca.pem"}, "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Fca.pem"},
		{sdk.Database{DSN: "host=h dbname=db", TLS: "require"}, "host=h dbname=db sslmode=require"},
		{sdk.Database{DSN: "host=h", TLS: "verify-ca", CAFile: "/a b'c.pem"}, `host=h sslmode=verify-ca sslrootcert='/a b\'c.pem'`},
	} {
		got, err := DSN(c.in)
		if err != nil || got != c.want {
			t.Errorf("DSN(%+v) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := DSN(sdk.Database{DSN: "postgres://u:secret@h:x/db", TLS: "require"}); err == nil {
		t.Error("a broken URL was accepted")
	} else if strings.Contains(err.Error(), "secret") {
		t.Errorf("the error repeats the password: %v", err)
	}
}
