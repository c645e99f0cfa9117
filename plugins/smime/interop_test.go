package smime

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSignVerifiedByOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := newPKI(t)
	alice := p.leaf(t, "alice@org.test")
	out, err := Protect([]byte(testMsg), &alice, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", certPEM(p.ca.Cert))
	in := writeFile(t, dir, "signed.eml", out)
	got := openssl(t, nil, "cms", "-verify", "-in", in, "-CAfile", ca)
	if !bytes.Contains(got, []byte("the numbers are fine")) {
		t.Fatalf("openssl verify output: %q", got)
	}
	if !bytes.HasPrefix(out, []byte("From: Alice")) || !bytes.Contains(out, []byte("micalg=sha-256")) {
		t.Fatalf("unexpected message:\n%s", out)
	}
	// And we verify our own.
	res, err := Open(out, nil, VerifyOptions{Roots: p.roots, From: "alice@org.test"})
	if err != nil || !res.Signed || res.SigErr != nil {
		t.Fatalf("Open: %v %+v", err, res)
	}
	if !res.Signature.Capabilities.GCM || !res.Signature.Capabilities.OAEP {
		t.Errorf("capabilities not announced: %+v", res.Signature.Capabilities)
	}
}

func TestEncryptDecryptedByOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := newPKI(t)
	alice := p.leaf(t, "alice@org.test")
	bob := p.leaf(t, "bob@ext.test")
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", certPEM(p.ca.Cert))
	for _, c := range []Cipher{AES256CBC, AES256GCM} {
		for _, kt := range []KeyTransport{PKCS1v15, OAEP} {
			t.Run(c.String()+"/"+kt.String(), func(t *testing.T) {
				out, err := Protect([]byte(testMsg), &alice, c, []Recipient{{Cert: bob.Cert, Transport: kt}, {Cert: alice.Cert, Transport: kt}})
				if err != nil {
					t.Fatal(err)
				}
				want := "smime-type=enveloped-data"
				if c == AES256GCM {
					want = "smime-type=authEnveloped-data"
				}
				if !bytes.Contains(out, []byte(want)) {
					t.Fatalf("want %s in\n%s", want, out)
				}
				in := writeFile(t, dir, "enc.eml", out)
				for _, who := range []Identity{bob, alice} {
					cert := writeFile(t, dir, "rcpt.pem", certPEM(who.Cert))
					key := writeFile(t, dir, "rcpt.key", keyPEM(t, who))
					dec := openssl(t, nil, "cms", "-decrypt", "-in", in, "-recip", cert, "-inkey", key)
					if !bytes.Contains(dec, []byte("multipart/signed")) {
						t.Fatalf("decrypted: %q", dec)
					}
					decf := writeFile(t, dir, "dec.eml", dec)
					ver := openssl(t, nil, "cms", "-verify", "-in", decf, "-CAfile", ca)
					if !bytes.Contains(ver, []byte("the numbers are fine")) {
						t.Fatalf("verified content: %q", ver)
					}
				}
				// Round trip through our own Open.
				res, err := Open(out, []Identity{bob}, VerifyOptions{Roots: p.roots, From: "alice@org.test"})
				if err != nil {
					t.Fatal(err)
				}
				if !res.Encrypted || res.Envelope.Cipher != c || res.Envelope.Transport != kt || !res.Signed || res.SigErr != nil {
					t.Fatalf("result %+v %+v", res, res.Envelope)
				}
			})
		}
	}
}

func TestDecryptOpenSSLMail(t *testing.T) {
	needOpenSSL(t)
	p := newPKI(t)
	bob := p.leaf(t, "bob@org.test")
	other := p.leaf(t, "other@org.test")
	dir := t.TempDir()
	cert := writeFile(t, dir, "bob.pem", certPEM(bob.Cert))
	entity := "Content-Type: text/plain\r\n\r\nsecret plans\r\n"
	cases := []struct {
		name string
		args []string
		c    Cipher
		kt   KeyTransport
	}{
		{"cbc", []string{"-aes-256-cbc"}, AES256CBC, PKCS1v15},
		{"gcm", []string{"-aes-256-gcm"}, AES256GCM, PKCS1v15},
		{"cbc-oaep", []string{"-aes-256-cbc", "-recip", cert, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"}, AES256CBC, OAEP},
		{"gcm-oaep-sha1", []string{"-aes-256-gcm", "-recip", cert, "-keyopt", "rsa_padding_mode:oaep"}, AES256GCM, OAEP},
		{"gcm-stream", []string{"-aes-256-gcm", "-stream"}, AES256GCM, PKCS1v15},
		{"gcm-keyid", []string{"-aes-256-gcm", "-keyid"}, AES256GCM, PKCS1v15},
		{"cbc-stream-der", []string{"-aes-256-cbc", "-stream", "-outform", "DER"}, AES256CBC, PKCS1v15},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"cms", "-encrypt"}, tc.args...)
			if !contains(tc.args, "-recip") {
				args = append(args, cert)
			}
			out := openssl(t, []byte(entity), args...)
			var res *Result
			var err error
			if contains(tc.args, "DER") {
				var pt []byte
				var env *Envelope
				pt, env, err = Decrypt(out, []Identity{bob})
				if err == nil {
					res = &Result{Encrypted: true, Envelope: env, Message: pt}
				}
			} else {
				msg := append([]byte("From: alice@ext.test\r\nTo: bob@org.test\r\n"), out...)
				res, err = Open(msg, []Identity{other, bob}, VerifyOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			if !res.Encrypted || res.Envelope.Cipher != tc.c || res.Envelope.Transport != tc.kt {
				t.Fatalf("envelope %+v", res.Envelope)
			}
			if !bytes.Contains(res.Message, []byte("secret plans")) {
				t.Fatalf("message %q", res.Message)
			}
			// Not for us: a clear error.
			if _, _, err := Decrypt(mustDER(t, out), []Identity{other}); err == nil || !strings.Contains(err.Error(), "none of our certificates") {
				t.Fatalf("wrong key: %v", err)
			}
		})
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// mustDER extracts the DER from an S/MIME message (or returns DER input).
func mustDER(t *testing.T, b []byte) []byte {
	if len(b) > 0 && b[0] == 0x30 {
		return b
	}
	m, err := parseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	der, err := decodeBody(m)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestVerifyOpenSSLSignatures(t *testing.T) {
	needOpenSSL(t)
	p := newPKI(t)
	carol := p.leaf(t, "carol@ext.test")
	dir := t.TempDir()
	cert := writeFile(t, dir, "c.pem", certPEM(carol.Cert))
	key := writeFile(t, dir, "c.key", keyPEM(t, carol))
	entity := "Content-Type: text/plain\r\n\r\nsigned by openssl\r\n"
	for _, mode := range []string{"detached", "opaque"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"cms", "-sign", "-signer", cert, "-inkey", key, "-md", "sha256"}
			if mode == "opaque" {
				args = append(args, "-nodetach")
			}
			out := openssl(t, []byte(entity), args...)
			msg := append([]byte("From: carol@ext.test\r\nTo: x@org.test\r\n"), out...)
			res, err := Open(msg, nil, VerifyOptions{Roots: p.roots, From: "carol@ext.test"})
			if err != nil || !res.Signed || res.SigErr != nil {
				t.Fatalf("%v %+v", err, res)
			}
			if res.Signature.Signer.SerialNumber.Cmp(carol.Cert.SerialNumber) != 0 {
				t.Fatal("wrong signer")
			}
			if !bytes.Contains(res.Message, []byte("signed by openssl")) {
				t.Fatalf("message %q", res.Message)
			}
			// Wrong address.
			res, err = Open(msg, nil, VerifyOptions{Roots: p.roots, From: "mallory@ext.test"})
			if err != nil || res.SigErr == nil || !strings.Contains(res.SigErr.Error(), "not for mallory@ext.test") {
				t.Fatalf("mismatched address: %v %+v", err, res)
			}
			// Tampered content.
			bad := bytes.Replace(msg, []byte("signed by openssl"), []byte("signed by 0penssl"), 1)
			if mode == "detached" {
				res, err = Open(bad, nil, VerifyOptions{Roots: p.roots})
				if err != nil || res.SigErr == nil {
					t.Fatalf("tampered: %v %+v", err, res)
				}
			}
		})
	}
}

func TestLoadPKCS12(t *testing.T) {
	needOpenSSL(t)
	p := newPKI(t)
	gw := p.leaf(t, "gateway@org.test")
	dir := t.TempDir()
	cert := writeFile(t, dir, "gw.pem", append(certPEM(gw.Cert), certPEM(p.ca.Cert)...))
	key := writeFile(t, dir, "gw.key", keyPEM(t, gw))
	writeFile(t, dir, "pass", []byte("s3cret\n"))
	openssl(t, nil, "pkcs12", "-export", "-legacy", "-in", cert, "-inkey", key, "-passout", "pass:s3cret", "-out", filepath.Join(dir, "gw.p12"))
	// OpenSSL 3's default (AES-256-CBC, PBKDF2) must load too.
	openssl(t, nil, "pkcs12", "-export", "-in", cert, "-inkey", key, "-passout", "pass:s3cret", "-out", filepath.Join(dir, "modern.p12"))
	if id, err := LoadIdentity(IdentityConfig{PKCS12: "modern.p12", Password: "s3cret"}, dir); err != nil || id == nil {
		t.Fatalf("modern PKCS#12: %v", err)
	}
	id, err := LoadIdentity(IdentityConfig{PKCS12: "gw.p12", PasswordFile: "pass", Domains: []string{"Org.test"}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Cert.Equal(gw.Cert) || len(id.Chain) != 1 || id.Domains[0] != "org.test" {
		t.Fatalf("%+v", id)
	}
	if _, err := LoadIdentity(IdentityConfig{PKCS12: "gw.p12", Password: "wrong"}, dir); err == nil {
		t.Fatal("wrong password accepted")
	}
	// PEM with the key in the same file.
	both := writeFile(t, dir, "both.pem", append(certPEM(gw.Cert), keyPEM(t, gw)...))
	id, err = LoadIdentity(IdentityConfig{Cert: both}, dir)
	if err != nil || id.Addresses[0] != "gateway@org.test" {
		t.Fatalf("%v %+v", err, id)
	}
	// A key that does not match.
	other := p.leaf(t, "x@org.test")
	if _, err := LoadIdentity(IdentityConfig{Cert: cert, Key: writeFile(t, dir, "o.key", keyPEM(t, other))}, dir); err == nil || !strings.Contains(err.Error(), "no certificate matches") {
		t.Fatalf("mismatch: %v", err)
	}
}

func TestChainAttached(t *testing.T) {
	needOpenSSL(t)
	root := newPKI(t)
	// An intermediate CA under root; the leaf under the intermediate.
	k := rsaKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "Test Intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(1000 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.ca.Cert, &k.PublicKey, root.ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	ic, _ := x509.ParseCertificate(der)
	inter := &testPKI{ca: Identity{Cert: ic, Key: k}}
	alice := inter.leaf(t, "alice@org.test")
	alice.Chain = []*x509.Certificate{ic}
	out, err := Protect([]byte(testMsg), &alice, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	got := openssl(t, nil, "cms", "-verify", "-in", writeFile(t, dir, "s.eml", out), "-CAfile", writeFile(t, dir, "root.pem", certPEM(root.ca.Cert)))
	if !bytes.Contains(got, []byte("the numbers are fine")) {
		t.Fatalf("%q", got)
	}
	res, err := Open(out, nil, VerifyOptions{Roots: root.roots, From: "alice@org.test"})
	if err != nil || res.SigErr != nil {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestECDSASignerVerifiedByOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := newPKI(t)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: "ec"}, EmailAddresses: []string{"ec@org.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca.Cert, &k.PublicKey, p.ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	out, err := Protect([]byte(testMsg), &Identity{Cert: c, Key: k}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	got := openssl(t, nil, "cms", "-verify", "-in", writeFile(t, dir, "s.eml", out), "-CAfile", writeFile(t, dir, "ca.pem", certPEM(p.ca.Cert)))
	if !bytes.Contains(got, []byte("the numbers are fine")) {
		t.Fatalf("%q", got)
	}
	res, err := Open(out, nil, VerifyOptions{Roots: p.roots, From: "ec@org.test"})
	if err != nil || res.SigErr != nil {
		t.Fatalf("%v %+v", err, res)
	}
}
