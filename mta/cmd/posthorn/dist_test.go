package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/conf"
)

// distDir is the repository's dist/ (packaging files).
func distDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs("../../../dist")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSystemdUnitVerifies runs systemd-analyze verify on the unit, with
// its binary pointed at the one the tests built.
func TestSystemdUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	unit, err := os.ReadFile(filepath.Join(distDir(t), "systemd", "posthorn.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "User=posthorn", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "ReadWritePaths=/var/spool/posthorn /var/lib/posthorn", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "posthorn.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/sbin/posthorn", posthornBinary(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sa, "verify", path).CombinedOutput(); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestPackagedConfigChecks: the /etc/posthorn/posthorn.toml the package
// installs is a valid config.
func TestPackagedConfigChecks(t *testing.T) {
	cfg, err := conf.Load(filepath.Join(distDir(t), "posthorn.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Queue.Dir != "/var/spool/posthorn/queue" || cfg.Queue.Maildrop != "/var/spool/posthorn/maildrop" {
		t.Errorf("spool paths %s %s", cfg.Queue.Dir, cfg.Queue.Maildrop)
	}
}
