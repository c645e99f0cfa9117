package smime

import (
	"bytes"
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
