package smime

import (
	"bytes"
	"crypto/elliptic"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkProtect measures sign+encrypt (Protect) of a text message of
// 100 KB and 10 MB, to one recipient plus the sender's copy, with
// AES-256-CBC/RSA v1.5 and AES-256-GCM/RSA-OAEP.
func BenchmarkProtect(b *testing.B) {
	pki := newPKI(b)
	alice := pki.leaf(b, "alice@org.example")
	bob := pki.leaf(b, "bob@partner.example")
	for _, size := range []int{100 << 10, 10 << 20} {
		line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2) + "\r\n"
		body := strings.Repeat(line, size/len(line)+1)[:size]
		msg := []byte("From: alice@org.example\r\nTo: bob@partner.example\r\nSubject: bench\r\nContent-Type: text/plain\r\n\r\n" + body)
		for _, c := range []struct {
			name string
			ci   Cipher
			kt   KeyTransport
		}{{"cbc-v15", AES256CBC, PKCS1v15}, {"gcm-oaep", AES256GCM, OAEP}} {
			b.Run(fmt.Sprintf("%dKB/%s", size>>10, c.name), func(b *testing.B) {
				rcpts := []Recipient{{Cert: bob.Cert, Transport: c.kt}, {Cert: alice.Cert, Transport: c.kt}}
				b.SetBytes(int64(len(msg)))
				for i := 0; i < b.N; i++ {
					out, err := Protect(msg, &alice, c.ci, rcpts)
					if err != nil || !bytes.Contains(out, []byte("application/pkcs7-mime")) {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkPath100KB is the S/MIME path of one 100 KB message (issue 13):
// outbound sign+encrypt to an RSA-OAEP, a P-256 or a P-384 recipient plus
// the sender's copy, and inbound decrypt+verify (Open) of the result.
func BenchmarkPath100KB(b *testing.B) {
	pki := newPKI(b)
	alice := pki.leaf(b, "alice@org.example")
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2) + "\r\n"
	body := strings.Repeat(line, (100<<10)/len(line)+1)[:100<<10]
	msg := []byte("From: alice@org.example\r\nTo: bob@partner.example\r\nSubject: bench\r\nContent-Type: text/plain\r\n\r\n" + body)
	rsaBob := pki.leaf(b, "bob@partner.example")
	for _, r := range []struct {
		name string
		id   Identity
	}{
		{"rsa-oaep", rsaBob},
		{"ecdh-p256", pki.ecLeaf(b, "bob@partner.example", elliptic.P256(), x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement)},
		{"ecdh-p384", pki.ecLeaf(b, "bob@partner.example", elliptic.P384(), x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement)},
	} {
		rcpts := []Recipient{{Cert: r.id.Cert, Transport: OAEP}, {Cert: alice.Cert, Transport: OAEP}}
		b.Run("protect/"+r.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for i := 0; i < b.N; i++ {
				if _, err := Protect(msg, &alice, AES256GCM, rcpts); err != nil {
					b.Fatal(err)
				}
			}
		})
		out, err := Protect(msg, &alice, AES256GCM, rcpts)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("open/"+r.name, func(b *testing.B) {
			b.SetBytes(int64(len(out)))
			for i := 0; i < b.N; i++ {
				res, err := Open(out, []Identity{r.id}, VerifyOptions{Roots: pki.roots, From: "alice@org.example"})
				if err != nil || res.SigErr != nil {
					b.Fatal(err, res.SigErr)
				}
			}
		})
	}
}
