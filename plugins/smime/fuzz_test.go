package smime

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// fuzzIdentity is a fixed test identity (testdata/fuzz-id.pem, a
// throw-away key made for these tests only), so that the corpus, made
// for it, reaches the content decryption.
func fuzzIdentity(t testing.TB) Identity {
	b, err := os.ReadFile("testdata/fuzz-id.pem")
	if err != nil {
		t.Fatal(err)
	}
	var id Identity
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "CERTIFICATE":
			id.Cert, err = x509.ParseCertificate(blk.Bytes)
		case "PRIVATE KEY":
			var k any
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
			id.Key, _ = k.(*rsa.PrivateKey)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return id
}

func FuzzDecrypt(f *testing.F) {
	id := fuzzIdentity(f)
	f.Fuzz(func(t *testing.T, der []byte) {
		pt, env, err := Decrypt(der, []Identity{id})
		if err == nil && (env == nil || pt == nil) {
			t.Fatal("no error but no result")
		}
		Verify(der, nil, VerifyOptions{})
	})
}

func FuzzOpen(f *testing.F) {
	id := fuzzIdentity(f)
	f.Add([]byte(testMsg))
	f.Fuzz(func(t *testing.T, msg []byte) {
		Open(msg, []Identity{id}, VerifyOptions{})
	})
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzDecrypt when
// SMIME_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("SMIME_WRITE_CORPUS") == "" {
		t.Skip("set SMIME_WRITE_CORPUS=1 to regenerate the fuzz corpus")
	}
	id := fuzzIdentity(t)
	dir := "testdata/fuzz/FuzzDecrypt"
	os.MkdirAll(dir, 0o755)
	i := 0
	write := func(b []byte) {
		i++
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644)
	}
	for _, c := range []Cipher{AES256CBC, AES256GCM} {
		for _, kt := range []KeyTransport{PKCS1v15, OAEP} {
			der, err := Encrypt([]byte("Content-Type: text/plain\r\n\r\nfuzz\r\n"), c, []Recipient{{Cert: id.Cert, Transport: kt}})
			if err != nil {
				t.Fatal(err)
			}
			write(der)
		}
	}
	sig, err := SignDetached([]byte("x"), id)
	if err != nil {
		t.Fatal(err)
	}
	write(sig)
	if _, err := exec.LookPath("openssl"); err == nil {
		dir := t.TempDir()
		cert := filepath.Join(dir, "c.pem")
		os.WriteFile(cert, certPEM(id.Cert), 0o600)
		key := filepath.Join(dir, "k.pem")
		os.WriteFile(key, keyPEM(t, id), 0o600)
		write(openssl(t, []byte("x"), "cms", "-encrypt", "-aes-256-gcm", "-stream", "-outform", "DER", cert))
		write(openssl(t, []byte("x"), "cms", "-encrypt", "-aes-256-cbc", "-outform", "DER", "-recip", cert, "-keyopt", "rsa_padding_mode:oaep"))
		write(openssl(t, []byte("x"), "cms", "-sign", "-nodetach", "-stream", "-outform", "DER", "-signer", cert, "-inkey", key))
	}
	write([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, 0xa0, 0x80, 0x00, 0x00, 0x00, 0x00})
}
