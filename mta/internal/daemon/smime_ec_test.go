package daemon_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
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

// issueEC writes NAME.crt and NAME.key: an EC certificate for addr
// (digitalSignature, keyAgreement, emailProtection).
func (p *smimePKI) issueEC(name, addr string, curve elliptic.Curve) (string, string) {
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.issueTemplate(name, key, &x509.Certificate{Subject: pkix.Name{CommonName: addr}, EmailAddresses: []string{addr},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
}

func crlf(b []byte) string {
	return strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n", "\r\n")
}

// TestSMIMEECDHThroughDaemon (issue 13.4): partners with P-256 and P-384
// certificates. Their signed mail (openssl cms -sign) is harvested; mail
// to them then leaves encrypted with ECDH key agreement and openssl cms
// decrypts it. The other way, mail openssl encrypts to alice's P-384
// identity arrives decrypted.
func TestSMIMEECDHThroughDaemon(t *testing.T) {
	needOpenSSL(t)
	bin := pluginBinary(t, "smime")
	dir := shortTempDir(t)
	pki := newSMIMEPKI(t, dir)
	aliceCrt, aliceKey := pki.issueEC("alice", "alice@example.test", elliptic.P384())
	partners := map[string][2]string{}
	for _, c := range []struct {
		user  string
		curve elliptic.Curve
	}{{"p256", elliptic.P256()}, {"p384", elliptic.P384()}} {
		crt, key := pki.issueEC(c.user, c.user+"@remote.test", c.curve)
		partners[c.user] = [2]string{crt, key}
	}
	e, m := remoteEnv(t, remotemta.Config{}, fmt.Sprintf(`
[[plugin]]
name = "smime"
path = %q
[plugin.config]
trust_store = %q
internal_domains = ["example.test"]
[[plugin.config.identity]]
cert = %q
key = %q

[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "required"
methods = ["smime"]
sign = true
`, bin, pki.caFile("trust.pem"), aliceCrt, aliceKey))
	waitPluginNamed(t, e, "smime", "running")

	entity := filepath.Join(dir, "entity.txt")
	mx := e.dial(smtpd.MX)
	sub := e.login()
	n, sent := 0, 0
	for _, user := range []string{"p256", "p384"} {
		crt, key := partners[user][0], partners[user][1]
		addr := user + "@remote.test"
		// Their signed mail: the plugin harvests the certificate.
		os.WriteFile(entity, []byte("Content-Type: text/plain\r\n\r\nHello Alice, my EC certificate.\r\n"), 0o600)
		signed, err := exec.Command("openssl", "cms", "-sign", "-in", entity, "-signer", crt, "-inkey", key,
			"-from", addr, "-to", "alice@example.test", "-subject", "signed").Output()
		if err != nil {
			t.Fatal(err)
		}
		if err := send(mx, addr, []string{"alice@example.test"}, crlf(signed)); err != nil {
			t.Fatal(err)
		}
		n++
		e.waitMail("example.test", "alice", n, 15*time.Second)

		// Alice writes to them: required encryption, ECDH.
		body := fmt.Sprintf("From: alice@example.test\r\nTo: %s\r\nSubject: sealed\r\n\r\nFor %s only.\r\n", addr, user)
		if err := send(sub, testUser, []string{addr}, body); err != nil {
			t.Fatal(err)
		}
		sent++
		msgs, err := m.WaitMessages(sent, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		data := msgs[sent-1].Data
		if !bytes.Contains(data, []byte("application/pkcs7-mime")) || bytes.Contains(data, []byte("only.")) {
			t.Fatalf("to %s: not encrypted:\n%.2000s", user, data)
		}
		cmd := exec.Command("openssl", "cms", "-decrypt", "-recip", crt, "-inkey", key)
		cmd.Stdin = bytes.NewReader(data)
		plain, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(plain, []byte("For "+user+" only.")) {
			t.Fatalf("%s decrypts with openssl: %v\n%s", user, err, plain)
		}
		// The sender's copy is there too: alice's P-384 key decrypts.
		cmd = exec.Command("openssl", "cms", "-decrypt", "-recip", aliceCrt, "-inkey", aliceKey)
		cmd.Stdin = bytes.NewReader(data)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sender's copy for alice's EC key: %v\n%s", err, out)
		}

		// And back: openssl encrypts to alice (P-384), the plugin decrypts.
		os.WriteFile(entity, []byte("Content-Type: text/plain\r\n\r\nSealed reply from "+user+".\r\n"), 0o600)
		sealed, err := exec.Command("openssl", "cms", "-encrypt", "-aes256", "-in", entity,
			"-from", addr, "-to", "alice@example.test", "-subject", "reply", "-recip", aliceCrt, "-keyopt", "ecdh_kdf_md:sha384").Output()
		if err != nil {
			t.Fatal(err)
		}
		if err := send(mx, addr, []string{"alice@example.test"}, crlf(sealed)); err != nil {
			t.Fatal(err)
		}
		n++
		got := e.waitMail("example.test", "alice", n, 15*time.Second)
		found := false
		for _, g := range got {
			if strings.Contains(g, "Sealed reply from "+user+".") {
				found = strings.Contains(g, "key-transport=ecdh-sha384kdf-aes256wrap")
				if !found {
					t.Fatalf("result header:\n%.1500s", g)
				}
			}
		}
		if !found {
			t.Fatalf("no decrypted reply from %s among %d mails", user, len(got))
		}
	}
}

// TestSMIMESenderCopyOAEP (issue 13.5) through the daemon: alice's
// identity is configured key_transport = "oaep"; bob's certificate was
// harvested from an openssl-signed mail (which announces no OAEP). The
// mail to bob carries bob's key wrapped with PKCS #1 v1.5 and alice's
// copy with RSAES-OAEP, as openssl cms -cmsout -print shows, and openssl
// decrypts both.
func TestSMIMESenderCopyOAEP(t *testing.T) {
	needOpenSSL(t)
	bin := pluginBinary(t, "smime")
	dir := shortTempDir(t)
	pki := newSMIMEPKI(t, dir)
	aliceCrt, aliceKey := pki.issue("alice", "alice@example.test")
	bobCrt, bobKey := pki.issue("bob", "bob@remote.test")
	e, m := remoteEnv(t, remotemta.Config{}, fmt.Sprintf(`
[[plugin]]
name = "smime"
path = %q
[plugin.config]
trust_store = %q
internal_domains = ["example.test"]
[[plugin.config.identity]]
cert = %q
key = %q
key_transport = "oaep"

[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "required"
methods = ["smime"]
`, bin, pki.caFile("trust.pem"), aliceCrt, aliceKey))
	waitPluginNamed(t, e, "smime", "running")
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
	e.waitMail("example.test", "alice", 1, 15*time.Second)
	sub := e.login()
	if err := send(sub, testUser, []string{"bob@remote.test"}, "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: x\r\n\r\nSealed.\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs, err := m.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	data := msgs[0].Data
	cmd := exec.Command("openssl", "cms", "-cmsout", "-print")
	cmd.Stdin = bytes.NewReader(data)
	printed, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, printed)
	}
	if strings.Count(string(printed), "rsaesOaep") != 1 || strings.Count(string(printed), "rsaEncryption") != 1 {
		t.Fatalf("want one OAEP (alice's copy) and one v1.5 (bob) recipient:\n%s", printed)
	}
	for _, who := range [][2]string{{aliceCrt, aliceKey}, {bobCrt, bobKey}} {
		dec := exec.Command("openssl", "cms", "-decrypt", "-recip", who[0], "-inkey", who[1])
		dec.Stdin = bytes.NewReader(data)
		if out, err := dec.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("Sealed.")) {
			t.Fatalf("%s decrypts: %v\n%s", filepath.Base(who[0]), err, out)
		}
	}
}
