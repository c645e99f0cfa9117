package smime

import (
	"bytes"
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
