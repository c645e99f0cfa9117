package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/miekg/dns"
)

// Key is a signing key published at Selector._domainkey.Domain.
type Key struct {
	Domain   string        // the signing domain (d=)
	Selector string        // the selector (s=)
	Signer   crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
}

// RecordName returns the DNS name where the key's public part is
// published: SELECTOR._domainkey.DOMAIN (RFC 6376 section 3.6.2.1).
func (k *Key) RecordName() string { return RecordName(k.Selector, k.Domain) }

// Algorithm returns "rsa" or "ed25519".
func (k *Key) Algorithm() string { return algorithm(k.Signer) }

// RecordName returns SELECTOR._domainkey.DOMAIN, without a trailing dot.
func RecordName(selector, domain string) string {
	return selector + "._domainkey." + strings.TrimSuffix(domain, ".")
}

// minRSABits is the smallest RSA key accepted (RFC 8301 section 3.2:
// signers MUST use at least 1024 bits, SHOULD use 2048).
const minRSABits = 1024

// LoadKey reads a PEM private key for domain and selector from path:
// PKCS#8 ("PRIVATE KEY": RSA or Ed25519) or PKCS#1 ("RSA PRIVATE KEY").
// Errors name the file.
func LoadKey(domain, selector, path string) (*Key, error) {
	if err := checkName(domain, "domain"); err != nil {
		return nil, fmt.Errorf("dkim: key file %s: %v", path, err)
	}
	if err := checkSelector(selector); err != nil {
		return nil, fmt.Errorf("dkim: key file %s: %v", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim: key file: %w", err)
	}
	signer, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("dkim: key file %s: %v", path, err)
	}
	return &Key{Domain: strings.ToLower(strings.TrimSuffix(domain, ".")), Selector: selector, Signer: signer}, nil
}

// ParseKey parses a PEM private key as LoadKey does.
func ParseKey(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		if len(strings.TrimSpace(string(data))) == 0 {
			return nil, errors.New("empty file, expected a PEM private key")
		}
		return nil, errors.New("no PEM block found, expected a PEM private key (PKCS#8 or PKCS#1)")
	}
	for {
		b, r := pem.Decode(rest)
		if b == nil {
			break
		}
		if strings.Contains(b.Type, "PRIVATE KEY") {
			return nil, errors.New("more than one private key in the file")
		}
		rest = r
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("broken PKCS#8 private key: %v", err)
		}
	case "RSA PRIVATE KEY":
		if block.Headers["Proc-Type"] != "" {
			return nil, errors.New("encrypted PEM keys are not supported; store the key unencrypted with mode 0600")
		}
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("broken PKCS#1 RSA private key: %v", err)
		}
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("encrypted PKCS#8 keys are not supported; store the key unencrypted with mode 0600")
	case "EC PRIVATE KEY":
		return nil, errors.New("ECDSA keys cannot sign DKIM (RFC 6376 and RFC 8463 allow RSA and Ed25519)")
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key (want PRIVATE KEY or RSA PRIVATE KEY)", block.Type)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key has %d bits, at least %d are required (RFC 8301)", k.N.BitLen(), minRSABits)
		}
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("invalid RSA key: %v", err)
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	case *ed25519.PrivateKey:
		return *k, nil
	default:
		return nil, fmt.Errorf("%T keys cannot sign DKIM (want RSA or Ed25519)", key)
	}
}

// Generate makes a new key, alg "rsa" (2048 bits) or "ed25519", and
// returns it with its PKCS#8 PEM encoding.
func Generate(alg string) (crypto.Signer, []byte, error) {
	var key crypto.Signer
	var err error
	switch strings.ToLower(alg) {
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, nil, fmt.Errorf("dkim: unknown key algorithm %q (want rsa or ed25519)", alg)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("dkim: generating key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("dkim: encoding key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// DNSRecord returns the TXT record value publishing k's public key:
// "v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>" (RFC 6376 section
// 3.6.1) or "v=DKIM1; k=ed25519; p=<base64 raw key>" (RFC 8463 section
// 4.2). An RSA value is longer than 255 bytes: publish it as several
// character strings of one TXT record (see TXTStrings).
func DNSRecord(k crypto.Signer) (string, error) {
	if k == nil {
		return "", errors.New("dkim: no key")
	}
	switch pub := k.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", fmt.Errorf("dkim: %w", err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	default:
		return "", fmt.Errorf("dkim: unsupported key type %T", pub)
	}
}

// TXTStrings splits a TXT value into character strings of at most 255
// bytes (RFC 1035 section 3.3.14), as a zone file or DNS API needs them.
func TXTStrings(value string) []string {
	var out []string
	for len(value) > 255 {
		out = append(out, value[:255])
		value = value[255:]
	}
	return append(out, value)
}

func algorithm(s crypto.Signer) string {
	if s == nil {
		return ""
	}
	switch s.Public().(type) {
	case *rsa.PublicKey:
		return "rsa"
	case ed25519.PublicKey:
		return "ed25519"
	}
	return ""
}

func checkName(name, what string) error {
	if name == "" {
		return fmt.Errorf("empty %s", what)
	}
	if _, ok := dns.IsDomainName(name); !ok || !strings.Contains(strings.Trim(name, "."), ".") && what == "domain" {
		return fmt.Errorf("invalid %s %q", what, name)
	}
	return nil
}

// checkSelector: a selector is one or more DNS labels (RFC 6376 section
// 3.1), e.g. "mail" or "2024.eu".
func checkSelector(s string) error {
	if s == "" {
		return errors.New("empty selector")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("invalid selector %q", s)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("invalid selector %q", s)
			}
		}
	}
	return nil
}
