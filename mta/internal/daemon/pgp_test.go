package daemon_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/plugins/pgp/wkd"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// oneKey is a WKD source publishing one key for one address.
type oneKey struct {
	domain, hash string
	key          []byte
}

func (o oneKey) WKDKeys(_ context.Context, domain, hash string) ([][]byte, error) {
	if domain == o.domain && hash == o.hash {
		return [][]byte{o.key}, nil
	}
	return nil, nil
}
func (o oneKey) WKDDomains(context.Context) ([]string, error) { return []string{o.domain}, nil }

// TestPGPKeyFromWKDGetsEncryptedMail: the recipient's key is published by
// WKD (over HTTPS with a certificate from a test CA); the pgp plugin finds
// it, the mail leaves as PGP/MIME, and gpg decrypts it with bob's key.
func TestPGPKeyFromWKDGetsEncryptedMail(t *testing.T) {
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg not installed (.ci/run installs it)")
	}
	dir := shortTempDir(t)
	bin := pluginBinary(t, "pgp")
	// Every key is made by gpg (in a home of its own) before any SMTP
	// session opens: generation takes seconds on a loaded machine, longer
	// than the daemon's command timeout (5 s) lets a session idle.
	home, gpg := gpgHome(t)
	// Bob's key, published by WKD.
	gpg(nil, "--quick-gen-key", "Bob <bob@remote.test>", "default", "default", "never")
	bobKey := gpg(nil, "--export", "bob@remote.test")
	// Our own key for alice, also made by gpg (so gpg knows it to verify).
	gpg(nil, "--quick-gen-key", "Alice <alice@example.test>", "default", "default", "never")
	aliceSecret := filepath.Join(dir, "alice.sec.asc")
	os.WriteFile(aliceSecret, gpg(nil, "--armor", "--export-secret-keys", "alice@example.test"), 0o600)
	// Dave's key, uploaded in the web mailbox later on.
	gpg(nil, "--quick-gen-key", "Dave <dave@remote.test>", "default", "default", "never")
	daveKey := gpg(nil, "--armor", "--export", "dave@remote.test")

	// The WKD server for remote.test.
	root, err := ca.New("WKD CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := root.Issue("openpgpkey.remote.test", "remote.test")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: wkd.Handler(oneKey{domain: "remote.test", hash: wkd.Hash("bob"), key: bobKey}, nil)}
	go srv.Serve(ln)
	defer srv.Close()
	caFile, _ := root.WriteCAFile(dir)
	port := ln.Addr().(*net.TCPAddr).Port

	// remoteEnv's testbed DNS server gets the WKD host (set below).
	e, m := remoteEnv(t, remotemta.Config{}, fmt.Sprintf(`
[[plugin]]
name = "pgp"
path = %q
timeout = "20s"
[plugin.config]
internal_domains = ["example.test"]
discovery = ["local", "wkd"]
ca_file = %q
dns_resolver = "%s"
resolve = { "openpgpkey.remote.test" = ":%d" }
[[plugin.config.key]]
file = %q
addresses = ["alice@example.test"]

[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "opportunistic"
methods = ["pgp"]
sign = true
`, bin, caFile, "{DNS}", port, aliceSecret))
	// The WKD host's address comes from the testbed's DNS.
	e.dns.Zone("remote.test", dnsserver.Insecure).A("openpgpkey.remote.test.", "127.0.0.1")
	e.waitPluginsRunning(1)
	e.submit([]string{"bob@remote.test"}, "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: for bob only\r\n\r\nSecret plans.\r\n")
	msgs, err := m.WaitMessages(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	data := msgs[0].Data
	if !bytes.Contains(data, []byte("multipart/encrypted")) || !bytes.Contains(data, []byte("application/pgp-encrypted")) || bytes.Contains(data, []byte("Secret plans.")) {
		t.Fatalf("not PGP/MIME encrypted:\n%s", data)
	}
	// gpg decrypts the encrypted part.
	i := bytes.Index(data, []byte("-----BEGIN PGP MESSAGE-----"))
	j := bytes.Index(data, []byte("-----END PGP MESSAGE-----"))
	if i < 0 || j < i {
		t.Fatalf("no PGP message:\n%s", data)
	}
	plain := gpg(data[i:j+len("-----END PGP MESSAGE-----")], "--decrypt")
	if !strings.Contains(string(plain), "Secret plans.") {
		t.Fatalf("decrypted:\n%s", plain)
	}

	// carol has no key anywhere: her mail cannot be encrypted, but the
	// rule asks for signing, so it leaves as PGP/MIME multipart/signed,
	// and gpg verifies alice's signature over the content part.
	e.submit([]string{"carol@remote.test"}, "From: alice@example.test\r\nTo: carol@remote.test\r\nSubject: hi\r\n\r\nSigned, not sealed.\r\n")
	msgs, err = m.WaitMessages(2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sm := string(msgs[1].Data)
	if !strings.Contains(sm, "multipart/signed") || !strings.Contains(sm, "Signed, not sealed.") {
		t.Fatalf("not signed:\n%s", sm)
	}
	bi := strings.Index(sm, "boundary=\"")
	b := sm[bi+len("boundary=\""):]
	b = b[:strings.IndexByte(b, '"')]
	parts := strings.Split(sm, "--"+b)
	content := strings.TrimSuffix(strings.TrimPrefix(parts[1], "\r\n"), "\r\n")
	sig := parts[2][strings.Index(parts[2], "-----BEGIN PGP SIGNATURE-----"):]
	sig = sig[:strings.Index(sig, "-----END PGP SIGNATURE-----")+len("-----END PGP SIGNATURE-----")]
	os.WriteFile(filepath.Join(dir, "content"), []byte(content), 0o600)
	os.WriteFile(filepath.Join(dir, "sig.asc"), []byte(sig), 0o600)
	verify := exec.Command("gpg", "--homedir", home, "--batch", "--verify", filepath.Join(dir, "sig.asc"), filepath.Join(dir, "content"))
	out, err := verify.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Good signature") {
		t.Fatalf("gpg --verify: %v\n%s\n---\n%s", err, out, sm)
	}

	// dave uploads his key in the web mailbox; the pgp plugin takes it from
	// the event, and his mail leaves encrypted.
	e.d.EmitForTest(sdk.Event{ID: "up-2", Type: "webmailbox.key_uploaded", Recipient: "dave@remote.test", Sender: "dave@remote.test",
		SourcePlugin: "webmailbox", Time: time.Now(), Attributes: map[string]string{"kind": "pgp", "fingerprint": "x", "key": string(daveKey)}})
	for deadline := time.Now().Add(30 * time.Second); !e.d.CanHandleForTest("pgp", "alice@example.test", "dave@remote.test"); {
		if time.Now().After(deadline) {
			t.Fatal("the pgp plugin never took dave's uploaded key")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.submit([]string{"dave@remote.test"}, "From: alice@example.test\r\nTo: dave@remote.test\r\nSubject: for dave\r\n\r\nDave only.\r\n")
	msgs, err = m.WaitMessages(3, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dm := msgs[2].Data
	di, dj := bytes.Index(dm, []byte("-----BEGIN PGP MESSAGE-----")), bytes.Index(dm, []byte("-----END PGP MESSAGE-----"))
	if !bytes.Contains(dm, []byte("multipart/encrypted")) || di < 0 || dj < di {
		t.Fatalf("not encrypted after the upload:\n%s", dm)
	}
	if plain := gpg(dm[di:dj+len("-----END PGP MESSAGE-----")], "--decrypt"); !strings.Contains(string(plain), "Dave only.") {
		t.Fatalf("dave decrypts:\n%s", plain)
	}
}
