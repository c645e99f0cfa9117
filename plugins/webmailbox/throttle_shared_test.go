package webmailbox

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/posthorn/posthorn/testbed/pgtest"
)

// twoNodes are two web mailbox services on one real PostgreSQL with the
// same master key, told apart clients by X-Real-IP, 3 free failures per
// client, as throttled() makes them.
func twoNodes(t *testing.T) (*env, *env) {
	db := pgtest.Start(t).NewShared(t)
	key := []byte(base64.StdEncoding.EncodeToString(randBytes(32)) + "\n")
	mk := func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "master.key"), key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(c map[string]any) {
		c["client_ip_header"] = "X-Real-IP"
		c["max_failed_logins"] = 3
		c["lockout"] = "10m"
	}
	a := newEnvDB(t, &db, cfg, mk)
	b := newEnvDB(t, &db, cfg, mk)
	return a, b
}

// TestGuessingLimitsAcrossNodes: failures on node A count on node B and
// the other way round, in every scope; the real user on another address
// still gets in on both; a client that logged in on A is known on B.
func TestGuessingLimitsAcrossNodes(t *testing.T) {
	a, b := twoNodes(t)
	a.divert(testMsg, "bob@partner.test")
	if r := a.browserAt("198.51.100.7").activate("bob@partner.test", "correct horse", qa); r.code != 303 {
		t.Fatalf("activation on A: %d", r.code)
	}
	// Per (account, client): 3 free failures, made on A, B, A.
	for i, e := range []*env{a, b, a} {
		if r := e.browserAt("203.0.113.66").login("bob@partner.test", "guess"); r.code != 401 {
			t.Fatalf("failure %d: %d", i+1, r.code)
		}
	}
	// B never saw the third failure but delays the client all the same,
	// without trying the (right) password.
	if r := b.browserAt("203.0.113.66").login("bob@partner.test", "correct horse"); r.code != 429 {
		t.Fatalf("the attacker on B after failures on A and B: %d", r.code)
	}
	if r := a.browserAt("203.0.113.66").login("bob@partner.test", "correct horse"); r.code != 429 {
		t.Fatalf("the attacker on A: %d", r.code)
	}
	// The owner at home gets in on both nodes.
	for _, e := range []*env{a, b} {
		if r := e.browserAt("198.51.100.7").login("bob@partner.test", "correct horse"); r.code != 303 {
			t.Fatalf("the owner while the attacker waits: %d %s", r.code, r.body)
		}
	}
	// After the 30 s (on both nodes' clocks) the next guess is allowed,
	// and its failure doubles the wait on the other node.
	a.clock.Add(31 * time.Second)
	b.clock.Add(31 * time.Second)
	if r := b.browserAt("203.0.113.66").login("bob@partner.test", "guess"); r.code != 401 {
		t.Fatalf("after the delay, on B: %d", r.code)
	}
	a.clock.Add(31 * time.Second)
	if r := a.browserAt("203.0.113.66").login("bob@partner.test", "guess"); r.code != 429 {
		t.Errorf("the second delay (60 s) is not kept on A: %d", r.code)
	}

	// Per account: 30 failures from 15 addresses spread over the nodes
	// delay a new client on either node, not the owner's known client
	// (it logged in on A and B above).
	for i := 0; i < 30; i++ {
		[]*env{a, b}[i%2].browserAt("192.0.2."+itoa(int64(i/2+1))).login("bob@partner.test", "guess")
	}
	for _, e := range []*env{a, b} {
		if r := e.browserAt("192.0.2.200").login("bob@partner.test", "correct horse"); r.code != 429 {
			t.Errorf("a new client during a distributed attack: %d", r.code)
		}
	}
	if r := b.browserAt("198.51.100.7").login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Errorf("the owner's known client during the attack, on B: %d", r.code)
	}

	// Per client over all accounts: 20 failures on 20 addresses, half on
	// each node.
	for i := 0; i < 20; i++ {
		[]*env{a, b}[i%2].browserAt("203.0.113.9").login("nobody"+itoa(int64(i))+"@x.test", "password1")
	}
	for _, e := range []*env{a, b} {
		if r := e.browserAt("203.0.113.9").login("bob@partner.test", "correct horse"); r.code != 429 {
			t.Errorf("the sprayer after 20 failures on two nodes: %d", r.code)
		}
	}

	// The counts expire: housekeeping on one node prunes them for all.
	a.clock.Add(48 * time.Hour)
	if err := a.sv.Housekeeping(t.Context()); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := a.sv.store.(*SQLStore).db.QueryRow(`SELECT COUNT(*) FROM webmailbox_failures WHERE k NOT LIKE 't:%'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("failure counts left after two quiet days: %d %v", n, err)
	}
}

// TestGuessingLimitsFailClosed: a node that cannot read the shared counts
// does not try the password.
func TestGuessingLimitsFailClosed(t *testing.T) {
	db := pgtest.Start(t)
	shared := db.NewShared(t)
	e := newEnvDB(t, &shared, func(c map[string]any) { c["client_ip_header"] = "X-Real-IP" })
	e.divert(testMsg, "bob@partner.test")
	if r := e.browserAt("198.51.100.7").activate("bob@partner.test", "correct horse", qa); r.code != 303 {
		t.Fatalf("activation: %d", r.code)
	}
	db.Stop()
	if r := e.browserAt("198.51.100.7").login("bob@partner.test", "correct horse"); r.code == 303 {
		t.Fatalf("logged in without the shared limits")
	}
	if st := e.sv.ThrottleStats(); st.Failures != 0 {
		t.Errorf("counted as a failure: %+v", st)
	}
}
