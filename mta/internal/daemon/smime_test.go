package daemon_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/testbed/remotemta"
	"github.com/posthorn/posthorn/testbed/wait"
)

// smimePKI is a CA issuing S/MIME certificates (RSA, emailProtection).
type smimePKI struct {
	t    *testing.T
	key  *rsa.PrivateKey
	cert *x509.Certificate
	dir  string
}

func newSMIMEPKI(t *testing.T, dir string) *smimePKI {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Partner Mail CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &smimePKI{t: t, key: key, cert: cert, dir: dir}
}

// issue writes NAME.crt and NAME.key for addr and returns their paths.
func (p *smimePKI) issue(name, addr string) (string, string) {
	return p.issueTemplate(name, rsaKey(p.t), &x509.Certificate{Subject: pkix.Name{CommonName: addr}, EmailAddresses: []string{addr},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
}

// issueTemplate signs tmpl (given a fresh serial) for key and writes
// NAME.crt and NAME.key.
func (p *smimePKI) issueTemplate(name string, key crypto.Signer, tmpl *x509.Certificate) (string, string) {
	tmpl.SerialNumber, _ = rand.Int(rand.Reader, big.NewInt(1<<62))
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600)
	return certFile, keyFile
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func (p *smimePKI) caFile(name string) string {
	f := filepath.Join(p.dir, name)
	os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.cert.Raw}), 0o600)
	return f
}

// TestSMIMEHarvestThenEncrypt: a partner sends a signed mail (made by
// openssl cms -sign); the smime plugin harvests the certificate; the next
// mail to the partner goes out encrypted, with nobody doing anything, and
// the partner decrypts it with openssl cms -decrypt.
func TestSMIMEHarvestThenEncrypt(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (.ci/run installs it)")
	}
	dir := shortTempDir(t)
	bin := pluginBinary(t, "smime")
	partners := newSMIMEPKI(t, dir)
	bobCrt, bobKey := partners.issue("bob", "bob@remote.test")
	aliceCrt, aliceKey := partners.issue("alice", "alice@example.test")
	carolCrt, carolKey := partners.issue("carol", "carol@remote.test")
	trust := partners.caFile("trust.pem")

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
encrypt = "opportunistic"
methods = ["smime"]
sign = true
`, bin, trust, aliceCrt, aliceKey))
	e.waitPluginsRunning(1)

	// Bob's signed mail to alice, made by OpenSSL.
	entity := filepath.Join(dir, "entity.txt")
	os.WriteFile(entity, []byte("Content-Type: text/plain\r\n\r\nHello Alice, here is my certificate.\r\n"), 0o600)
	signed, err := exec.Command("openssl", "cms", "-sign", "-in", entity, "-signer", bobCrt, "-inkey", bobKey,
		"-from", "bob@remote.test", "-to", "alice@example.test", "-subject", "signed").Output()
	if err != nil {
		t.Fatal(err)
	}
	c := e.dial(smtpd.MX)
	if err := send(c, "bob@remote.test", []string{"alice@example.test"}, strings.ReplaceAll(strings.ReplaceAll(string(signed), "\r\n", "\n"), "\n", "\r\n")); err != nil {
		t.Fatal(err)
	}
	got := e.waitMail("example.test", "alice", 1, 15*time.Second)[0]
	if !strings.Contains(got, "signature=valid") {
		t.Fatalf("no verified-signature header on the signed mail:\n%s", got)
	}

	// Alice writes to bob: the plugin knows his certificate now.
	s := e.login()
	if err := send(s, testUser, []string{"bob@remote.test"}, "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: confidential\r\n\r\nThe figures, encrypted.\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs, err := m.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	data := msgs[0].Data
	if !bytes.Contains(data, []byte("application/pkcs7-mime")) || bytes.Contains(data, []byte("The figures, encrypted.")) {
		t.Fatalf("not encrypted:\n%s", data)
	}
	cmd := exec.Command("openssl", "cms", "-decrypt", "-recip", bobCrt, "-inkey", bobKey)
	cmd.Stdin = bytes.NewReader(data)
	plain, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl cms -decrypt: %v\n%s", err, plain)
	}
	if !bytes.Contains(plain, []byte("The figures, encrypted.")) {
		t.Fatalf("decrypted:\n%s", plain)
	}

	// Carol's certificate is unknown: her mail cannot be encrypted, but
	// the rule asks for signing, so it leaves signed, with alice's
	// certificate attached, and OpenSSL verifies it.
	if err := send(s, testUser, []string{"carol@remote.test"}, "From: alice@example.test\r\nTo: carol@remote.test\r\nSubject: hello\r\n\r\nSigned, not sealed.\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs, err = m.WaitMessages(2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	toCarol := msgs[1].Data
	if !bytes.Contains(toCarol, []byte("multipart/signed")) || !bytes.Contains(toCarol, []byte("Signed, not sealed.")) {
		t.Fatalf("not signed:\n%s", toCarol)
	}
	verify := exec.Command("openssl", "cms", "-verify", "-CAfile", trust, "-purpose", "any")
	verify.Stdin = bytes.NewReader(toCarol)
	if out, err := verify.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("Signed, not sealed.")) {
		t.Fatalf("openssl cms -verify: %v\n%s", err, out)
	}

	// carol uploads her certificate in the web mailbox; the smime plugin
	// takes it from the event, and her next mail leaves encrypted.
	pemCert, _ := os.ReadFile(carolCrt)
	e.d.EmitForTest(sdk.Event{ID: "up-1", Type: "webmailbox.key_uploaded", Recipient: "carol@remote.test", Sender: "carol@remote.test",
		SourcePlugin: "webmailbox", Time: time.Now(), Attributes: map[string]string{"kind": "smime", "fingerprint": "x", "key": string(pemCert)}})
	// The event is handled in the background: wait until the chain
	// would pick S/MIME for carol (the plugin has her certificate).
	wait.For(t, 20*time.Second, "the smime plugin to take carol's certificate", func() bool {
		p, err := e.d.Preflight(t.Context(), testUser, []string{"carol@remote.test"})
		return err == nil && len(p.Recipients) == 1 && p.Recipients[0].Encryption == "smime"
	})
	if err := send(s, testUser, []string{"carol@remote.test"}, "From: alice@example.test\r\nTo: carol@remote.test\r\nSubject: now sealed\r\n\r\nFor carol only.\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs, err = m.WaitMessages(3, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sealed := msgs[2].Data
	if !bytes.Contains(sealed, []byte("application/pkcs7-mime")) || bytes.Contains(sealed, []byte("For carol only.")) {
		t.Fatalf("not encrypted after the upload:\n%s", sealed)
	}
	dec := exec.Command("openssl", "cms", "-decrypt", "-recip", carolCrt, "-inkey", carolKey)
	dec.Stdin = bytes.NewReader(sealed)
	if out, err := dec.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("For carol only.")) {
		t.Fatalf("carol decrypts: %v\n%s", err, out)
	}
}
