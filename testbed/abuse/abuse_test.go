package abuse

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestFloods (issue 20): against the real binary, 100 parallel AUTH
// guessers from 5 addresses keep the daemon's RSS (from /proc) under
// 200 MB while the real user logs in (the AUTH exchange) from another
// address in under 1 s each time; trickling clients are disconnected at command_timeout, and
// a client network still sends mail through the reserved sessions.
func TestFloods(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and floods the real binary")
	}
	// Both sides are real processes built without the race detector: the
	// flood must not share the test binary's (instrumented) CPU time
	// with the daemon it measures.
	dir := t.TempDir()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the binaries with")
	}
	for _, b := range []struct{ out, pkg string }{
		{"posthorn", "github.com/posthorn/posthorn/mta/cmd/posthorn"},
		{"abuse", "github.com/posthorn/posthorn/testbed/cmd/abuse"},
	} {
		build := exec.Command(gobin, "build", "-o", filepath.Join(dir, b.out), b.pkg)
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			t.Fatalf("go build %s: %v", b.pkg, err)
		}
	}
	c := Config{Bin: filepath.Join(dir, "posthorn"), Guessers: 100, Sources: 5, Duration: 10 * time.Second, Slow: 200, Logins: 5}
	cmd := exec.Command(filepath.Join(dir, "abuse"), "-json", "-posthorn", c.Bin, "-d", c.Duration.String(),
		"-guessers", "100", "-sources", "5", "-slow", "200", "-logins", "5")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	runErr := cmd.Run()
	res := &Result{}
	if err := json.Unmarshal(out.Bytes(), res); err != nil {
		t.Fatalf("abuse: %v; output %q", runErr, out.String())
	}
	res.Print(testLog{t}, c)
	if runErr != nil {
		t.Fatal(runErr)
	}
	if mib := float64(res.PeakRSSKiB) / 1024; mib >= 200 {
		t.Errorf("daemon RSS peaked at %.1f MiB under the AUTH flood; want under 200", mib)
	}
	if len(res.LoginLatencies) < c.Logins {
		t.Errorf("only %d of %d logins by the real user", len(res.LoginLatencies), c.Logins)
	}
	// The figure is 1 s (it was 13 s). The real user's check
	// never queues behind the guessers' (AuthGuard's clean lane), so what
	// is left is its own argon2id hash, which on a 2-core machine shared
	// with other builds can take a good part of a second: the median must
	// be under 1 s, and no login may take 3 s.
	lat := slices.Clone(res.LoginLatencies)
	slices.Sort(lat)
	if len(lat) > 0 && lat[len(lat)/2] >= time.Second {
		t.Errorf("median login of the real user %s under the flood; want under 1s (all: %v)", lat[len(lat)/2], lat)
	}
	for i, d := range res.LoginLatencies {
		if d >= 3*time.Second {
			t.Errorf("real user's login %d took %s under the flood", i, d)
		}
	}
	if res.AuthRefused535 > 5*10+10 {
		t.Errorf("%d passwords checked for 5 addresses with max_failures_per_ip 10", res.AuthRefused535)
	}
	// command_timeout is 5s; the margin is for a loaded 2-core machine.
	if res.SlowDisconnectedBy > 12*time.Second {
		t.Errorf("a trickling client stayed %s on a 5s command_timeout", res.SlowDisconnectedBy)
	}
	// The daemon's own count: a client notices that its session was closed
	// only after the daemon has given the slot to the next one, so the
	// clients' count runs ahead under load. 140 slow clients (max_sessions
	// 150 minus 10 reserved) plus the client network's one message.
	if res.MXSessionsPeak < 0 {
		t.Error("no posthorn_smtp_connections_open_peak for the MX listener in /metrics")
	}
	if res.MXSessionsPeak > 141 {
		t.Errorf("%d MX sessions at once; max_sessions 150 minus 10 reserved, plus one from the client network", res.MXSessionsPeak)
	}
	if res.MXSessionsPeak < 130 {
		t.Errorf("only %d MX sessions at once under a flood of 200 slow clients; the flood did not fill the listener", res.MXSessionsPeak)
	}
	if res.TrustedLatency <= 0 || res.TrustedLatency >= 5*time.Second {
		t.Errorf("client network's message under the slow flood: %s", res.TrustedLatency)
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
