package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/testbed/ca"
)

func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &out)
	return code, out.String()
}

// TestCheckFiles: check names each file that is missing, unreadable or
// wrong: certificate, key (and a pair that does not match), DKIM key,
// CA file, plugin binary (missing, not executable, wrong sha256).
func TestCheckFiles(t *testing.T) {
	t.Setenv("POSTHORN_CONFIG", "")
	dir := t.TempDir()
	c, err := ca.New("check CA")
	if err != nil {
		t.Fatal(err)
	}
	writePair := func(name string) {
		cert, err := c.Issue("mx.example.test")
		if err != nil {
			t.Fatal(err)
		}
		var certPEM []byte
		for _, der := range cert.Certificate {
			certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		os.WriteFile(filepath.Join(dir, name+".crt"), certPEM, 0o600)
		os.WriteFile(filepath.Join(dir, name+".key"), keyPEM, 0o600)
	}
	writePair("a")
	writePair("b")
	plugin := filepath.Join(dir, "plug")
	os.WriteFile(plugin, []byte("#!/bin/sh\n"), 0o755)
	noexec := filepath.Join(dir, "noexec")
	os.WriteFile(noexec, []byte("x"), 0o644)
	base := `hostname = "mx.example.test"
[queue]
dir = "spool"
[tls]
cert_file = %CERT%
key_file = %KEY%
[outbound]
ca_file = %CA%
[[dkim.key]]
domain = "example.test"
selector = "s"
file = %DKIM%
[[plugin]]
name = "p"
path = %PLUGIN%
sha256 = %SHA%
`
	write := func(repl map[string]string) string {
		s := base
		def := map[string]string{"%CERT%": `"a.crt"`, "%KEY%": `"a.key"`, "%CA%": `"a.crt"`, "%DKIM%": `"a.key"`,
			"%PLUGIN%": `"plug"`, "%SHA%": `""`}
		for k, v := range def {
			if r, ok := repl[k]; ok {
				v = r
			}
			s = strings.ReplaceAll(s, k, v)
		}
		p := filepath.Join(dir, "posthorn.toml")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	if code, out := runCLI(t, "check", "-c", write(nil)); code != 0 {
		t.Fatalf("good config: %d\n%s", code, out)
	}
	// A web mailbox rule for every sender is fine, with a warning (the
	// notification loop the guard stops).
	good := write(nil)
	b, _ := os.ReadFile(good)
	os.WriteFile(good, []byte(strings.Replace(string(b), `name = "p"`, `name = "webmailbox"`, 1)+
		"[[encryption.rule]]\nrecipients = [\"partner.test\"]\nencrypt = \"required\"\nmethods = [\"webmailbox\"]\n"), 0o600)
	if code, out := runCLI(t, "check", "-c", good); code != 0 || !strings.Contains(out, "warning: encryption.rule[0]: sends recipients to the web mailbox (webmailbox) for every sender") {
		t.Errorf("web mailbox rule without senders: %d\n%s", code, out)
	}
	for _, tc := range []struct {
		repl map[string]string
		want string
	}{
		{map[string]string{"%CERT%": `"gone.crt"`}, "tls.cert_file: " + filepath.Join(dir, "gone.crt") + ": no such file"},
		{map[string]string{"%KEY%": `"gone.key"`}, "tls.key_file: " + filepath.Join(dir, "gone.key") + ": no such file"},
		{map[string]string{"%KEY%": `"b.key"`}, "tls.cert_file: certificate and tls.key_file do not go together"},
		{map[string]string{"%CA%": `"gone.pem"`}, "outbound.ca_file: " + filepath.Join(dir, "gone.pem")},
		{map[string]string{"%DKIM%": `"gone.pem"`}, "dkim.key[0].file: " + filepath.Join(dir, "gone.pem")},
		{map[string]string{"%PLUGIN%": `"gone"`}, "plugin[0].path: plugin p: " + filepath.Join(dir, "gone") + ": no such file"},
		{map[string]string{"%PLUGIN%": `"noexec"`}, "plugin[0].path: plugin p: " + noexec + " is not an executable file"},
		{map[string]string{"%SHA%": `"` + strings.Repeat("ab", 32) + `"`}, "plugin[0].sha256: plugin p: " + plugin + " has SHA-256"},
	} {
		code, out := runCLI(t, "check", "-c", write(tc.repl))
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: code %d, want %q in:\n%s", tc.repl, code, tc.want, out)
		}
	}
}

// TestGlobalFlagsAndHelp: -c after the command works; --help works on
// every command; version prints the protocol.
func TestGlobalFlagsAndHelp(t *testing.T) {
	t.Setenv("POSTHORN_CONFIG", "")
	dir := t.TempDir()
	p := filepath.Join(dir, "x.toml")
	os.WriteFile(p, []byte("hostname = \"mx.example.test\"\n[control]\nsocket = \"nowhere.sock\"\n"), 0o600)
	// The config given after the subcommand is the one used: the error
	// names its socket.
	code, out := runCLI(t, "queue", "list", "-c", p)
	if code != 1 || !strings.Contains(out, filepath.Join(dir, "nowhere.sock")) {
		t.Errorf("queue list -c FILE: %d %s", code, out)
	}
	for _, cmd := range [][]string{{"queue", "show", "--help"}, {"sendmail", "--help"}, {"serve", "-h"}, {"check", "--help"},
		{"reload", "--help"}, {"tls", "explain", "--help"}, {"dkim", "--help"}, {"plugin", "--help"}, {"passwd", "--help"}} {
		code, out := runCLI(t, cmd...)
		if code != 0 || !strings.Contains(out, "posthorn "+cmd[0]) || !strings.Contains(out, "global options") {
			t.Errorf("%v: %d\n%s", cmd, code, out)
		}
	}
	code, out = runCLI(t, "version")
	if code != 0 || !regexpMatch(`(?m)^posthorn \S+\ncommit \S+\nplugin protocol 1\.\d+`, out) {
		t.Errorf("version: %d %q", code, out)
	}
}

// TestDataDir: with -d, the embedded default's relative paths resolve
// there, whatever the current directory.
func TestDataDir(t *testing.T) {
	t.Setenv("POSTHORN_CONFIG", "")
	t.Setenv("POSTHORN_HOME", "")
	dir := t.TempDir()
	code, out := runCLI(t, "queue", "list", "-d", dir)
	if code != 1 || !strings.Contains(out, filepath.Join(dir, "var", "control.sock")) {
		t.Errorf("queue list -d DIR: %d %s", code, out)
	}
}
