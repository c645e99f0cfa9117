package smime

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"
)

// ecLeaf issues an EC S/MIME certificate (digitalSignature|keyAgreement,
// emailProtection) from the test CA.
func (p *testPKI) ecLeaf(t testing.TB, addr string, curve elliptic.Curve, usage x509.KeyUsage) Identity {
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: addr}, EmailAddresses: []string{addr},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: usage, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca.Cert, &k.PublicKey, p.ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return Identity{Cert: c, Key: k}
}

// RFC 3394 §4.1, §4.3 and §4.6.
func TestAESKeyWrapVectors(t *testing.T) {
	h := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, v := range []struct{ kek, key, want string }{
		{"000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF", "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5"},
		{"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "00112233445566778899AABBCCDDEEFF", "64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7"},
		{"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
			"28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21"},
	} {
		got, err := aesKeyWrap(h(v.kek), h(v.key))
		if err != nil || !bytes.Equal(got, h(v.want)) {
			t.Fatalf("wrap: %x, %v; want %s", got, err, v.want)
		}
		back, err := aesKeyUnwrap(h(v.kek), got)
		if err != nil || !bytes.Equal(back, h(v.key)) {
			t.Fatalf("unwrap: %x, %v", back, err)
		}
		got[3] ^= 1
		if _, err := aesKeyUnwrap(h(v.kek), got); err == nil {
			t.Fatal("unwrap of a corrupted key succeeded")
		}
	}
}

// TestECDHWithOpenSSL: both ways with openssl cms, P-256 and P-384. Our
// EnvelopedData (CBC) and AuthEnvelopedData (GCM) to an EC recipient are
// decrypted by openssl; openssl's (default X9.63 SHA-1 KDF, and SHA-256 /
// SHA-384 KDFs chosen with -keyopt) are decrypted by us.
func TestECDHWithOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := newPKI(t)
	dir := t.TempDir()
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		name := curve.Params().Name
		bob := p.ecLeaf(t, "bob@ext.test", curve, x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement)
		rsaCarol := p.leaf(t, "carol@ext.test")
		cert := writeFile(t, dir, "bob.pem", certPEM(bob.Cert))
		key := writeFile(t, dir, "bob.key", keyPEM(t, bob))
		if err := EncryptionUsable(bob.Cert); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, c := range []Cipher{AES256CBC, AES256GCM} {
			t.Run(name+"/ours/"+c.String(), func(t *testing.T) {
				out, err := Protect([]byte(testMsg), nil, c, []Recipient{{Cert: bob.Cert}, {Cert: rsaCarol.Cert, Transport: OAEP}})
				if err != nil {
					t.Fatal(err)
				}
				in := writeFile(t, dir, "enc.eml", out)
				dec := openssl(t, nil, "cms", "-decrypt", "-in", in, "-recip", cert, "-inkey", key)
				if !bytes.Contains(dec, []byte("the numbers are fine")) {
					t.Fatalf("openssl decrypted: %q", dec)
				}
				printed := string(openssl(t, nil, "cms", "-cmsout", "-print", "-in", in))
				want := map[string]string{"P-256": "dhSinglePass-stdDH-sha256kdf-scheme", "P-384": "dhSinglePass-stdDH-sha384kdf-scheme"}[name]
				if !strings.Contains(printed, want) {
					t.Fatalf("want %s in\n%s", want, printed)
				}
				// And our own decryption of our own.
				res, err := Open(out, []Identity{bob}, VerifyOptions{Roots: p.roots})
				if err != nil || !bytes.Contains(res.Message, []byte("the numbers are fine")) || res.Envelope.Transport != ECDH {
					t.Fatalf("Open: %v %+v", err, res)
				}
			})
		}
		for _, kdf := range []string{"", "sha256", "sha384"} {
			for _, cipherFlag := range []string{"-aes128", "-aes256", "-aes-256-gcm"} {
				t.Run(name+"/openssl/"+kdf+cipherFlag, func(t *testing.T) {
					plain := writeFile(t, dir, "plain.txt", []byte("Content-Type: text/plain\r\n\r\nfrom openssl\r\n"))
					args := []string{"cms", "-encrypt", "-in", plain, "-outform", "DER", cipherFlag, "-recip", cert}
					if kdf != "" {
						args = append(args, "-keyopt", "ecdh_kdf_md:"+kdf)
					}
					der := openssl(t, nil, args...)
					pt, env, err := Decrypt(der, []Identity{rsaIdentityDecoy(t, p), bob})
					if err != nil {
						t.Fatalf("Decrypt: %v", err)
					}
					if !bytes.Contains(pt, []byte("from openssl")) || env.Transport != ECDH || env.Recipient != bob.Cert {
						t.Fatalf("got %q %+v", pt, env)
					}
					t.Logf("%s", env.Agreement)
				})
			}
		}
	}
}

// rsaIdentityDecoy is an identity that is not a recipient.
func rsaIdentityDecoy(t *testing.T, p *testPKI) Identity { return p.leaf(t, "decoy@org.test") }

func TestEncryptionUsable(t *testing.T) {
	p := newPKI(t)
	signOnly := p.ecLeaf(t, "s@ext.test", elliptic.P256(), x509.KeyUsageDigitalSignature)
	if err := EncryptionUsable(signOnly.Cert); err == nil || !strings.Contains(err.Error(), "keyAgreement") {
		t.Fatalf("signing-only EC cert: %v", err)
	}
	p224 := p.ecLeaf(t, "c@ext.test", elliptic.P224(), x509.KeyUsageKeyAgreement)
	if err := EncryptionUsable(p224.Cert); err == nil || !strings.Contains(err.Error(), "P-224") {
		t.Fatalf("P-224: %v", err)
	}
	rsaSign := p.leaf(t, "r@ext.test", func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature })
	if err := EncryptionUsable(rsaSign.Cert); err == nil || !strings.Contains(err.Error(), "keyEncipherment") {
		t.Fatalf("signing-only RSA: %v", err)
	}
	if err := EncryptionUsable(p.leaf(t, "ok@ext.test").Cert); err != nil {
		t.Fatal(err)
	}
}

// TestCLIListsUnusableCertificates: certs list and show name a
// certificate that cannot be encrypted to, with the reason; EC
// certificates with keyAgreement are plain "valid".
func TestCLIListsUnusableCertificates(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	db := dir + "/certs.db"
	signOnly := writeFile(t, dir, "s.pem", certPEM(p.ecLeaf(t, "s@ext.test", elliptic.P256(), x509.KeyUsageDigitalSignature).Cert))
	ec := writeFile(t, dir, "e.pem", certPEM(p.ecLeaf(t, "e@ext.test", elliptic.P384(), x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement).Cert))
	run := func(args ...string) string {
		var out, errb bytes.Buffer
		if code := CLI(append([]string{"certs", args[0], "-db", db}, args[1:]...), &out, &errb); code != 0 {
			t.Fatalf("%v: %d %s", args, code, errb.String())
		}
		return out.String()
	}
	run("import", signOnly, ec)
	list := run("list")
	var sLine, eLine string
	for _, l := range strings.Split(list, "\n") {
		if strings.HasPrefix(l, "s@ext.test") {
			sLine = l
		}
		if strings.HasPrefix(l, "e@ext.test") {
			eLine = l
		}
	}
	if !strings.Contains(sLine, "sign-only") || !strings.Contains(sLine, "cannot encrypt: EC key without keyAgreement") {
		t.Fatalf("signing-only EC certificate listed as:\n%s", list)
	}
	if !strings.Contains(eLine, " valid ") || strings.Contains(eLine, "cannot encrypt") {
		t.Fatalf("usable EC certificate listed as:\n%s", list)
	}
	if show := run("show", "s@ext.test"); !strings.Contains(show, "encryption:  not usable: EC key without keyAgreement") {
		t.Fatalf("show:\n%s", show)
	}
}

func TestCipherName(t *testing.T) {
	for oid, want := range map[string]string{"2.16.840.1.101.3.4.1.2": "aes128-cbc", "2.16.840.1.101.3.4.1.46": "aes256-gcm", "1.2.3": "1.2.3"} {
		var o []int
		for _, p := range strings.Split(oid, ".") {
			n := 0
			for _, c := range p {
				n = n*10 + int(c-'0')
			}
			o = append(o, n)
		}
		if got := CipherName(o); got != want {
			t.Errorf("%s: %s, want %s", oid, got, want)
		}
	}
}
