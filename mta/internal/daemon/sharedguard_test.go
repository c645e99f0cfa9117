package daemon_test

import (
	"fmt"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/pgtest"
)

// TestAuthLimitsAcrossNodes: two daemons share [database]; AUTH failures
// from one address spread over both nodes block that address on both,
// failures of many addresses put the account under attack on both, and
// the real user, from another address, still gets in on either node.
func TestAuthLimitsAcrossNodes(t *testing.T) {
	pg := pgtest.Start(t)
	db := pg.NewDatabase(t)
	node := func() *testEnv {
		return startEnvConfig(t, func(base string) string {
			base = regexp.MustCompile(`(?m)^password_file = .*$`).ReplaceAllStringFunc(base, func(l string) string {
				return l + "\nmax_failures_per_ip = 3\nmax_failures_per_account = 5\nfailure_window = \"10m\"\nblock_time = \"10m\""
			})
			return base + fmt.Sprintf("\n[database]\ndsn = %q\n", db.DSN)
		})
	}
	a, b := node(), node()
	// auth logs in from a loopback address of its own (127.0.0.0/8 is
	// all on lo) and returns the reply code of AUTH or of the greeting
	// (0: accepted).
	auth := func(e *testEnv, from, pass string) int {
		t.Helper()
		conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}).Dial("tcp", e.addr(smtpd.Submission))
		if err != nil {
			t.Fatal(err)
		}
		c, err := smtp.NewClientStartTLS(conn, e.client)
		if code := codeOf(err); code != 0 {
			conn.Close()
			return code // refused at the greeting (a blocked address)
		} else if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return codeOf(c.Auth(sasl.NewPlainClient("", testUser, pass)))
	}
	// Three failures from one address: two on A, one on B.
	for i, e := range []*testEnv{a, a, b} {
		if code := auth(e, "127.0.0.11", "guess"); code != 535 {
			t.Fatalf("failure %d: %d", i+1, code)
		}
	}
	// Blocked on both nodes, the right password included (A counted only
	// two of the three itself).
	for _, e := range []*testEnv{b, a} {
		if code := auth(e, "127.0.0.11", testPass); code == 0 {
			t.Errorf("the guessing address got in after three failures on two nodes")
		}
	}
	// The real user, at home, gets in on both.
	for _, e := range []*testEnv{a, b} {
		if code := auth(e, "127.0.0.12", testPass); code != 0 {
			t.Fatalf("the real user: %d", code)
		}
	}
	// Two more addresses fail once each, one per node: five failures for
	// the account make it under attack. An address that failed for it on
	// A is refused on B even with the right password; the real user's
	// address (known since its login) and an address with a clean record
	// still get a real check.
	if code := auth(a, "127.0.0.13", "guess"); code != 535 {
		t.Fatal(code)
	}
	if code := auth(b, "127.0.0.14", "guess"); code != 535 {
		t.Fatal(code)
	}
	if code := auth(b, "127.0.0.13", testPass); code == 0 {
		t.Errorf("an address that failed on A got in on B while the account is under attack")
	}
	if code := auth(a, "127.0.0.12", testPass); code != 0 {
		t.Errorf("the real user's address while the account is under attack: %d", code)
	}
	if code := auth(a, "127.0.0.15", testPass); code != 0 {
		t.Errorf("a clean address while the account is under attack: %d", code)
	}
	// With the database gone the nodes do not fall back to counting
	// alone: AUTH is refused as a temporary failure.
	pg.Stop()
	if code := auth(b, "127.0.0.16", testPass); code != 454 {
		t.Errorf("AUTH with the shared counts unreadable: %d, want 454", code)
	}
}
