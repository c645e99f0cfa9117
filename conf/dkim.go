package conf

import (
	"fmt"
	"strings"
)

// DKIM configures signing of outgoing mail (RFC 6376, RFC 8463). A domain
// with several keys (say RSA and Ed25519) is signed with each. Mail from
// a domain without a key (nor a parent domain with one) goes unsigned.
type DKIM struct {
	Keys []DKIMKey `toml:"key"`
}

// DKIMKey is one signing key, published in DNS at
// SELECTOR._domainkey.DOMAIN.
type DKIMKey struct {
	// Domain is the signing domain (d=), lower-cased by Parse.
	Domain string `toml:"domain"`
	// Selector (s=): one or more labels of letters, digits, "-" and "_".
	Selector string `toml:"selector"`
	// File is the PEM private key (PKCS#8 RSA or Ed25519, or PKCS#1
	// RSA), absolute after Load. `posthorn dkim` makes one.
	File string `toml:"file"`
}

// AuthRes configures the sender authentication checks (SPF, DKIM, DMARC)
// of mail arriving on the MX listener, recorded in an
// Authentication-Results header (RFC 8601).
type AuthRes struct {
	// Enabled runs the checks on the MX listener (never on submission).
	Enabled bool `toml:"enabled"`
	// DMARCEnforce refuses, at the end of DATA with 550 5.7.1, mail that
	// fails DMARC where the From domain's policy is p=reject. Off, the
	// result is only recorded.
	DMARCEnforce bool `toml:"dmarc_enforce"`
	// Timeout bounds all lookups for one message.
	Timeout Duration `toml:"timeout"`
}

func (v *validator) dkim(c *Config) {
	seen := map[string]bool{}
	for i := range c.DKIM.Keys {
		k := &c.DKIM.Keys[i]
		key := indexKey("dkim.key", i)
		k.Domain = strings.ToLower(strings.TrimSuffix(k.Domain, "."))
		domainOK := true
		if k.Domain == "" {
			v.errorf(key+".domain", "must not be empty")
			domainOK = false
		} else if err := checkDomainName(k.Domain); err != nil {
			v.errorf(key+".domain", "%v", err)
			domainOK = false
		}
		selectorOK := true
		if err := checkSelector(k.Selector); err != nil {
			v.errorf(key+".selector", "%v", err)
			selectorOK = false
		}
		if k.File == "" {
			v.errorf(key+".file", "must name the PEM private key file")
		}
		if domainOK && selectorOK {
			id := k.Selector + "._domainkey." + k.Domain
			if seen[strings.ToLower(id)] {
				v.errorf(key+".selector", "%s is configured twice", id)
			}
			seen[strings.ToLower(id)] = true
		}
	}
}

func (v *validator) authres(c *Config) {
	v.positive("authres.timeout", c.AuthRes.Timeout)
}

// checkSelector checks a DKIM selector (RFC 6376 section 3.1: one or more
// DNS labels, e.g. "mail" or "2026.eu").
func checkSelector(s string) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("invalid selector %q", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("invalid selector %q: %q is not allowed", s, string(rune(c)))
			}
		}
	}
	return nil
}
