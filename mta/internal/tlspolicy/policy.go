// Package tlspolicy holds the outbound TLS security levels, with Postfix's
// names and meanings (postfix.org/TLS_README.html, "Client-side security
// levels"), the operator's per-destination policy map, and the rule that
// the strongest demand wins when several sources (policy map, DANE,
// MTA-STS, a secure alias, REQUIRETLS) ask for TLS.
package tlspolicy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/posthorn/posthorn/conf"
)

// Level is an outbound TLS security level: conf's type, parsed once when
// the config is loaded. Compare levels with Stronger/AtLeast; the zero
// value (conf.TLSUnset) is not a level and outranks every real one.
type Level = conf.TLSLevel

// The levels, weakest first.
const (
	None        = conf.TLSNone        // no TLS at all
	May         = conf.TLSMay         // opportunistic: STARTTLS if offered, else plaintext
	Dane        = conf.TLSDane        // DANE if usable TLSA records, else May
	Encrypt     = conf.TLSEncrypt     // TLS required, unauthenticated
	DaneOnly    = conf.TLSDaneOnly    // TLS required, authenticated by DANE TLSA
	Fingerprint = conf.TLSFingerprint // TLS required, certificate or key pinned
	Verify      = conf.TLSVerify      // TLS required, PKIX-valid for the MX host name
	Secure      = conf.TLSSecure      // TLS required, PKIX-valid for the destination domain
)

// Policy is what one delivery must satisfy.
type Policy struct {
	Level Level
	// Match lists accepted certificate names for Verify/Secure:
	// "hostname", "nexthop", "dot-nexthop" or literal names.
	Match []string
	// Fingerprints are SHA-256 digests of a certificate or its SPKI.
	Fingerprints [][]byte
	// Source says where the level came from (for logs and explain).
	Source string
}

// Stronger returns whichever of p and q demands more; on a tie p. A
// policy without a valid level outranks every other.
func Stronger(p, q Policy) Policy {
	if q.Level.Stronger(p.Level) {
		return q
	}
	return p
}

// Map is the operator's per-destination policy map plus the default.
type Map struct {
	def     Policy
	entries map[string]Policy // "example.org" exact, ".example.org" subdomains
}

// NewMap builds the map from config (validated by conf); a level that is
// not set is an error, never a default.
func NewMap(defaultLevel Level, entries []conf.TLSPolicy) (*Map, error) {
	if !defaultLevel.Valid() {
		return nil, fmt.Errorf("outbound.tls_level: no valid level (%v)", defaultLevel)
	}
	m := &Map{def: Policy{Level: defaultLevel, Source: "default (outbound.tls_level)"}, entries: map[string]Policy{}}
	for _, e := range entries {
		if !e.Level.Valid() {
			return nil, fmt.Errorf("tls_policy %s: no valid level (%v)", e.Domain, e.Level)
		}
		p := Policy{Level: e.Level, Match: e.Match, Source: "policy map entry " + e.Domain}
		for _, f := range e.Fingerprints {
			b, err := hex.DecodeString(strings.ReplaceAll(f, ":", ""))
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("tls_policy %s: bad fingerprint %q", e.Domain, f)
			}
			p.Fingerprints = append(p.Fingerprints, b)
		}
		m.entries[strings.ToLower(e.Domain)] = p
	}
	return m, nil
}

// Lookup returns the policy for a destination domain: an exact entry, else
// the nearest ".parent" entry, else the default.
func (m *Map) Lookup(domain string) Policy {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	if p, ok := m.entries[d]; ok {
		return p
	}
	for {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return m.def
		}
		d = d[i+1:]
		if p, ok := m.entries["."+d]; ok {
			return p
		}
	}
}

// MatchNames returns the names a certificate may carry under p for a
// delivery to nexthop via MX host mxHost, with Postfix's defaults:
// verify matches the MX host name, secure the next-hop domain and its
// subdomains. A name starting with "." matches any subdomain.
func (p Policy) MatchNames(nexthop, mxHost string) []string {
	match := p.Match
	if len(match) == 0 {
		if p.Level == Secure {
			match = []string{"nexthop", "dot-nexthop"}
		} else {
			match = []string{"hostname"}
		}
	}
	var out []string
	for _, m := range match {
		switch m {
		case "hostname":
			out = append(out, strings.TrimSuffix(strings.ToLower(mxHost), "."))
		case "nexthop":
			out = append(out, strings.ToLower(nexthop))
		case "dot-nexthop":
			out = append(out, "."+strings.ToLower(nexthop))
		default:
			out = append(out, strings.ToLower(m))
		}
	}
	return out
}

// CertMatchesName reports whether the leaf certificate is valid for one
// of names (a "."-prefixed name matches any subdomain).
func CertMatchesName(leaf *x509.Certificate, names []string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, ".") {
			for _, san := range leaf.DNSNames {
				s := strings.ToLower(san)
				if strings.HasSuffix(s, n) && !strings.HasPrefix(s, "*.") {
					return true
				}
				// A wildcard *.x.example matches names one level under x.example.
				if strings.HasPrefix(s, "*.") && strings.HasSuffix(s[1:], n) {
					return true
				}
			}
			continue
		}
		if leaf.VerifyHostname(n) == nil {
			return true
		}
	}
	return false
}

// FingerprintMatches reports whether the certificate's SHA-256, or that of
// its SubjectPublicKeyInfo, is one of want.
func FingerprintMatches(leaf *x509.Certificate, want [][]byte) bool {
	cert := sha256.Sum256(leaf.Raw)
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	for _, w := range want {
		if string(w) == string(cert[:]) || string(w) == string(spki[:]) {
			return true
		}
	}
	return false
}
