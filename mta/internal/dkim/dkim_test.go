//go:debug rsa1024min=0

package dkim

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/testbed/dnsserver"
)

var (
	keysOnce sync.Once
	rsaKey   crypto.Signer
	rsaPEM   []byte
	edKey    crypto.Signer
	edPEM    []byte
)

func testKeys(t *testing.T) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, rsaPEM, err = Generate("rsa"); err != nil {
			panic(err)
		}
		if edKey, edPEM, err = Generate("ed25519"); err != nil {
			panic(err)
		}
	})
}

const testMsg = "From: Alice <alice@example.org>\r\n" +
	"To: bob@example.net\r\n" +
	"Subject: Hello\r\n" +
	"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
	"Message-ID: <1@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	"\r\n" +
	"this is a test.  \r\n" +
	"\r\n\r\n"

// lookupMap serves TXT records from a map, as net.LookupTXT would.
func lookupMap(m map[string]string) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		if v, ok := m[strings.TrimSuffix(name, ".")]; ok {
			return []string{v}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
}

func verify(t *testing.T, signed string, lookup func(string) ([]string, error)) []*msgdkim.Verification {
	t.Helper()
	v, err := msgdkim.VerifyWithOptions(strings.NewReader(signed), &msgdkim.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return v
}

func sign(t *testing.T, s *Signer, from string, msg io.Reader) string {
	t.Helper()
	var out bytes.Buffer
	if err := s.Sign(from, msg, &out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func records(t *testing.T, keys ...*Key) map[string]string {
	m := map[string]string{}
	for _, k := range keys {
		rec, err := DNSRecord(k.Signer)
		if err != nil {
			t.Fatal(err)
		}
		m[k.RecordName()] = rec
	}
	return m
}

func TestSignVerify(t *testing.T) {
	testKeys(t)
	rk := &Key{Domain: "example.org", Selector: "rsa2026", Signer: rsaKey}
	ek := &Key{Domain: "example.org", Selector: "ed2026", Signer: edKey}
	for _, c := range []struct {
		name string
		keys []*Key
		algs []string
	}{
		{"rsa", []*Key{rk}, []string{"rsa-sha256"}},
		{"ed25519", []*Key{ek}, []string{"ed25519-sha256"}},
		{"dual", []*Key{rk, ek}, []string{"rsa-sha256", "ed25519-sha256"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewSigner(c.keys)
			signed := sign(t, s, "alice@Example.ORG", strings.NewReader(testMsg))
			if !strings.HasSuffix(signed, testMsg) {
				t.Fatal("message not appended unchanged")
			}
			hdr := strings.TrimSuffix(signed, testMsg)
			if n := strings.Count(hdr, "DKIM-Signature:"); n != len(c.keys) {
				t.Fatalf("%d signatures:\n%s", n, hdr)
			}
			for _, a := range c.algs {
				if !strings.Contains(hdr, "a="+a) {
					t.Errorf("no a=%s in\n%s", a, hdr)
				}
			}
			unfolded := strings.NewReplacer("\r\n", "", " ", "", "\t", "").Replace(hdr)
			if !strings.Contains(unfolded, "c=relaxed/relaxed") || !strings.Contains(unfolded, "h=From:From:To:Cc:Subject:Date:Message-ID") {
				t.Errorf("tags: %s", hdr)
			}
			for _, line := range strings.Split(strings.TrimSuffix(hdr, "\r\n"), "\r\n") {
				if len(line) > 998 { // RFC 5322 section 2.1.1
					t.Errorf("unfolded line of %d chars", len(line))
				}
			}
			lookup := lookupMap(records(t, c.keys...))
			vs := verify(t, signed, lookup)
			if len(vs) != len(c.keys) {
				t.Fatalf("%d verifications", len(vs))
			}
			for _, v := range vs {
				if v.Err != nil || v.Domain != "example.org" {
					t.Errorf("verification: %+v", v)
				}
			}

			// A changed body fails.
			tampered := strings.Replace(signed, "this is a test.", "this is a trap.", 1)
			for _, v := range verify(t, tampered, lookup) {
				if v.Err == nil || !msgdkim.IsPermFail(v.Err) && !strings.Contains(v.Err.Error(), "body hash") {
					t.Errorf("tampered body verified: %+v", v)
				}
			}
			// A changed subject fails.
			tampered = strings.Replace(signed, "Subject: Hello", "Subject: Hallo", 1)
			for _, v := range verify(t, tampered, lookup) {
				if v.Err == nil {
					t.Errorf("tampered subject verified")
				}
			}
			// A second From (oversigned) fails.
			tampered = strings.Replace(signed, "From: Alice", "From: mallory@evil.example\r\nFrom: Alice", 1)
			for _, v := range verify(t, tampered, lookup) {
				if v.Err == nil {
					t.Errorf("added From verified")
				}
			}
			// Relaxed canonicalization survives whitespace changes in
			// transit.
			relaxed := strings.Replace(signed, "Subject: Hello", "Subject:   Hello", 1)
			relaxed = strings.Replace(relaxed, "this is a test.  \r\n", "this is a test.\r\n", 1)
			for _, v := range verify(t, relaxed, lookup) {
				if v.Err != nil {
					t.Errorf("relaxed: %v", v.Err)
				}
			}
		})
	}
}

func TestSignDomains(t *testing.T) {
	testKeys(t)
	s := NewSigner([]*Key{{Domain: "Example.ORG.", Selector: "s1", Signer: edKey}, nil, {Domain: "x.test", Selector: "s"}})
	// No key: unchanged.
	for _, from := range []string{"bob@example.net", "", "org", "example.org.evil.test", "<>"} {
		if out := sign(t, s, from, strings.NewReader(testMsg)); out != testMsg {
			t.Errorf("from %q: changed", from)
		}
	}
	// Subdomain: signed with the parent's key.
	for _, from := range []string{"alice@mail.example.org", "example.org", "a@EXAMPLE.org"} {
		out := sign(t, s, from, strings.NewReader(testMsg))
		if !strings.HasPrefix(out, "DKIM-Signature:") || !strings.Contains(out, "d=example.org") {
			t.Errorf("from %q: not signed", from)
		}
	}
	if ks := s.KeysFor("x@sub.example.org"); len(ks) != 1 || ks[0].Selector != "s1" {
		t.Errorf("KeysFor: %v", ks)
	}
	var nilSigner *Signer
	if out := sign(t, nilSigner, "a@example.org", strings.NewReader(testMsg)); out != testMsg {
		t.Error("nil signer changed the message")
	}
}

// bigReader is an io.Reader that is not a ReadSeeker.
type onlyReader struct{ io.Reader }

func TestSignLargeAndSeekable(t *testing.T) {
	testKeys(t)
	k := &Key{Domain: "example.org", Selector: "s", Signer: edKey}
	s := NewSigner([]*Key{k})
	s.TempDir = t.TempDir()
	lookup := lookupMap(records(t, k))
	line := strings.Repeat("0123456789", 9) + "\r\n"
	big := testMsg + strings.Repeat(line, MemoryLimit/len(line)+1000)

	out := sign(t, s, "a@example.org", onlyReader{strings.NewReader(big)})
	if !strings.HasSuffix(out, big) {
		t.Fatal("big message changed")
	}
	if v := verify(t, out, lookup); v[0].Err != nil {
		t.Fatal(v[0].Err)
	}
	if ents, _ := os.ReadDir(s.TempDir); len(ents) != 0 {
		t.Errorf("temporary files left: %v", ents)
	}

	// A spool file is read twice, from where it stood.
	f, err := os.Create(filepath.Join(t.TempDir(), "msg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("ENVELOPE\n" + testMsg)
	f.Seek(int64(len("ENVELOPE\n")), io.SeekStart)
	out = sign(t, s, "a@example.org", f)
	if !strings.HasSuffix(out, "\r\n"+testMsg) || strings.Contains(out, "ENVELOPE") {
		t.Fatalf("seekable: %q", out)
	}
	if v := verify(t, out, lookup); v[0].Err != nil {
		t.Fatal(v[0].Err)
	}
}

func TestKeyFiles(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey.(*rsa.PrivateKey))})
	for name, data := range map[string][]byte{"rsa8.pem": rsaPEM, "ed.pem": edPEM, "rsa1.pem": pkcs1} {
		k, err := LoadKey("Example.org", "sel", write(name, data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if k.Domain != "example.org" || k.RecordName() != "sel._domainkey.example.org" {
			t.Errorf("%s: %+v", name, k)
		}
		want := "rsa"
		if name == "ed.pem" {
			want = "ed25519"
		}
		if k.Algorithm() != want {
			t.Errorf("%s: algorithm %s", name, k.Algorithm())
		}
	}

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	ec8, _ := x509.MarshalPKCS8PrivateKey(ec)
	small, err := rsa.GenerateKey(rand.Reader, 512)
	if err != nil {
		t.Fatal(err)
	}
	small8, _ := x509.MarshalPKCS8PrivateKey(small)
	block, _ := pem.Decode(rsaPEM)
	truncated := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: block.Bytes[:len(block.Bytes)/2]})
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty.pem", nil, "empty file"},
		{"garbage.pem", []byte("not a key\n"), "no PEM block"},
		{"truncated.pem", truncated, "broken PKCS#8"},
		{"badpkcs1.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), "broken PKCS#1"},
		{"ec.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), "ECDSA"},
		{"ec8.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ec8}), "ecdsa"},
		{"enc.pem", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "encrypted"},
		{"cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), "not a private key"},
		{"small.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: small8}), "512 bits"},
		{"two.pem", append(append([]byte{}, edPEM...), rsaPEM...), "more than one"},
	} {
		p := write(c.name, c.data)
		_, err := LoadKey("example.org", "sel", p)
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.want)) {
			t.Errorf("%s: %v (want %q)", c.name, err, c.want)
		}
	}
	missing := filepath.Join(dir, "missing.pem")
	if _, err := LoadKey("example.org", "sel", missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing: %v", err)
	}
	good := write("good.pem", edPEM)
	for _, c := range [][2]string{{"", "sel"}, {"example..org", "sel"}, {"org", "sel"}, {"example.org", ""}, {"example.org", "a b"}, {"example.org", "a..b"}} {
		if _, err := LoadKey(c[0], c[1], good); err == nil || !strings.Contains(err.Error(), good) {
			t.Errorf("LoadKey(%q, %q): %v", c[0], c[1], err)
		}
	}
	if _, err := LoadKey("example.org", "2026.eu", good); err != nil {
		t.Errorf("dotted selector: %v", err)
	}
}

func TestDNSRecord(t *testing.T) {
	testKeys(t)
	r, err := DNSRecord(rsaKey)
	if err != nil || !strings.HasPrefix(r, "v=DKIM1; k=rsa; p=MIIB") || len(r) < 300 {
		t.Fatalf("rsa: %q %v", r, err)
	}
	chunks := TXTStrings(r)
	if len(chunks) != 2 || len(chunks[0]) != 255 || strings.Join(chunks, "") != r {
		t.Fatalf("chunks: %q", chunks)
	}
	e, err := DNSRecord(edKey)
	if err != nil || !strings.HasPrefix(e, "v=DKIM1; k=ed25519; p=") || len(e) != len("v=DKIM1; k=ed25519; p=")+44 {
		t.Fatalf("ed25519: %q %v", e, err)
	}
	if len(TXTStrings(e)) != 1 {
		t.Fatal("short value split")
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := DNSRecord(ec); err == nil {
		t.Fatal("ecdsa accepted")
	}
	if _, err := DNSRecord(nil); err == nil {
		t.Fatal("nil accepted")
	}
	if _, _, err := Generate("dsa"); err == nil || !strings.Contains(err.Error(), "dsa") {
		t.Fatalf("Generate(dsa): %v", err)
	}
	if RecordName("s", "example.org.") != "s._domainkey.example.org" {
		t.Fatal(RecordName("s", "example.org."))
	}
}

// TestVerifyThroughTestbedDNS publishes the keys in the testbed DNS server
// and verifies through mta/resolver, as a receiving MTA would.
func TestVerifyThroughTestbedDNS(t *testing.T) {
	testKeys(t)
	srv, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rk := &Key{Domain: "example.org", Selector: "r", Signer: rsaKey}
	ek := &Key{Domain: "example.org", Selector: "e", Signer: edKey}
	z := srv.Zone("example.org", dnsserver.Secure)
	for _, k := range []*Key{rk, ek} {
		rec, _ := DNSRecord(k.Signer)
		z.TXT(k.RecordName(), TXTStrings(rec)...)
	}
	res, err := resolver.New(resolver.Options{Server: srv.Addr(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	signed := sign(t, NewSigner([]*Key{rk, ek}), "alice@example.org", strings.NewReader(testMsg))
	vs := verify(t, signed, res.LookupTXTFunc())
	if len(vs) != 2 {
		t.Fatalf("%d verifications", len(vs))
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("%s: %v", v.Domain, v.Err)
		}
	}
	// Key record gone: permanent failure; DNS down: temporary.
	z.Remove(rk.RecordName(), 0xff)
	srv.Zone("example.org", dnsserver.Bogus)
	for _, v := range verify(t, signed, res.LookupTXTFunc()) {
		if !msgdkim.IsTempFail(v.Err) {
			t.Errorf("bogus zone: %v", v.Err)
		}
	}
	srv.Zone("example.org", dnsserver.Secure)
	var fails int
	for _, v := range verify(t, signed, res.LookupTXTFunc()) {
		if v.Err != nil {
			fails++
			if !msgdkim.IsPermFail(v.Err) {
				t.Errorf("removed key: %v", v.Err)
			}
		}
	}
	if fails != 1 {
		t.Errorf("%d failures after removing one key", fails)
	}
}
