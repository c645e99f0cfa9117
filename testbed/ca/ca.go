// Package ca is a local certificate authority for tests and demos: it makes
// a root CA (optionally intermediates below it) and issues leaf certificates
// for DNS names, IP addresses and e-mail addresses, including deliberately
// broken ones (expired, not yet valid) and self-signed ones.
//
// Certificates follow RFC 5280 (X.509 profile: basic constraints, key usage,
// subject alternative names). Intermediates make chains for DANE-TA tests
// (RFC 7671 usage 2, RFC 7672). Keys are ECDSA P-256 unless RSA is asked for.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
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
	"strings"
	"time"
)

// CA is a certificate authority: a root made by New, or an intermediate
// made by Intermediate. It is safe for concurrent use.
type CA struct {
	name  string
	cert  *x509.Certificate
	key   crypto.Signer
	chain [][]byte // DER of this CA and its parents, excluding the root
	root  *CA
}

// New makes a root CA with common name name (ECDSA P-256, valid from an
// hour ago for ten years).
func New(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Posthorn testbed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &CA{name: name, cert: cert, key: key}
	c.root = c
	return c, nil
}

// Intermediate makes an intermediate CA signed by c. Leaves it issues carry
// the chain up to (not including) the root.
func (c *CA) Intermediate(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Posthorn testbed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(5, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	chain := append([][]byte{der}, c.chain...)
	return &CA{name: name, cert: cert, key: key, chain: chain, root: c.root}, nil
}

// Name returns the CA's common name.
func (c *CA) Name() string { return c.name }

// Certificate returns this CA's own certificate (for an intermediate, the
// intermediate's; e.g. for a DANE-TA TLSA record).
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Root returns the root of this CA's hierarchy (c itself for a root).
func (c *CA) Root() *CA { return c.root }

// CertPEM returns this CA's own certificate in PEM.
func (c *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
}

// Pool returns a pool holding the trust anchor: the root certificate of
// this CA's hierarchy. Leaves from intermediates verify against it because
// they carry their chain.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.root.cert)
	return p
}

// WriteCAFile writes the root certificate (the trust anchor) in PEM to
// dir/NAME.pem, NAME being the root's name made file-safe, and returns the
// path.
func (c *CA) WriteCAFile(dir string) (string, error) {
	p := filepath.Join(dir, fileSafe(c.root.name)+".pem")
	return p, os.WriteFile(p, c.root.CertPEM(), 0o644)
}

// LeafOptions tune Issue. The zero value is what Issue uses.
type LeafOptions struct {
	// NotBefore and NotAfter set the validity; zero means now-1h and
	// now+30d.
	NotBefore, NotAfter time.Time
	// Expired makes the certificate valid from 60 days ago to 1 day ago.
	Expired bool
	// NotYetValid makes it valid from tomorrow for 30 days.
	NotYetValid bool
	// RSA makes an RSA key (RSABits, default 2048) instead of ECDSA P-256.
	RSA     bool
	RSABits int
	// CommonName defaults to the first name.
	CommonName string
}

// Issue issues a leaf certificate for names, each a DNS name (wildcards
// allowed), an IP address, or an e-mail address (contains "@"), with an
// ECDSA P-256 key, valid from an hour ago for 30 days. The result's
// Certificate holds the leaf followed by the intermediates (not the root);
// Leaf is set.
func (c *CA) Issue(names ...string) (tls.Certificate, error) {
	return c.IssueWith(LeafOptions{}, names...)
}

// IssueWith is Issue with options.
func (c *CA) IssueWith(o LeafOptions, names ...string) (tls.Certificate, error) {
	return issue(c, o, names)
}

// SelfSigned makes a self-signed leaf certificate for names (ECDSA P-256,
// valid from an hour ago for 30 days).
func SelfSigned(names ...string) (tls.Certificate, error) {
	return issue(nil, LeafOptions{}, names)
}

// SelfSignedWith is SelfSigned with options.
func SelfSignedWith(o LeafOptions, names ...string) (tls.Certificate, error) {
	return issue(nil, o, names)
}

func issue(c *CA, o LeafOptions, names []string) (tls.Certificate, error) {
	if len(names) == 0 && o.CommonName == "" {
		return tls.Certificate{}, errors.New("ca: no names to issue for")
	}
	var key crypto.Signer
	var err error
	ku := x509.KeyUsageDigitalSignature
	if o.RSA {
		bits := o.RSABits
		if bits == 0 {
			bits = 2048
		}
		key, err = rsa.GenerateKey(rand.Reader, bits)
		ku |= x509.KeyUsageKeyEncipherment
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	nb, na := now.Add(-time.Hour), now.AddDate(0, 0, 30)
	switch {
	case o.Expired:
		nb, na = now.AddDate(0, 0, -60), now.AddDate(0, 0, -1)
	case o.NotYetValid:
		nb, na = now.AddDate(0, 0, 1), now.AddDate(0, 0, 31)
	}
	if !o.NotBefore.IsZero() {
		nb = o.NotBefore
	}
	if !o.NotAfter.IsZero() {
		na = o.NotAfter
	}
	cn := o.CommonName
	if cn == "" {
		cn = names[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Posthorn testbed"}},
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              ku,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		switch {
		case net.ParseIP(n) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(n))
		case strings.Contains(n, "@"):
			tmpl.EmailAddresses = append(tmpl.EmailAddresses, n)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, strings.TrimSuffix(n, "."))
		}
	}
	if len(tmpl.EmailAddresses) > 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageEmailProtection)
	}
	parent, signer := tmpl, key
	var chain [][]byte
	if c != nil {
		parent, signer = c.cert, c.key
		chain = c.chain
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: issue %v: %w", names, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{
		Certificate: append([][]byte{der}, chain...),
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// WriteKeyPair writes cert (chain included) and its private key in PEM to
// dir/NAME.crt and dir/NAME.key, for configurations that want files.
func WriteKeyPair(dir, name string, cert tls.Certificate) (certFile, keyFile string, err error) {
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return "", "", err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certFile = filepath.Join(dir, fileSafe(name)+".crt")
	keyFile = filepath.Join(dir, fileSafe(name)+".key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

func fileSafe(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "ca"
	}
	return b.String()
}
