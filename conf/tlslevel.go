package conf

import (
	"fmt"
	"strings"
)

// TLSLevel is an outbound TLS security level, with Postfix's names and
// meanings (postfix.org/TLS_README.html, "Client-side security levels").
// It is parsed once, when the config is loaded: an unknown name is a
// config error with its file, line and key, and code that delivers mail
// only ever sees the typed value.
//
// Levels are ordered from TLSNone (weakest) to TLSSecure (strictest);
// compare them with Stronger and AtLeast, never with < or >. The zero
// value, TLSUnset, is not a level: in the config it means "not given"
// (a transport that leaves the level to the policy map), and anything
// that receives it where a level is needed must refuse to deliver. So
// that no code path can turn it into plaintext, TLSUnset ranks above
// every real level in Stronger and AtLeast, and RequiresTLS is true for
// it.
type TLSLevel uint8

// The TLS levels. Their numeric order is the order of strictness, with
// TLSUnset (the zero value) outside it.
const (
	TLSUnset       TLSLevel = iota // not a level: not set
	TLSNone                        // no TLS at all
	TLSMay                         // opportunistic: STARTTLS if offered, else plaintext
	TLSDane                        // DANE if usable TLSA records, else may
	TLSEncrypt                     // TLS required, unauthenticated
	TLSDaneOnly                    // TLS required, authenticated by DANE TLSA
	TLSFingerprint                 // TLS required, certificate or key pinned
	TLSVerify                      // TLS required, PKIX-valid for the MX host name
	TLSSecure                      // TLS required, PKIX-valid for the destination domain
)

// tlsLevelNames in the order error messages list them (Postfix's).
var tlsLevelNames = []struct {
	l    TLSLevel
	name string
}{
	{TLSNone, "none"}, {TLSMay, "may"}, {TLSEncrypt, "encrypt"}, {TLSDane, "dane"}, {TLSDaneOnly, "dane-only"},
	{TLSFingerprint, "fingerprint"}, {TLSVerify, "verify"}, {TLSSecure, "secure"},
}

// TLSLevels are the names of the outbound TLS security levels.
var TLSLevels = func() []string {
	out := make([]string, len(tlsLevelNames))
	for i, n := range tlsLevelNames {
		out[i] = n.name
	}
	return out
}()

// ParseTLSLevel turns a level's name into a TLSLevel. Only the config
// loader should need it.
func ParseTLSLevel(s string) (TLSLevel, error) {
	for _, n := range tlsLevelNames {
		if n.name == s {
			return n.l, nil
		}
	}
	return TLSUnset, fmt.Errorf("unknown TLS level %q (use one of %s)", s, strings.Join(TLSLevels, ", "))
}

// String returns the level's name; TLSUnset is "unset".
func (l TLSLevel) String() string {
	for _, n := range tlsLevelNames {
		if n.l == l {
			return n.name
		}
	}
	if l == TLSUnset {
		return "unset"
	}
	return fmt.Sprintf("invalid(%d)", uint8(l))
}

// Valid reports whether l is one of the eight levels (not TLSUnset, not
// out of range).
func (l TLSLevel) Valid() bool { return l >= TLSNone && l <= TLSSecure }

// rank orders levels for Stronger and AtLeast: anything that is not a
// valid level ranks above TLSSecure, so it can never be outranked by a
// weaker one.
func (l TLSLevel) rank() int {
	if !l.Valid() {
		return int(TLSSecure) + 1
	}
	return int(l)
}

// Stronger reports whether l is strictly stricter than o.
func (l TLSLevel) Stronger(o TLSLevel) bool { return l.rank() > o.rank() }

// AtLeast reports whether l is at least as strict as o.
func (l TLSLevel) AtLeast(o TLSLevel) bool { return l.rank() >= o.rank() }

// RequiresTLS reports whether the level never sends in plaintext: every
// level but none, may and dane (which acts as may without usable TLSA
// records). It is true for an invalid or unset level.
func (l TLSLevel) RequiresTLS() bool { return l != TLSNone && l != TLSMay && l != TLSDane }

// MarshalText writes the level's name ("" for TLSUnset), so that a
// config prints back as it was written.
func (l TLSLevel) MarshalText() ([]byte, error) {
	if l == TLSUnset {
		return nil, nil
	}
	if !l.Valid() {
		return nil, fmt.Errorf("invalid TLS level %d", uint8(l))
	}
	return []byte(l.String()), nil
}

// UnmarshalText parses a level's name; anything else, the empty string
// included, is an error.
func (l *TLSLevel) UnmarshalText(b []byte) error {
	v, err := ParseTLSLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
