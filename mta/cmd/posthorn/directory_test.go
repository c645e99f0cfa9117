package main

import (
	"strings"
	"testing"
)

// TestDirectoryAndExplainCommands drives `posthorn directory` and
// `posthorn explain` against a running posthorn with a SQLite directory.
func TestDirectoryAndExplainCommands(t *testing.T) {
	in := newInstance(t, `
[directory]
kind = "sqlite"
path = "directory.db"
[dns]
resolver = "127.0.0.1:9"
timeout = "1s"
`)
	in.start()
	run := func(args ...string) string {
		t.Helper()
		out, err := in.cli(args...)
		if err != nil {
			t.Fatalf("posthorn %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	run("directory", "domain", "add", "example.org", "catch_all=postmaster")
	if out := run("directory", "domains"); !strings.Contains(out, "example.org") || !strings.Contains(out, "catch_all=postmaster") {
		t.Errorf("domains: %s", out)
	}
	if out, err := runWithStdin(in, "carol's password\n", "directory", "mailbox", "add", "carol@example.org", "--password-stdin"); err != nil || !strings.Contains(out, "carol@example.org") {
		t.Fatalf("mailbox add: %v\n%s", err, out)
	}
	run("directory", "alias", "set", "team@example.org", "carol", "friend@remote.example")
	if out := run("directory", "secure-alias", "carol@example.org", "on", "verify"); !strings.Contains(out, "secure alias on (verify)") {
		t.Errorf("secure-alias on: %s", out)
	}
	out := run("directory", "list", "example.org")
	if !strings.Contains(out, "team@example.org") || !strings.Contains(out, "alias") || !strings.Contains(out, "carol@example.org") {
		t.Errorf("list: %s", out)
	}
	if out, err := in.cli("directory", "secure-alias", "carol@example.org", "on", "may"); err == nil || !strings.Contains(out, "level") {
		t.Errorf("a level not allowed for a secure alias was accepted: %s", out)
	}
	if out, err := in.cli("directory", "show", "ghost@example.org"); err == nil {
		t.Errorf("show of an unknown address: %s", out)
	}
	run("directory", "del", "team@example.org")

	out = run("explain", "--from", "carol@secure.example.org", "--to", "carol@example.org", "--to", "someone@remote.example")
	for _, want := range []string{"carol@example.org\n  route:      local", "someone@remote.example", "TLS level:", "asks for at least verify", "encryption: plain"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain does not say %q:\n%s", want, out)
		}
	}
}
