package smime

import (
	"bytes"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"strings"
	"testing"
)

// TestSealIsDER (issue 19.4: the envelope is written by hand around the
// content): for contents around the AES block and the DER length-octet
// boundaries, with both ciphers and RSA and EC recipients, the envelope
// is exactly what encoding/asn1 makes of the parsed structures (so it is
// DER), and it decrypts to the content.
func TestSealIsDER(t *testing.T) {
	p := newPKI(t)
	rsaID := p.leaf(t, "r@ext.test")
	ecID := p.ecLeaf(t, "e@ext.test", elliptic.P256(), x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement)
	for _, n := range []int{0, 1, 15, 16, 17, 100, 127, 128, 200, 255, 256, 300, 65535 - 16, 65535, 65536, 70000, 1<<24 + 3} {
		content := make([]byte, n)
		for i := range content {
			content[i] = byte(i*13 + n)
		}
		for _, c := range []Cipher{AES256CBC, AES256GCM} {
			for _, rc := range [][]Recipient{{{Cert: rsaID.Cert, Transport: OAEP}}, {{Cert: rsaID.Cert}, {Cert: ecID.Cert}}} {
				// In two pieces, as Protect gives it.
				der, err := seal(pieces{content[:n/3], content[n/3:]}, c, rc)
				if err != nil {
					t.Fatal(n, c, err)
				}
				var ci contentInfo
				if err := unmarshalAll(der, &ci); err != nil {
					t.Fatalf("%d %v: %v", n, c, err)
				}
				var inner any
				if c == AES256CBC {
					var ed envelopedData
					err = unmarshalAll(ci.Content.Bytes, &ed)
					inner = ed
				} else {
					var ad authEnvelopedData
					err = unmarshalAll(ci.Content.Bytes, &ad)
					inner = ad
				}
				if err != nil {
					t.Fatalf("%d %v: %v", n, c, err)
				}
				innerDER, err := asn1.Marshal(inner)
				if err != nil {
					t.Fatal(err)
				}
				again, err := asn1.Marshal(contentInfo{ContentType: ci.ContentType, Content: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: innerDER}})
				if err != nil || !bytes.Equal(again, der) {
					t.Fatalf("%d %v %d recipients: not the DER encoding/asn1 makes (%v)", n, c, len(rc), err)
				}
				for _, id := range []Identity{rsaID, ecID}[:len(rc)] {
					pt, _, err := Decrypt(der, []Identity{id})
					if err != nil || !bytes.Equal(pt, content) {
						t.Fatalf("%d %v: decrypts to %d bytes, %v", n, c, len(pt), err)
					}
				}
			}
			if n > 70000 {
				break // one cipher is enough for the 16 MiB one
			}
		}
	}
}

// TestProtectLeavesInput: Protect does not write to the message it is
// given (its body is used in place), also when the message lacks the
// final CRLF and has spare capacity behind it, and the result shares no
// memory with it; bare LFs are still made CRLF.
func TestProtectLeavesInput(t *testing.T) {
	p := newPKI(t)
	alice := p.leaf(t, "alice@org.test")
	bob := p.leaf(t, "bob@ext.test")
	for _, msg := range []string{
		"From: alice@org.test\r\nTo: bob@ext.test\r\nSubject: s\r\n\r\nbody\r\nline",
		"From: alice@org.test\nSubject: bare LF\n\nbody\nmore\n",
		"From: alice@org.test\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n",
		"From: alice@org.test\r\nSubject: no body",
	} {
		buf := make([]byte, len(msg), len(msg)+64)
		copy(buf, msg)
		full := buf[:cap(buf)]
		for i := len(msg); i < len(full); i++ {
			full[i] = 'Z'
		}
		snapshot := append([]byte(nil), full...)
		for _, rc := range [][]Recipient{nil, {{Cert: bob.Cert}}} {
			out, err := Protect(buf, &alice, AES256GCM, rc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(full, snapshot) {
				t.Fatalf("%q: input changed to %q", msg, full)
			}
			for i := range out {
				out[i] = 0
			}
			if !bytes.Equal(full, snapshot) {
				t.Fatalf("%q: output shares memory with the input", msg)
			}
			out, _ = Protect(buf, &alice, AES256GCM, rc)
			if hasBareLF(out) {
				t.Fatalf("%q: bare LF in the output", msg)
			}
			if rc == nil {
				if res, err := Open(out, nil, VerifyOptions{Roots: p.roots, From: "alice@org.test"}); err != nil || res.SigErr != nil {
					t.Fatalf("%q: %v %v", msg, err, res.SigErr)
				}
				continue
			}
			res, err := Open(out, []Identity{bob}, VerifyOptions{Roots: p.roots, From: "alice@org.test"})
			if err != nil || !res.Encrypted || res.SigErr != nil {
				t.Fatalf("%q: %v %+v", msg, err, res)
			}
			if body := strings.ReplaceAll(msg, "\r\n", "\n"); strings.HasSuffix(body, "more\n") && !bytes.Contains(res.Message, []byte("body\r\nmore\r\n")) {
				t.Fatalf("%q: opened to %q", msg, res.Message)
			}
		}
	}
}

// TestProtectConcurrent: Protect of the same message from several
// goroutines at once (the daemon's deliveries run in parallel).
func TestProtectConcurrent(t *testing.T) {
	p := newPKI(t)
	alice := p.leaf(t, "alice@org.test")
	bob := p.leaf(t, "bob@ext.test")
	msg := []byte("From: alice@org.test\r\nTo: bob@ext.test\r\n\r\n" + strings.Repeat("line of text\r\n", 8000))
	errs := make(chan error, 6)
	for g := range 6 {
		go func() {
			for range 3 {
				out, err := Protect(msg, &alice, []Cipher{AES256CBC, AES256GCM}[g%2], []Recipient{{Cert: bob.Cert}})
				if err == nil {
					var res *Result
					res, err = Open(out, []Identity{bob}, VerifyOptions{Roots: p.roots})
					if n := bytes.Count(res.Message, []byte("line of text\r\n")); err == nil && (res.SigErr != nil || n != 8000) {
						err = fmt.Errorf("%v, %d lines", res.SigErr, n)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 6 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestPooledBuffers (issue 19.4: the message read from the host and the
// envelope are recycled): getBuf gives enough room; an output of
// Protect stays intact while later messages reuse the pools; and
// goroutines that each read their own message into a pooled buffer,
// protect it and give the buffer back, as Transform does, each get
// their own message back when decrypting, never another's.
func TestPooledBuffers(t *testing.T) {
	for _, n := range []int{0, 1, 4095, 4096, 4097, 100 << 10, 1 << 20, 1<<20 + 1} {
		b := getBuf(n)
		if len(b) != 0 || cap(b) < n {
			t.Fatalf("getBuf(%d): len %d cap %d", n, len(b), cap(b))
		}
		putBuf(append(b, 1))
	}
	p := newPKI(t)
	alice := p.leaf(t, "alice@org.test")
	bob := p.leaf(t, "bob@ext.test")
	message := func(g, i int) []byte {
		line := fmt.Sprintf("message %d/%d of goroutine %d\r\n", i, g, g)
		return []byte("From: alice@org.test\r\nTo: bob@ext.test\r\n\r\n" + strings.Repeat(line, 1000+g*700+i*50))
	}
	first, err := Protect(message(0, 0), &alice, AES256CBC, []Recipient{{Cert: bob.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	kept := bytes.Clone(first)
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := range 5 {
				want := message(g, i)
				msg := append(getBuf(len(want)+512), want...)
				out, err := Protect(msg, &alice, []Cipher{AES256CBC, AES256GCM}[(g+i)%2], []Recipient{{Cert: bob.Cert}})
				putBuf(msg)
				if err == nil {
					var res *Result
					res, err = Open(out, []Identity{bob}, VerifyOptions{Roots: p.roots})
					body := want[bytes.Index(want, []byte("\r\n\r\n"))+4:]
					if err == nil && (res.SigErr != nil || !bytes.Contains(res.Message, body) || bytes.Count(res.Message, []byte("message ")) != bytes.Count(body, []byte("message "))) {
						err = fmt.Errorf("goroutine %d message %d: %v, not its own body", g, i, res.SigErr)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(first, kept) {
		t.Fatal("an earlier output changed while later messages were protected")
	}
}
