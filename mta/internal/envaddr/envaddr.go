// Package envaddr checks envelope addresses (the paths of MAIL FROM and
// RCPT TO) and formats them for the wire as RFC 5321 §4.1.2 asks: the
// local part as a Dot-string when it is one and as a Quoted-string
// otherwise, so that an address whose local part holds spaces, '>' or
// "AUTH=" is written as one path and never as extra ESMTP parameters.
//
// The server keeps addresses unquoted (as go-smtp parses them); Check
// refuses at MAIL and RCPT every address that Format could not write
// back: control characters, non-ASCII without SMTPUTF8 (RFC 6531), an
// empty local part, and a domain that is neither a host name nor an
// address literal.
package envaddr

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest address accepted (64 + 1 + 255, RFC 5321 §4.5.3.1).
const MaxLen = 320

var (
	// ErrSyntax: the address cannot be represented on the wire.
	ErrSyntax = errors.New("envaddr: address cannot be represented in SMTP")
	// ErrNeedUTF8: the address is non-ASCII and SMTPUTF8 was not given.
	ErrNeedUTF8 = errors.New("envaddr: non-ASCII address without SMTPUTF8")
)

// Check reports whether addr (unquoted, as parsed from a path; "" is the
// null reverse-path) can be passed on. utf8 is whether the transaction
// has SMTPUTF8.
func Check(addr string, utf8OK bool) error {
	if addr == "" {
		return nil
	}
	if len(addr) > MaxLen || !utf8.ValidString(addr) {
		return ErrSyntax
	}
	nonASCII := false
	for _, r := range addr {
		if r < 0x20 || r == 0x7f {
			return ErrSyntax
		}
		if r > 0x7f {
			nonASCII = true
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return ErrSyntax
	}
	if !validDomain(addr[at+1:]) {
		return ErrSyntax
	}
	if nonASCII && !utf8OK {
		return ErrNeedUTF8
	}
	return nil
}

// Format returns addr as it goes between "<" and ">" in MAIL FROM or RCPT
// TO. It fails for addresses Check refuses (SMTPUTF8 aside: non-ASCII is
// written as it is).
func Format(addr string) (string, error) {
	if addr == "" {
		return "", nil
	}
	if err := Check(addr, true); err != nil {
		return "", err
	}
	at := strings.LastIndexByte(addr, '@')
	local, domain := addr[:at], addr[at+1:]
	if isDotString(local) {
		return addr, nil
	}
	var b strings.Builder
	b.Grow(len(addr) + 4)
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteString(`"@`)
	b.WriteString(domain)
	return b.String(), nil
}

// isDotString: Atom *("." Atom), atext as RFC 5321 with RFC 6531's
// UTF8-non-ascii.
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80, c == '.':
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validDomain: a host name (labels of letters, digits, '-', '_' or
// non-ASCII, separated by single dots, one trailing dot allowed) or an
// address literal "[...]" of RFC 5321 dcontent.
func validDomain(d string) bool {
	if d == "" || len(d) > 255 {
		return false
	}
	if d[0] == '[' {
		if len(d) < 3 || d[len(d)-1] != ']' {
			return false
		}
		for i := 1; i < len(d)-1; i++ {
			c := d[i]
			if c < 33 || c > 126 || c == '[' || c == ']' || c == '\\' {
				return false
			}
		}
		return true
	}
	d = strings.TrimSuffix(d, ".")
	for _, label := range strings.Split(d, ".") {
		if label == "" {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 0x80:
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			default:
				return false
			}
		}
	}
	return true
}
