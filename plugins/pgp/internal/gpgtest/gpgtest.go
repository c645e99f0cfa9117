// Package gpgtest runs GnuPG in a throw-away home directory for
// interoperability tests. Tests skip, saying why, when gpg is missing.
package gpgtest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Home is a temporary GNUPGHOME with its own agent, removed after the test.
type Home struct {
	t   testing.TB
	Dir string
}

// New makes a Home or skips the test when gpg is not installed.
func New(t testing.TB) *Home {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg is not installed: skipping the GnuPG interoperability test")
	}
	dir, err := os.MkdirTemp("/tmp", "g") // short: the agent's socket lives here
	if err != nil {
		t.Fatal(err)
	}
	h := &Home{t: t, Dir: dir}
	t.Cleanup(func() {
		c := exec.Command("gpgconf", "--kill", "gpg-agent")
		c.Env = append(os.Environ(), "GNUPGHOME="+dir)
		c.Run()
		os.RemoveAll(dir)
	})
	return h
}

// Run runs gpg non-interactively (empty passphrases, every key trusted)
// and fails the test on error.
func (h *Home) Run(stdin []byte, args ...string) (stdout, stderr string) {
	h.t.Helper()
	o, e, err := h.Try(stdin, args...)
	if err != nil {
		h.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, e)
	}
	return o, e
}

// Try is Run returning the error.
func (h *Home) Try(stdin []byte, args ...string) (string, string, error) {
	cmd := exec.Command("gpg", append([]string{"--homedir", h.Dir, "--batch", "--no-tty", "--pinentry-mode", "loopback",
		"--passphrase", "", "--trust-model", "always"}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}

// NewKey makes an Ed25519/Curve25519 key for uid ("Name <addr>").
func (h *Home) NewKey(uid string) {
	h.t.Helper()
	h.Run(nil, "--quick-gen-key", uid, "future-default", "default", "never")
}
