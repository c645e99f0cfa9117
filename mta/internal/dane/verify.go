package dane

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Certificate usages (RFC 6698 section 2.1.1, names from RFC 7218).
const (
	PKIXTA uint8 = 0 // unusable for SMTP (RFC 7672 section 3.1.3)
	PKIXEE uint8 = 1 // unusable for SMTP
	DANETA uint8 = 2
	DANEEE uint8 = 3
)

// Selectors (RFC 6698 section 2.1.2).
const (
	SelectorCert uint8 = 0 // the full certificate (DER)
	SelectorSPKI uint8 = 1 // the SubjectPublicKeyInfo (DER)
)

// Matching types (RFC 6698 section 2.1.3).
const (
	MatchFull   uint8 = 0
	MatchSHA256 uint8 = 1
	MatchSHA512 uint8 = 2
)

var (
	// ErrNoUsable: no TLSA record is usable for SMTP.
	ErrNoUsable = errors.New("dane: no usable TLSA records")
	// ErrNoMatch: usable records exist, but none matches the chain.
	ErrNoMatch = errors.New("dane: no TLSA record matches the certificate chain")
	// ErrNoChain: the server presented no certificate.
	ErrNoChain = errors.New("dane: no certificate presented")
)

// Usable returns the records of records that DANE for SMTP can use: usage
// DANE-TA(2) or DANE-EE(3), selector 0 or 1, matching type 0, 1 or 2,
// certificate association data that is valid hex of the right length (32
// bytes for SHA2-256, 64 for SHA2-512, not empty for Full). Nil records
// are skipped.
func Usable(records []*dns.TLSA) []*dns.TLSA {
	var out []*dns.TLSA
	for _, r := range records {
		if r == nil {
			continue
		}
		if r.Usage != DANETA && r.Usage != DANEEE {
			continue
		}
		if r.Selector != SelectorCert && r.Selector != SelectorSPKI {
			continue
		}
		data, err := hex.DecodeString(r.Certificate)
		if err != nil {
			continue
		}
		switch r.MatchingType {
		case MatchFull:
			if len(data) == 0 {
				continue
			}
		case MatchSHA256:
			if len(data) != sha256.Size {
				continue
			}
		case MatchSHA512:
			if len(data) != sha512.Size {
				continue
			}
		default:
			continue
		}
		out = append(out, r)
	}
	return out
}

// agile applies digest algorithm agility (RFC 7671 section 9) to usable
// records: where a usage/selector pair has SHA2-512 records, its SHA2-256
// records are dropped. Full(0) records are never dropped.
func agile(records []*dns.TLSA) []*dns.TLSA {
	type us struct{ u, s uint8 }
	has512 := map[us]bool{}
	for _, r := range records {
		if r.MatchingType == MatchSHA512 {
			has512[us{r.Usage, r.Selector}] = true
		}
	}
	var out []*dns.TLSA
	for _, r := range records {
		if r.MatchingType == MatchSHA256 && has512[us{r.Usage, r.Selector}] {
			continue
		}
		out = append(out, r)
	}
	return out
}

// Matches reports whether the TLSA record r's selector, matching type and
// data match cert (the usage is not looked at).
func Matches(r *dns.TLSA, cert *x509.Certificate) bool {
	if r == nil || cert == nil {
		return false
	}
	var sel []byte
	switch r.Selector {
	case SelectorCert:
		sel = cert.Raw
	case SelectorSPKI:
		sel = cert.RawSubjectPublicKeyInfo
	default:
		return false
	}
	want, err := hex.DecodeString(r.Certificate)
	if err != nil || len(want) == 0 {
		return false
	}
	switch r.MatchingType {
	case MatchFull:
		return bytes.Equal(sel, want)
	case MatchSHA256:
		h := sha256.Sum256(sel)
		return bytes.Equal(h[:], want)
	case MatchSHA512:
		h := sha512.Sum512(sel)
		return bytes.Equal(h[:], want)
	}
	return false
}

// Verify checks the certificate chain a server presented (leaf first)
// against TLSA records, as RFC 7672 section 3 describes, at the current
// time. names are the reference identifiers for DANE-TA: the TLSA base
// domain and the MX host name (RFC 7672 section 3.2.2), with or without a
// trailing dot. Unusable records are ignored.
//
// DANE-EE(3) records are tried first: a match with the leaf authenticates
// the server, whatever names and dates the certificate carries. Then
// DANE-TA(2): a match with a certificate of the chain after the leaf makes
// it the trust anchor, and the leaf must validate up to it (PKIX: dates,
// signatures, CA constraints) and match one of names.
//
// ok reports success; usedUsage is the usage of the record that
// authenticated the server (2 or 3). err explains a failure: ErrNoUsable,
// ErrNoChain, ErrNoMatch, or a wrapped validation or name error from the
// best DANE-TA candidate.
func Verify(records []*dns.TLSA, chain []*x509.Certificate, names []string) (ok bool, usedUsage uint8, err error) {
	return verifyAt(records, chain, names, time.Now())
}

func verifyAt(records []*dns.TLSA, chain []*x509.Certificate, names []string, now time.Time) (bool, uint8, error) {
	usable := agile(Usable(records))
	if len(usable) == 0 {
		return false, 0, ErrNoUsable
	}
	if len(chain) == 0 || chain[0] == nil {
		return false, 0, ErrNoChain
	}
	leaf := chain[0]
	for _, r := range usable {
		if r.Usage == DANEEE && Matches(r, leaf) {
			return true, DANEEE, nil
		}
	}
	var taErr error
	for _, r := range usable {
		if r.Usage != DANETA {
			continue
		}
		for i, ta := range chain[1:] {
			if ta == nil || !Matches(r, ta) {
				continue
			}
			if err := verifyTA(leaf, chain[1:], i, names, now); err != nil {
				taErr = err
				continue
			}
			return true, DANETA, nil
		}
	}
	if taErr != nil {
		return false, 0, taErr
	}
	return false, 0, ErrNoMatch
}

// verifyTA validates leaf up to inter[ta] as the trust anchor, with the
// other presented certificates as intermediates, and checks names.
func verifyTA(leaf *x509.Certificate, inter []*x509.Certificate, ta int, names []string, now time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(inter[ta])
	pool := x509.NewCertPool()
	for i, c := range inter {
		if i != ta && c != nil {
			pool.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("dane: DANE-TA: certificate does not validate up to the trust anchor %q: %w", inter[ta].Subject.CommonName, err)
	}
	for _, n := range names {
		n = strings.TrimSuffix(n, ".")
		if n != "" && leaf.VerifyHostname(n) == nil {
			return nil
		}
	}
	return &NameError{Names: names, Cert: leaf}
}

// NameError: under DANE-TA the leaf matches none of the reference names.
type NameError struct {
	Names []string
	Cert  *x509.Certificate
}

func (e *NameError) Error() string {
	return fmt.Sprintf("dane: DANE-TA: certificate names %v match none of %v", e.Cert.DNSNames, e.Names)
}

// VerifyConnection returns a function for tls.Config.VerifyConnection that
// authenticates the server by records (see Verify). Use it with
// InsecureSkipVerify (PKIX is not what DANE checks) and ServerName set to
// the TLSA base domain (RFC 7672 section 8.1: SNI is the base domain).
// onOK, if not nil, is told the usage that authenticated the server.
func VerifyConnection(records []*dns.TLSA, names []string, onOK func(usage uint8)) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		ok, usage, err := Verify(records, cs.PeerCertificates, names)
		if !ok {
			return err
		}
		if onOK != nil {
			onOK(usage)
		}
		return nil
	}
}
