// Package tlsutil loads the server certificate (PEM files), or makes and
// keeps a self-signed one on first start so the default config offers
// STARTTLS (RFC 3207) with no setup. It also builds the server tls.Config:
// TLS 1.2 or newer, Go's default cipher suites.
package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Load returns the certificate from certFile/keyFile, or, when both are
// empty, the self-signed certificate kept in selfSignedDir (made on first
// use for hostname).
func Load(certFile, keyFile, selfSignedDir, hostname string) (tls.Certificate, error) {
	if certFile != "" || keyFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return c, fmt.Errorf("tls: loading %s and %s: %w", certFile, keyFile, err)
		}
		return c, nil
	}
	if selfSignedDir == "" {
		return tls.Certificate{}, errors.New("tls: no certificate configured and no self_signed_dir")
	}
	cf := filepath.Join(selfSignedDir, "selfsigned.crt")
	kf := filepath.Join(selfSignedDir, "selfsigned.key")
	if c, err := tls.LoadX509KeyPair(cf, kf); err == nil {
		if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil && time.Now().Before(leaf.NotAfter.Add(-24*time.Hour)) {
			return c, nil
		}
	}
	certPEM, keyPEM, err := SelfSigned(hostname, 365*24*time.Hour)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(selfSignedDir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(kf, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(cf, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// SelfSigned makes a P-256 self-signed certificate for hostname.
func SelfSigned(hostname string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hostname, Organization: []string{"Posthorn self-signed"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(hostname); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{hostname}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// ServerConfig is the tls.Config for our listeners.
func ServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}
}
