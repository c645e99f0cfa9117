package smime

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func TestBrokenInputs(t *testing.T) {
	p := newPKI(t)
	bob := p.leaf(t, "bob@org.test")
	eve := p.leaf(t, "eve@org.test")
	for _, c := range []Cipher{AES256CBC, AES256GCM} {
		der, err := Encrypt([]byte("Content-Type: text/plain\r\n\r\nhi\r\n"), c, []Recipient{{Cert: bob.Cert}})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Decrypt(der, []Identity{bob}); err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		for n := 0; n < len(der); n += 7 {
			if _, _, err := Decrypt(der[:n], []Identity{bob}); err == nil {
				t.Fatalf("%v truncated at %d: no error", c, n)
			}
		}
		if _, _, err := Decrypt(der, []Identity{eve}); err == nil || !strings.Contains(err.Error(), "none of our certificates") {
			t.Fatalf("%v wrong key: %v", c, err)
		}
		// Same certificate identity but another key: fails cleanly.
		swapped := Identity{Cert: bob.Cert, Key: eve.Key}
		if _, _, err := Decrypt(der, []Identity{swapped}); err == nil || !strings.Contains(err.Error(), "decryption failed") {
			t.Fatalf("%v swapped key: %v", c, err)
		}
		// Flip a byte in the ciphertext (near the end).
		bad := bytes.Clone(der)
		bad[len(bad)-20] ^= 1
		if _, _, err := Decrypt(bad, []Identity{bob}); err == nil {
			t.Fatalf("%v tampered: no error", c)
		}
	}
	for _, garbage := range [][]byte{nil, []byte("hello"), {0x30, 0x80}, {0x30, 0x84, 0xff, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{0x30, 0x80}, 1000)} {
		if _, _, err := Decrypt(garbage, []Identity{bob}); err == nil {
			t.Fatalf("garbage %x: no error", garbage)
		}
		if _, err := Verify(garbage, nil, VerifyOptions{}); err == nil {
			t.Fatalf("garbage signature %x: no error", garbage)
		}
	}
	if _, err := Open([]byte("Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n"), []Identity{bob}, VerifyOptions{}); err == nil {
		t.Fatal("bad base64: no error")
	}
}

func TestCertChecks(t *testing.T) {
	p := newPKI(t)
	ok := p.leaf(t, "a@org.test")
	expired := p.leaf(t, "a@org.test", func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	})
	serverOnly := p.leaf(t, "a@org.test", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
	other := newPKI(t).leaf(t, "a@org.test")
	opts := VerifyOptions{Roots: p.roots, From: "A@org.test"}
	if err := CheckCert(ok.Cert, nil, opts); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		c    *x509.Certificate
		from string
		want string
	}{
		"expired":   {expired.Cert, "a@org.test", "expired"},
		"eku":       {serverOnly.Cert, "a@org.test", "email protection"},
		"address":   {ok.Cert, "b@org.test", "not for b@org.test"},
		"untrusted": {other.Cert, "a@org.test", "unknown authority"},
	} {
		err := CheckCert(tc.c, nil, VerifyOptions{Roots: p.roots, From: tc.from})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}

func TestSignedByExpiredCert(t *testing.T) {
	p := newPKI(t)
	old := p.leaf(t, "old@org.test", func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	})
	out, err := Protect([]byte(testMsg), &old, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Open(out, nil, VerifyOptions{Roots: p.roots, From: "old@org.test"})
	if err != nil || res.SigErr == nil || !strings.Contains(res.SigErr.Error(), "expired") {
		t.Fatalf("%v %+v", err, res)
	}
}
