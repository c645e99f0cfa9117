package smime

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testPKI is a CA with leaves, made at run time.
type testPKI struct {
	ca    Identity
	roots *x509.CertPool
}

var keyPool struct {
	sync.Mutex
	keys []*rsa.PrivateKey
	n    int
}

// rsaKey hands out a few 2048-bit keys, made once (key generation is the
// slow part of these tests).
func rsaKey(t testing.TB) *rsa.PrivateKey {
	keyPool.Lock()
	defer keyPool.Unlock()
	if len(keyPool.keys) < 6 {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		keyPool.keys = append(keyPool.keys, k)
		return k
	}
	keyPool.n++
	return keyPool.keys[keyPool.n%len(keyPool.keys)]
}

var serial int64 = 100

func newPKI(t testing.TB) *testPKI {
	k := rsaKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test Root CA", Organization: []string{"Posthorn Test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	p := &testPKI{ca: Identity{Cert: c, Key: k}, roots: x509.NewCertPool()}
	p.roots.AddCert(c)
	return p
}

type leafOpt func(*x509.Certificate)

func (p *testPKI) leaf(t testing.TB, addr string, opts ...leafOpt) Identity {
	k := rsaKey(t)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(serial),
		Subject:        pkix.Name{CommonName: addr},
		EmailAddresses: []string{addr},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		SubjectKeyId:   append([]byte("ski-"), big.NewInt(serial).Bytes()...),
	}
	for _, o := range opts {
		o(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca.Cert, &k.PublicKey, p.ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return Identity{Cert: c, Key: k}
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(t testing.TB, id Identity) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(id.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func writeFile(t testing.TB, dir, name string, b []byte) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func needOpenSSL(t testing.TB) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed: interop test skipped")
	}
}

func openssl(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, errb.String())
	}
	return out.Bytes()
}

const testMsg = "From: Alice <alice@org.test>\r\n" +
	"To: bob@ext.test\r\n" +
	"Subject: Quarterly numbers\r\n" +
	"Message-ID: <1@org.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Hello Bob,\r\n\r\nthe numbers are fine. Gr=C3=BC=C3=9Fe\r\n"
