package dovecot_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/dovecot"
	"github.com/posthorn/posthorn/testbed/dovecottest"
)

// TestAgainstRealDovecot checks AUTH PLAIN and USER against Dovecot's auth
// service with a passwd-file passdb and userdb, over TCP and the unix
// sockets, and that a stopped Dovecot is "unavailable", never "no".
func TestAgainstRealDovecot(t *testing.T) {
	srv := dovecottest.Start(t, []dovecottest.User{
		{Name: "alice@example.test", Password: "alice's password"},
		{Name: "bob@example.test", Password: "p@ss wörd"},
	})
	ctx := context.Background()
	for _, sockets := range [][2]string{
		{srv.AuthSocket, srv.UserdbSocket},
		{"unix:" + srv.Dir + "/run/auth-client", "unix:" + srv.Dir + "/run/auth-userdb"},
	} {
		c := &dovecot.Client{AuthSocket: sockets[0], UserdbSocket: sockets[1], Service: "smtp", Timeout: 5 * time.Second}
		for _, tc := range []struct {
			user, pw string
			want     bool
		}{
			{"alice@example.test", "alice's password", true},
			{"alice@example.test", "wrong", false},
			{"bob@example.test", "p@ss wörd", true},
			{"nobody@example.test", "alice's password", false},
			{"alice@example.test", "", false},
		} {
			ok, err := c.Authenticate(ctx, tc.user, tc.pw)
			if ok != tc.want || err != nil {
				t.Errorf("%s: Authenticate(%s, %q) = %v, %v; want %v", sockets[0], tc.user, tc.pw, ok, err, tc.want)
			}
		}
		for addr, want := range map[string]bool{
			"alice@example.test":  true,
			"bob@example.test":    true,
			"nobody@example.test": false,
			"tab\tuser@x.test":    false,
		} {
			ok, err := c.UserExists(ctx, addr)
			if ok != want || err != nil {
				t.Errorf("%s: UserExists(%q) = %v, %v; want %v", sockets[1], addr, ok, err, want)
			}
		}
	}
	// Nobody listening: an error that says "unavailable", not false.
	c := &dovecot.Client{AuthSocket: "tcp:127.0.0.1:1", UserdbSocket: "unix:/nonexistent/auth-userdb"}
	if _, err := c.Authenticate(ctx, "alice@example.test", "x"); !errors.Is(err, dovecot.ErrUnavailable) {
		t.Errorf("Authenticate without Dovecot: %v", err)
	}
	if _, err := c.UserExists(ctx, "alice@example.test"); !errors.Is(err, dovecot.ErrUnavailable) {
		t.Errorf("UserExists without Dovecot: %v", err)
	}
}
