package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
)

// deliveries reads posthorn_deliveries_total{result="delivered"} per
// transport from the metrics endpoint.
func deliveries(t *testing.T, e *testEnv) map[string]int {
	t.Helper()
	resp, err := http.Get("http://" + e.d.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]int{}
	re := regexp.MustCompile(`(?m)^posthorn_deliveries_total\{result="delivered",transport="([a-z]+)"\} (\d+)`)
	for _, m := range re.FindAllSubmatch(b, -1) {
		n, _ := strconv.Atoi(string(m[2]))
		out[string(m[1])] = n
	}
	return out
}

// TestDeliveryMetricsByTransport: each delivery is counted under the
// transport that really carried it: maildir, lmtp, a maildir route and
// discard. (A smarthost given as an IP literal cannot be tested here:
// remote looks the literal up in DNS, see the issue 17 note.)
func TestDeliveryMetricsByTransport(t *testing.T) {
	lmtpAddr := startRejectingLMTP(t, "nobody@lmtp.test")
	outDir := shortTempDir(t)
	e := startEnvWith(t, func(s string) string {
		return s + fmt.Sprintf(`
[[domain]]
name = "lmtp.test"
mailboxes = ["carl"]
lmtp = "tcp:%s"

[[transport]]
domain = "archive.example"
kind = "maildir"
host = %q

[[transport]]
domain = "void.example"
kind = "discard"
`, lmtpAddr, outDir)
	})
	before := deliveries(t, e)
	c := e.dial(smtpd.MX)
	// client_networks is empty in the base config: relaying needs AUTH,
	// so the remote recipients come in by submission.
	if err := send(c, "s@example.com", []string{"bob@example.test", "carl@lmtp.test"}, testMessage("local")); err != nil {
		t.Fatal(err)
	}
	sub := e.login()
	if err := send(sub, testUser, []string{"x@archive.example", "z@void.example"}, testMessage("remote")); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"maildir": 2, "lmtp": 1, "discard": 1}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := deliveries(t, e)
		ok := true
		for k, n := range want {
			if got[k]-before[k] != n {
				ok = false
			}
		}
		if ok {
			if got["remote"] != before["remote"] || got["local"] != before["local"] {
				t.Errorf("generic labels still used: %v", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries by transport: before %v, after %v; want the increase %v", before, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
