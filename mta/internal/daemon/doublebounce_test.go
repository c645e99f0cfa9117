package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
)

// doubleBounceEnv: lmtp.test delivers over LMTP to a server that refuses
// gone@lmtp.test; the postmaster is configured.
func doubleBounceEnv(t *testing.T, postmaster string) *testEnv {
	lmtpAddr := startRejectingLMTP(t, "gone@lmtp.test")
	return startEnvWith(t, func(s string) string {
		return fmt.Sprintf("postmaster = %q\n", postmaster) + s + fmt.Sprintf(`
[[domain]]
name = "lmtp.test"
mailboxes = ["gone"]
lmtp = "tcp:%s"
`, lmtpAddr)
	})
}

func lostDoubleBounces(t *testing.T, e *testEnv) int {
	t.Helper()
	resp, err := http.Get("http://" + e.d.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^posthorn_double_bounces_lost_total (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("metrics lack posthorn_double_bounces_lost_total")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestOwnBounceFailingGoesToConfiguredPostmaster: mail from
// gone@lmtp.test fails; the bounce we make for it fails too (5.1.x from
// LMTP); the configured postmaster gets the double bounce, once.
func TestOwnBounceFailingGoesToConfiguredPostmaster(t *testing.T) {
	e := doubleBounceEnv(t, "bob@example.test")
	before := lostDoubleBounces(t, e)
	if err := send(e.dial(smtpd.MX), "gone@lmtp.test", []string{"gone@lmtp.test"}, testMessage("own")); err != nil {
		t.Fatal(err)
	}
	m := e.waitMail("example.test", "bob", 1, 15*time.Second)[0]
	for _, want := range []string{"Action: failed", "Final-Recipient: rfc822; gone@lmtp.test", "Return-Path: <>"} {
		if !strings.Contains(m, want) {
			t.Errorf("double bounce lacks %q:\n%s", want, m)
		}
	}
	// Nothing else is pending: the double bounce was the last word.
	waitQueueEmpty(t, e)
	if n := e.mailCount("example.test", "bob"); n != 1 {
		t.Errorf("postmaster got %d reports, want 1", n)
	}
	if n := e.mailCount("example.test", "postmaster"); n != 0 {
		t.Errorf("the default postmaster got %d reports; the configured one should", n)
	}
	if got := lostDoubleBounces(t, e); got != before {
		t.Errorf("lost double bounces %d -> %d", before, got)
	}
}

// TestDoubleBounceFailingIsCountedAndLogged: when the postmaster's copy
// fails too, nothing more is sent; the loss is counted (and logged at
// error level).
func TestDoubleBounceFailingIsCountedAndLogged(t *testing.T) {
	e := doubleBounceEnv(t, "gone@lmtp.test")
	before := lostDoubleBounces(t, e)
	if err := send(e.dial(smtpd.MX), "gone@lmtp.test", []string{"gone@lmtp.test"}, testMessage("lost")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for lostDoubleBounces(t, e) == before {
		if time.Now().After(deadline) {
			t.Fatal("the lost double bounce was not counted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitQueueEmpty(t, e)
	if got := lostDoubleBounces(t, e); got != before+1 {
		t.Errorf("lost double bounces %d -> %d, want one more", before, got)
	}
}

func waitQueueEmpty(t *testing.T, e *testEnv) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(e.d.Queue.List()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("queue not empty: %d messages", len(e.d.Queue.List()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
