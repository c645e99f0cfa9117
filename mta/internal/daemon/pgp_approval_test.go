package daemon_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// TestPGPApprovalFlow (issue 13.6) through the daemon: bob's key arrives
// in an Autocrypt header and waits for approval (approval harvest =
// "manual"); notify mails the operator; mail to bob leaves unencrypted
// (opportunistic rule, "no key"); posthorn-pgp keys approve; notify tells
// bob his key is in use; the next mail is encrypted and gpg decrypts it.
func TestPGPApprovalFlow(t *testing.T) {
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg not installed (.ci/run installs it)")
	}
	dir := shortTempDir(t)
	bin := pluginBinary(t, "pgp")
	notify := pluginBinary(t, "notify")
	_, gpg := gpgHome(t)
	gpg(nil, "--quick-gen-key", "Bob <bob@remote.test>", "default", "default", "never")
	bobKey := gpg(nil, "--export", "bob@remote.test")
	gpg(nil, "--quick-gen-key", "Alice <alice@example.test>", "default", "default", "never")
	aliceSecret := filepath.Join(dir, "alice.sec.asc")
	os.WriteFile(aliceSecret, gpg(nil, "--armor", "--export-secret-keys", "alice@example.test"), 0o600)
	data := filepath.Join(dir, "pgp-data")

	e, m := remoteEnv(t, remotemta.Config{}, fmt.Sprintf(`
[[plugin]]
name = "notify"
path = %q
[plugin.config]
from = "notices@example.test"

[[plugin]]
name = "pgp"
path = %q
timeout = "20s"
data_dir = %q
[plugin.config]
internal_domains = ["example.test"]
discovery = ["local", "autocrypt"]
approval = { harvest = "manual" }
approval_notify = "postmaster@example.test"
approval_poll = "100ms"
[[plugin.config.key]]
file = %q
addresses = ["alice@example.test"]

[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "opportunistic"
methods = ["pgp"]
`, notify, bin, data, aliceSecret))
	waitPluginNamed(t, e, "pgp", "running")
	waitPluginNamed(t, e, "notify", "running")

	// Bob's mail carries his key in an Autocrypt header.
	var ac strings.Builder
	ac.WriteString("Autocrypt: addr=bob@remote.test; keydata=\r\n")
	enc := base64.StdEncoding.EncodeToString(bobKey)
	for len(enc) > 0 {
		n := min(76, len(enc))
		ac.WriteString(" " + enc[:n] + "\r\n")
		enc = enc[n:]
	}
	msg := "From: Bob <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: hello\r\n" + ac.String() + "\r\nHi Alice.\r\n"
	if err := send(e.dial(smtpd.MX), "bob@remote.test", []string{"alice@example.test"}, msg); err != nil {
		t.Fatal(err)
	}
	op := e.waitMail("example.test", "postmaster", 1, 20*time.Second)[0]
	if !strings.Contains(op, "waiting for approval") || !strings.Contains(op, "bob@remote.test") {
		t.Fatalf("operator notification:\n%s", op)
	}
	if e.d.CanHandleForTest("pgp", "alice@example.test", "bob@remote.test") {
		t.Fatal("a pending key is used")
	}
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append(append([]string{"keys"}, args...), "--data", data)...).CombinedOutput()
		if err != nil {
			t.Fatalf("posthorn-pgp keys %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	pending := cli("pending")
	if !strings.Contains(pending, "bob@remote.test") {
		t.Fatalf("keys pending:\n%s", pending)
	}
	fpr := strings.Fields(pending)[0]

	sub := e.login()
	if err := send(sub, testUser, []string{"bob@remote.test"}, "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: one\r\n\r\nBefore approval.\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs, err := m.WaitMessages(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(msgs[0].Data, []byte("multipart/encrypted")) || !bytes.Contains(msgs[0].Data, []byte("Before approval.")) {
		t.Fatalf("encrypted to a pending key:\n%s", msgs[0].Data)
	}

	cli("approve", fpr)
	msgs, err = m.WaitMessages(2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The notice itself leaves encrypted with the key it announces (the
	// rule covers notify's mail too).
	note := msgs[1].Data
	if !bytes.Contains(note, []byte("Subject: Your OpenPGP key is now in use")) {
		t.Fatalf("partner notification:\n%s", note)
	}
	if i, j := bytes.Index(note, []byte("-----BEGIN PGP MESSAGE-----")), bytes.Index(note, []byte("-----END PGP MESSAGE-----")); i >= 0 && j > i {
		note = gpg(note[i:j+len("-----END PGP MESSAGE-----")], "--decrypt")
	}
	if !bytes.Contains(note, []byte(fpr)) {
		t.Fatalf("partner notification without the fingerprint:\n%s", note)
	}
	if err := send(sub, testUser, []string{"bob@remote.test"}, "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: two\r\n\r\nAfter approval.\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs, err = m.WaitMessages(3, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d := msgs[2].Data
	i, j := bytes.Index(d, []byte("-----BEGIN PGP MESSAGE-----")), bytes.Index(d, []byte("-----END PGP MESSAGE-----"))
	if i < 0 || j < i {
		t.Fatalf("not encrypted after approval:\n%s", d)
	}
	if plain := gpg(d[i:j+len("-----END PGP MESSAGE-----")], "--decrypt"); !bytes.Contains(plain, []byte("After approval.")) {
		t.Fatalf("decrypted:\n%s", plain)
	}
}
