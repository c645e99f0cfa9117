package smime

import (
	"bytes"
	"strings"
	"testing"
)

func TestTo7bit(t *testing.T) {
	in := "Content-Type: multipart/mixed; boundary=xx\r\n\r\npre\r\n--xx\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n" +
		"--xx\r\nContent-Type: application/octet-stream\r\n\r\n\xff\xfe\r\n" +
		"--xx\r\nContent-Type: text/plain\r\n\r\nascii only\r\n--xx--\r\nepilogue\r\n"
	out := to7bit([]byte(in), 0)
	if has8bit(out) {
		t.Fatalf("still 8-bit:\n%s", out)
	}
	for _, want := range []string{"pre\r\n--xx\r\n", "Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe", "Content-Transfer-Encoding: base64\r\n\r\n//4=\r\n", "Content-Type: text/plain\r\n\r\nascii only\r\n--xx--\r\nepilogue\r\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	seven := []byte("Content-Type: text/plain\r\n\r\nhello\r\n")
	if !bytes.Equal(to7bit(seven, 0), seven) {
		t.Error("7-bit entity changed")
	}
}

func TestSign8bitVerifiedByOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := newPKI(t)
	alice := p.leaf(t, "alice@org.test")
	msg := "From: alice@org.test\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSchöne Grüße\r\n"
	out, err := Protect([]byte(msg), &alice, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if has8bit(out) {
		t.Fatal("signed message is 8-bit")
	}
	dir := t.TempDir()
	got := openssl(t, nil, "cms", "-verify", "-in", writeFile(t, dir, "s.eml", out), "-CAfile", writeFile(t, dir, "ca.pem", certPEM(p.ca.Cert)))
	if !bytes.Contains(got, []byte("Sch=C3=B6ne")) {
		t.Fatalf("%q", got)
	}
}
