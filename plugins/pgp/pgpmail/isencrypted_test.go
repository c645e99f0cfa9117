package pgpmail

import (
	"bytes"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

func TestIsEncrypted(t *testing.T) {
	const arm = "-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n"
	for msg, want := range map[string]bool{
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x\r\n\r\n--x--\r\n": true,
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIIB\r\n":                        true,
		"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nMIIB\r\n":                           false,
		"Subject: x\r\n\r\n" + arm:                                      true,
		"Subject: x\r\n\r\nmy secret, and:\r\n" + arm:                   false,
		"Subject: x\r\n\r\n" + arm + "PS: in the clear\r\n":             false,
		"Content-Type: text/html\r\n\r\n" + arm:                         true,
		"Content-Type: application/octet-stream\r\n\r\n" + arm:          false,
		"Subject: x\r\n\r\nhello\r\n":                                   false,
		"Content-Transfer-Encoding: base64\r\n\r\nLS0tLS1CRUdJTg==\r\n": false,
	} {
		if got := IsEncrypted([]byte(msg)); got != want {
			t.Errorf("IsEncrypted(%q) = %v", msg, got)
		}
	}
}

func TestProtectedHeadersOnlySubject(t *testing.T) {
	k, err := Generate("bob@partner.test", GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := Encrypt([]byte(testMsg), EncryptOptions{Recipients: []*openpgp.Entity{k}, ProtectHeaders: true})
	if err != nil {
		t.Fatal(err)
	}
	// The outer From differs from the protected one inside.
	out = bytes.Replace(out, []byte("From: Alice <alice@example.org>"), []byte("From: Mallory <m@evil.test>"), 1)
	res, err := Decrypt(out, openpgp.EntityList{k}, time.Time{})
	if err != nil || !res.Decrypted {
		t.Fatalf("%+v %v", res, err)
	}
	got := string(res.Message)
	if !strings.Contains(got, "Subject: Quarterly numbers\r\n") || strings.Contains(got, "Subject: ...") ||
		!strings.Contains(got, "From: Mallory <m@evil.test>\r\n") || strings.Contains(got, "alice@example.org") ||
		strings.Count(got, "Subject:") != 1 {
		t.Errorf("decrypted:\n%s", got)
	}
}

func TestToCRLF(t *testing.T) {
	for in, want := range map[string]string{
		"":                "",
		"a\r\nb\r\n":      "a\r\nb\r\n",
		"a\nb\n":          "a\r\nb\r\n",
		"a\rb\r\n\n":      "a\r\nb\r\n\r\n",
		"a\r":             "a\r\n",
		"x\r\ny\nz\r\r\n": "x\r\ny\r\nz\r\n\r\n",
	} {
		if got := string(toCRLF([]byte(in))); got != want {
			t.Errorf("toCRLF(%q) = %q, want %q", in, got, want)
		}
	}
}
