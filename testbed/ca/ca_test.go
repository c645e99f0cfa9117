package ca

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"
)

func verify(t *testing.T, c *CA, cert tls.Certificate, name string, at time.Time) error {
	t.Helper()
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(ic)
	}
	_, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: c.Pool(), Intermediates: inter, CurrentTime: at})
	return err
}

func TestIssue(t *testing.T) {
	c, err := New("Testbed Root")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Issue("mx.example.org", "127.0.0.1", "postmaster@example.org")
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.Certificate) != 1 {
		t.Fatalf("chain length %d", len(cert.Certificate))
	}
	if _, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Fatalf("key %T", cert.PrivateKey)
	}
	l := cert.Leaf
	if len(l.DNSNames) != 1 || len(l.IPAddresses) != 1 || len(l.EmailAddresses) != 1 {
		t.Fatalf("SANs %v %v %v", l.DNSNames, l.IPAddresses, l.EmailAddresses)
	}
	if time.Until(l.NotAfter) < 29*24*time.Hour || time.Since(l.NotBefore) < 59*time.Minute {
		t.Fatalf("validity %v..%v", l.NotBefore, l.NotAfter)
	}
	if err := verify(t, c, cert, "mx.example.org", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := verify(t, c, cert, "other.example.org", time.Now()); err == nil {
		t.Fatal("wrong name verified")
	}
	// Another CA does not verify it.
	c2, _ := New("Other")
	if err := verify(t, c2, cert, "mx.example.org", time.Now()); err == nil {
		t.Fatal("foreign CA verified")
	}
}

func TestOptions(t *testing.T) {
	c, _ := New("root")
	exp, err := c.IssueWith(LeafOptions{Expired: true}, "mx.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(t, c, exp, "mx.example.org", time.Now()); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired: %v", err)
	}
	nyv, _ := c.IssueWith(LeafOptions{NotYetValid: true}, "mx.example.org")
	if err := verify(t, c, nyv, "mx.example.org", time.Now()); err == nil {
		t.Fatal("not-yet-valid verified")
	}
	r, err := c.IssueWith(LeafOptions{RSA: true}, "mx.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := r.PrivateKey.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
		t.Fatalf("rsa key %T", r.PrivateKey)
	}
	if err := verify(t, c, r, "mx.example.org", time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestIntermediateAndTLS(t *testing.T) {
	root, _ := New("root")
	inter, err := root.Intermediate("inter")
	if err != nil {
		t.Fatal(err)
	}
	if inter.Root() != root || inter.Certificate().Subject.CommonName != "inter" {
		t.Fatal("hierarchy")
	}
	cert, err := inter.Issue("localhost")
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.Certificate) != 2 {
		t.Fatalf("chain length %d", len(cert.Certificate))
	}
	// A real TLS handshake that verifies the chain against the root pool.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: inter.Pool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(conn.ConnectionState().VerifiedChains[0]); n != 3 {
		t.Fatalf("verified chain length %d", n)
	}
	conn.Close()
}

func TestSelfSignedAndFiles(t *testing.T) {
	ss, err := SelfSigned("mx.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := ss.Leaf.CheckSignature(ss.Leaf.SignatureAlgorithm, ss.Leaf.RawTBSCertificate, ss.Leaf.Signature); err != nil {
		t.Fatal(err)
	}
	// Pinned as its own root, it verifies.
	pool := x509.NewCertPool()
	pool.AddCert(ss.Leaf)
	if _, err := ss.Leaf.Verify(x509.VerifyOptions{DNSName: "mx.example.org", Roots: pool}); err != nil {
		t.Fatal(err)
	}
	if ss.Leaf.IsCA {
		t.Fatal("self-signed leaf is a CA")
	}
	c, _ := New("My Root/CA")
	dir := t.TempDir()
	p, err := c.WriteCAFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	if b, _ := pem.Decode(data); b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("CA file %s", p)
	}
	if string(data) != string(c.CertPEM()) {
		t.Fatal("CA file differs from CertPEM")
	}
	leaf, _ := c.Issue("mx.example.org")
	cf, kf, err := WriteKeyPair(dir, "mx", leaf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(cf, kf); err != nil {
		t.Fatal(err)
	}
}
