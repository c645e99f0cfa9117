package smime

import (
	"bytes"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGPGSMDecrypts: what the plugin encrypts for a recipient like gpgsm
// (AES-256-CBC EnvelopedData, RSA PKCS#1 v1.5 key transport) is decrypted
// by GnuPG's gpgsm with the recipient's key imported from PKCS#12. GnuPG
// 2.2 (Debian 12) knows neither AES-GCM AuthEnvelopedData nor RSA-OAEP,
// and announces neither, so the plugin never uses them for it.
func TestGPGSMDecrypts(t *testing.T) {
	needOpenSSL(t)
	if _, err := exec.LookPath("gpgsm"); err != nil {
		t.Skip("gpgsm not installed (.ci/run installs it)")
	}
	home, err := os.MkdirTemp("/tmp", "gs")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "gpg-agent").Run()
		os.RemoveAll(home)
	}()
	os.WriteFile(filepath.Join(home, "gpg-agent.conf"), []byte("allow-loopback-pinentry\n"), 0o600)
	gpgsm := func(stdin []byte, args ...string) ([]byte, string, error) {
		cmd := exec.Command("gpgsm", append([]string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--disable-crl-checks"}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.Bytes(), errb.String(), err
	}
	pki := newPKI(t)
	alice := pki.leaf(t, "alice@org.test")
	bob := pki.leaf(t, "bob@partner.test")
	dir := t.TempDir()
	cert := writeFile(t, dir, "bob.crt", certPEM(bob.Cert))
	key := writeFile(t, dir, "bob.key", keyPEM(t, bob))
	p12 := filepath.Join(dir, "bob.p12")
	openssl(t, nil, "pkcs12", "-export", "-legacy", "-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1",
		"-in", cert, "-inkey", key, "-passout", "pass:", "-out", p12)
	if _, stderr, err := gpgsm(nil, "--import", p12); err != nil {
		t.Fatalf("gpgsm --import: %v\n%s", err, stderr)
	}
	for _, kt := range []KeyTransport{PKCS1v15} {
		out, err := Protect([]byte(testMsg), &alice, AES256CBC, []Recipient{{Cert: bob.Cert, Transport: kt}})
		if err != nil {
			t.Fatal(err)
		}
		// The CMS blob is the base64 body of the application/pkcs7-mime part.
		s := string(out)
		body := s[strings.Index(s, "\r\n\r\n")+4:]
		der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
		if err != nil {
			t.Fatal(err)
		}
		in := filepath.Join(dir, "msg.p7m")
		os.WriteFile(in, der, 0o600)
		plain, stderr, err := gpgsm(nil, "--decrypt", in)
		if err != nil {
			t.Fatalf("%s: gpgsm --decrypt: %v\n%s", kt, err, stderr)
		}
		if !bytes.Contains(plain, []byte("multipart/signed")) && !bytes.Contains(plain, []byte("application/pkcs7-mime")) {
			t.Fatalf("%s: decrypted:\n%s", kt, plain)
		}
	}
}
