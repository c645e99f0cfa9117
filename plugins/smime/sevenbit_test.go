package smime

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/posthorn/posthorn/sdk/mime7bit"
)

// The conversion itself is tested in sdk/mime7bit; here the signed
// result of an 8-bit message is checked by OpenSSL.
func TestSign8bitVerifiedByOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := newPKI(t)
	alice := p.leaf(t, "alice@org.test")
	msg := "From: alice@org.test\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSchöne Grüße\r\n"
	out, err := Protect([]byte(msg), &alice, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mime7bit.Is8bit(out) {
		t.Fatal("signed message is 8-bit")
	}
	dir := t.TempDir()
	got := openssl(t, nil, "cms", "-verify", "-in", writeFile(t, dir, "s.eml", out), "-CAfile", writeFile(t, dir, "ca.pem", certPEM(p.ca.Cert)))
	if !bytes.Contains(got, []byte("Sch=C3=B6ne")) {
		t.Fatalf("%q", got)
	}
}

// TestBase64Lines: lines of exactly 76 characters but the last, each
// ending in CRLF, that decode to the input, for every length around the
// 57-byte line boundary.
func TestBase64Lines(t *testing.T) {
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + n)
		}
		out := base64Lines(b)
		if !bytes.HasSuffix(out, []byte("\r\n")) {
			t.Fatalf("n=%d: no final CRLF: %q", n, out)
		}
		lines := bytes.Split(out[:len(out)-2], []byte("\r\n"))
		for i, l := range lines {
			if len(l) > 76 || (i < len(lines)-1 && len(l) != 76) {
				t.Fatalf("n=%d: line %d has %d characters", n, i, len(l))
			}
		}
		got, err := base64.StdEncoding.DecodeString(string(bytes.Join(lines, nil)))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("n=%d: decodes to %x, %v", n, got, err)
		}
		if cap(out) != len(out) {
			t.Errorf("n=%d: %d bytes allocated for %d", n, cap(out), len(out))
		}
	}
}
