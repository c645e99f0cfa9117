package smime

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// IdentityConfig is one [[plugin.config.identity]]: a certificate with
// its key, for some senders and/or whole domains (a gateway certificate).
type IdentityConfig struct {
	// Cert is a PEM file: the certificate, then its intermediates. Key is
	// the PEM private key (PKCS #8, PKCS #1 or SEC 1); it may also be in
	// Cert.
	Cert string `json:"cert"`
	Key  string `json:"key"`
	// PKCS12 is a .p12/.pfx file instead of Cert and Key (modern or
	// legacy encryption), with its password
	// in Password or the first line of PasswordFile.
	PKCS12       string `json:"pkcs12"`
	Password     string `json:"password"`
	PasswordFile string `json:"password_file"`
	// Addresses the identity signs for and decrypts to; default: the
	// addresses in the certificate.
	Addresses []string `json:"addresses"`
	// Domains makes it the gateway identity of whole domains.
	Domains []string `json:"domains"`
	// KeyTransport is how the sender's own copy is wrapped for this (RSA)
	// identity: "auto" (the default: RSAES-OAEP when the holder's
	// capabilities announce it — the store has this certificate,
	// harvested from a mail its holder signed, with rsa-oaep — else
	// PKCS #1 v1.5), "oaep" or "pkcs1v15".
	KeyTransport string `json:"key_transport"`
}

// OrgIdentity is a loaded organisation identity.
type OrgIdentity struct {
	Identity
	Addresses []string
	Domains   []string
	// KeyTransport: "auto", "oaep" or "pkcs1v15" (IdentityConfig).
	KeyTransport string
}

func parseKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS #8, PKCS #1 or SEC 1 private key")
}

// ParsePEMCerts returns the certificates in PEM (or one DER certificate).
func ParsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	if !bytes.Contains(b, []byte("-----BEGIN")) {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, err
		}
		return []*x509.Certificate{c}, nil
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate found")
	}
	return out, nil
}

func pemKey(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, nil
		}
		if strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			if strings.Contains(blk.Type, "ENCRYPTED") {
				return nil, errors.New("encrypted PEM keys are not supported; use PKCS#12 or an unencrypted key with tight permissions")
			}
			return parseKey(blk.Bytes)
		}
	}
}

// LoadIdentity loads one configured identity; relative paths are taken
// from dir.
func LoadIdentity(c IdentityConfig, dir string) (*OrgIdentity, error) {
	switch c.KeyTransport {
	case "":
		c.KeyTransport = "auto"
	case "auto", "oaep", "pkcs1v15":
	default:
		return nil, fmt.Errorf("key_transport %q: want auto, oaep or pkcs1v15", c.KeyTransport)
	}
	var certs []*x509.Certificate
	var key crypto.Signer
	switch {
	case c.PKCS12 != "":
		if c.Cert != "" || c.Key != "" {
			return nil, errors.New("give either pkcs12 or cert and key")
		}
		data, err := os.ReadFile(resolve(dir, c.PKCS12))
		if err != nil {
			return nil, err
		}
		pw := c.Password
		if c.PasswordFile != "" {
			b, err := os.ReadFile(resolve(dir, c.PasswordFile))
			if err != nil {
				return nil, err
			}
			pw, _, _ = strings.Cut(string(b), "\n")
			pw = strings.TrimRight(pw, "\r")
		}
		// Modern (AES-256, PBKDF2: OpenSSL 3's default) and legacy
		// (3DES/RC2) encrypted files alike.
		k, cert, chain, err := pkcs12.DecodeChain(data, pw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.PKCS12, err)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: unsupported private key type %T", c.PKCS12, k)
		}
		key = signer
		certs = append([]*x509.Certificate{cert}, chain...)
	case c.Cert != "":
		data, err := os.ReadFile(resolve(dir, c.Cert))
		if err != nil {
			return nil, err
		}
		if certs, err = ParsePEMCerts(data); err != nil {
			return nil, fmt.Errorf("%s: %w", c.Cert, err)
		}
		key, err = pemKey(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Cert, err)
		}
		if c.Key != "" {
			kd, err := os.ReadFile(resolve(dir, c.Key))
			if err != nil {
				return nil, err
			}
			if key, err = pemKey(kd); err != nil {
				return nil, fmt.Errorf("%s: %w", c.Key, err)
			}
		}
	default:
		return nil, errors.New("cert (PEM) or pkcs12 is required")
	}
	if key == nil {
		return nil, errors.New("no private key found")
	}
	id := &OrgIdentity{Domains: lower(c.Domains), Addresses: lower(c.Addresses), KeyTransport: c.KeyTransport}
	for _, cert := range certs {
		if pubEqual(cert.PublicKey, key.Public()) && id.Cert == nil {
			id.Cert = cert
		} else {
			id.Chain = append(id.Chain, cert)
		}
	}
	if id.Cert == nil {
		return nil, errors.New("no certificate matches the private key")
	}
	id.Key = key
	if len(id.Addresses) == 0 && len(id.Domains) == 0 {
		id.Addresses = CertAddresses(id.Cert)
		if len(id.Addresses) == 0 {
			return nil, errors.New("the certificate names no mail address: set addresses or domains")
		}
	}
	return id, nil
}

func pubEqual(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(eq)
	return ok && e.Equal(b)
}

func lower(s []string) []string {
	var out []string
	for _, x := range s {
		out = append(out, strings.ToLower(strings.TrimSpace(x)))
	}
	return out
}

// identities is the organisation's identities with lookups.
type identities struct {
	all []*OrgIdentity
}

// forAddress returns the identities for addr: those naming the address,
// else those of its domain; valid at now come first, the one that
// expires last first among them.
func (ids *identities) forAddress(addr string, now time.Time) []*OrgIdentity {
	addr = strings.ToLower(addr)
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	var exact, dom []*OrgIdentity
	for _, id := range ids.all {
		for _, a := range id.Addresses {
			if a == addr {
				exact = append(exact, id)
			}
		}
		for _, d := range id.Domains {
			if d == domain {
				dom = append(dom, id)
			}
		}
	}
	if len(exact) == 0 {
		exact = dom
	}
	return exact
}

// signer is the identity that signs for addr at now: valid, and of those
// the one that started last (a rotated-in certificate takes over at its
// NotBefore).
func (ids *identities) signer(addr string, now time.Time) *OrgIdentity {
	var best *OrgIdentity
	for _, id := range ids.forAddress(addr, now) {
		if now.Before(id.Cert.NotBefore) || now.After(id.Cert.NotAfter) {
			continue
		}
		if best == nil || id.Cert.NotBefore.After(best.Cert.NotBefore) {
			best = id
		}
	}
	return best
}

// decryptors returns every identity (all may decrypt, including expired
// ones: old mail stays readable).
func (ids *identities) decryptors() []Identity {
	var out []Identity
	for _, id := range ids.all {
		out = append(out, id.Identity)
	}
	return out
}

func certPEMBytes(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
