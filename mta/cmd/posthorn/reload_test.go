package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPReloads: SIGHUP no longer kills the daemon; it reloads, and
// `posthorn reload` does the same and reports; a broken file is refused
// with its errors, and the daemon goes on with the old config.
func TestSIGHUPReloads(t *testing.T) {
	in := newInstance(t, "")
	in.start()
	b, err := os.ReadFile(in.cfg)
	if err != nil {
		t.Fatal(err)
	}
	good := strings.Replace(string(b), `mailboxes = ["postmaster", "bob"]`, `mailboxes = ["postmaster", "bob", "carol"]`, 1)
	if err := os.WriteFile(in.cfg, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := in.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(in.logText(), "config reloaded") })
	c, err := dialSMTP(in.mx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.send("carol@example.test", "<c@test>"); err != nil {
		t.Fatalf("carol after SIGHUP: %v", err)
	}

	if err := os.WriteFile(in.cfg, []byte(strings.Replace(good, `max_backoff = "2s"`, "max_backoff = \"2s\"\nworkers = 0", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := in.cli("reload")
	if err == nil || !strings.Contains(out, "reload refused") {
		t.Fatalf("posthorn reload of a broken file: %v\n%s", err, out)
	}
	if err := in.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(in.logText(), "workers: must be") })
	if err := os.WriteFile(in.cfg, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := in.cli("reload"); err != nil || !strings.Contains(out, "reloaded") {
		t.Fatalf("posthorn reload: %v\n%s", err, out)
	}
	if in.cmd.ProcessState != nil {
		t.Fatalf("daemon exited:\n%s", in.logText())
	}
	c2, err := dialSMTP(in.mx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.send("bob@example.test", "<b@test>"); err != nil {
		t.Fatal(err)
	}
	in.stop()
	if code := in.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}
