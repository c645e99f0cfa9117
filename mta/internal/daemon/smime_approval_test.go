package daemon_test

import (
	"bytes"
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

// TestSMIMEApprovalFlow (issue 13.6): harvested certificates need an
// operator's approval. Bob's certificate arrives in a signed mail and is
// stored pending; notify mails the operator (postmaster) about it; mail
// to bob, which requires encryption, is handled as if there were no
// certificate (it bounces, nothing reaches bob). posthorn-smime certs
// pending lists it, certs approve approves it; notify then tells bob his
// certificate is in use, and the next mail to him leaves encrypted.
func TestSMIMEApprovalFlow(t *testing.T) {
	needOpenSSL(t)
	bin := pluginBinary(t, "smime")
	dir := shortTempDir(t)
	notify := pluginBinary(t, "notify")
	pki := newSMIMEPKI(t, dir)
	aliceCrt, aliceKey := pki.issue("alice", "alice@example.test")
	bobCrt, bobKey := pki.issue("bob", "bob@remote.test")
	data := filepath.Join(dir, "smime-data")
	e, m := remoteEnv(t, remotemta.Config{}, fmt.Sprintf(`
[[plugin]]
name = "notify"
path = %q
[plugin.config]
from = "notices@example.test"
organization = "Example"

[[plugin]]
name = "smime"
path = %q
data_dir = %q
[plugin.config]
trust_store = %q
internal_domains = ["example.test"]
approval = { harvest = "manual" }
approval_notify = "postmaster@example.test"
approval_poll = "100ms"
[[plugin.config.identity]]
cert = %q
key = %q

[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "required"
methods = ["smime"]
`, notify, bin, data, pki.caFile("trust.pem"), aliceCrt, aliceKey))
	waitPluginNamed(t, e, "smime", "running")
	waitPluginNamed(t, e, "notify", "running")

	entity := filepath.Join(dir, "entity.txt")
	os.WriteFile(entity, []byte("Content-Type: text/plain\r\n\r\nmy certificate\r\n"), 0o600)
	signed, err := exec.Command("openssl", "cms", "-sign", "-in", entity, "-signer", bobCrt, "-inkey", bobKey,
		"-from", "bob@remote.test", "-to", "alice@example.test", "-subject", "signed").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := send(e.dial(smtpd.MX), "bob@remote.test", []string{"alice@example.test"}, crlf(signed)); err != nil {
		t.Fatal(err)
	}
	// The operator is told.
	op := e.waitMail("example.test", "postmaster", 1, 20*time.Second)[0]
	if !strings.Contains(op, "waiting for approval") || !strings.Contains(op, "bob@remote.test") || !strings.Contains(op, "certs approve") {
		t.Fatalf("operator notification:\n%s", op)
	}
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"certs", args[0], "-db", filepath.Join(data, "certs.db")}, args[1:]...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("posthorn-smime certs %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := cli("pending"); !strings.Contains(out, "bob@remote.test") {
		t.Fatalf("certs pending:\n%s", out)
	}

	sub := e.login()
	if err := send(sub, testUser, []string{"bob@remote.test"}, "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: one\r\n\r\nFirst.\r\n"); err != nil {
		t.Fatal(err)
	}
	// Handled as "no certificate": required encryption bounces to alice.
	deadline := time.Now().Add(30 * time.Second)
	for {
		bounced := false
		for _, msg := range e.waitMail("example.test", "alice", 1, 20*time.Second) {
			bounced = bounced || strings.Contains(msg, "multipart/report")
		}
		if bounced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no bounce for mail to a partner whose only certificate is pending")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(m.Messages()); n != 0 {
		t.Fatalf("%d messages reached the partner before approval", n)
	}

	if out := cli("approve", "bob@remote.test"); !strings.Contains(out, "approved 1") {
		t.Fatalf("approve: %s", out)
	}
	// bob is told his certificate is in use.
	msgs, err := m.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(msgs[0].Data, []byte("is now in use")) {
		t.Fatalf("partner notification:\n%s", msgs[0].Data)
	}
	if err := send(sub, testUser, []string{"bob@remote.test"}, "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: two\r\n\r\nSecond, sealed.\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs, err = m.WaitMessages(2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sealed := msgs[1].Data
	dec := exec.Command("openssl", "cms", "-decrypt", "-recip", bobCrt, "-inkey", bobKey)
	dec.Stdin = bytes.NewReader(sealed)
	if out, err := dec.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("Second, sealed.")) {
		t.Fatalf("after approval: %v\n%s", err, out)
	}
}
