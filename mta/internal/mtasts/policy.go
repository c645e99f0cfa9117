package mtasts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Mode is a policy's mode (RFC 8461 section 5).
type Mode string

const (
	// Enforce: deliver only to MX hosts that match the policy and present
	// a PKIX-valid certificate for their name over TLS.
	Enforce Mode = "enforce"
	// Testing: deliver as usual, report failures (TLS-RPT).
	Testing Mode = "testing"
	// None: the domain withdrew its policy.
	None Mode = "none"
)

// MaxMaxAge is the largest max_age allowed (RFC 8461 section 3.2: about
// one year).
const MaxMaxAge = 31557600

// Policy is a parsed MTA-STS policy (RFC 8461 section 3.2) plus where and
// when it was fetched.
type Policy struct {
	Version string        // always "STSv1"
	Mode    Mode          // enforce, testing or none
	MX      []string      // MX patterns, lower case, e.g. "mx.example.org", "*.example.net"
	MaxAge  time.Duration // how long the policy may be cached

	// Domain is the policy domain, ID the id of the TXT record the policy
	// was fetched under, FetchedAt when it was fetched (successfully) and
	// Text the policy file as served.
	Domain    string
	ID        string
	FetchedAt time.Time
	Text      string
}

// Expires returns when the cached policy expires: FetchedAt + MaxAge.
func (p *Policy) Expires() time.Time { return p.FetchedAt.Add(p.MaxAge) }

// Expired reports whether the policy has expired at now.
func (p *Policy) Expired(now time.Time) bool { return !now.Before(p.Expires()) }

// Age returns how long ago the policy was fetched.
func (p *Policy) Age() time.Duration { return time.Since(p.FetchedAt) }

// Strings returns the policy's fields one per line, in a canonical order
// ("version: STSv1", "mode: enforce", "mx: ...", "max_age: ..."), as
// TLS-RPT's policy-string wants them (RFC 8460 section 4.3).
func (p *Policy) Strings() []string {
	out := []string{"version: " + p.Version, "mode: " + string(p.Mode)}
	for _, m := range p.MX {
		out = append(out, "mx: "+m)
	}
	return append(out, "max_age: "+strconv.FormatInt(int64(p.MaxAge/time.Second), 10))
}

// Matches reports whether mxHost (any case, trailing dot or not) matches
// one of the policy's MX patterns (RFC 8461 section 4.1): a pattern
// "*.example.com" matches exactly one extra leftmost label
// ("mail.example.com", not "example.com" nor "a.b.example.com"); any
// other pattern matches only itself. The mode is not looked at.
func (p *Policy) Matches(mxHost string) bool {
	h := strings.ToLower(strings.TrimSuffix(mxHost, "."))
	if h == "" {
		return false
	}
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			label, tail, found := strings.Cut(h, ".")
			if found && label != "" && tail == rest {
				return true
			}
			continue
		}
		if h == pat {
			return true
		}
	}
	return false
}

// ParseError is a syntax or value error in a policy file or TXT record.
type ParseError struct {
	Line int // 1-based line of the policy file; 0 for TXT records
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("mtasts: policy line %d: %s", e.Line, e.Msg)
	}
	return "mtasts: " + e.Msg
}

// ParsePolicy parses a policy file (RFC 8461 section 3.2). Lines end in
// CRLF or LF. Each line is "key:" *WSP value, the key matching
// (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / "."), the value
// printable (VCHAR or UTF-8, inner spaces allowed). Empty lines are
// tolerated. As the RFC demands, unknown keys are ignored (after their
// syntax is checked), and a repeated key other than mx counts with its
// first occurrence only. version must be "STSv1"; mode "enforce",
// "testing" or "none"; max_age 1 to 10 digits, at most 31557600; mx
// patterns ("*." optional, then a domain name) are required unless the
// mode is none.
func ParsePolicy(text []byte) (*Policy, error) {
	if !utf8.Valid(text) {
		return nil, &ParseError{Msg: "policy is not valid UTF-8"}
	}
	p := &Policy{}
	seen := map[string]bool{}
	maxAgeSeen := false
	lines := strings.Split(string(text), "\n")
	for i, line := range lines {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		if strings.ContainsRune(line, '\r') {
			return nil, &ParseError{Line: n, Msg: "bare CR"}
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return nil, &ParseError{Line: n, Msg: "no \":\" in line"}
		}
		if !validKey(key) {
			return nil, &ParseError{Line: n, Msg: fmt.Sprintf("invalid key %q", truncate(key))}
		}
		val = strings.Trim(val, " \t")
		if !validValue(val) {
			return nil, &ParseError{Line: n, Msg: fmt.Sprintf("invalid value for %s", key)}
		}
		if key != "mx" && seen[key] {
			continue // RFC 8461 section 3.2: the first instance counts
		}
		seen[key] = true
		switch key {
		case "version":
			if val != "STSv1" {
				return nil, &ParseError{Line: n, Msg: fmt.Sprintf("unknown version %q", truncate(val))}
			}
			p.Version = val
		case "mode":
			switch Mode(val) {
			case Enforce, Testing, None:
				p.Mode = Mode(val)
			default:
				return nil, &ParseError{Line: n, Msg: fmt.Sprintf("unknown mode %q", truncate(val))}
			}
		case "max_age":
			if len(val) > 10 || strings.Trim(val, "0123456789") != "" {
				return nil, &ParseError{Line: n, Msg: fmt.Sprintf("max_age %q is not 1 to 10 digits", truncate(val))}
			}
			a, _ := strconv.ParseInt(val, 10, 64)
			if a > MaxMaxAge {
				return nil, &ParseError{Line: n, Msg: fmt.Sprintf("max_age %d is more than %d", a, MaxMaxAge)}
			}
			p.MaxAge = time.Duration(a) * time.Second
			maxAgeSeen = true
		case "mx":
			pat, err := mxPattern(val)
			if err != nil {
				return nil, &ParseError{Line: n, Msg: err.Error()}
			}
			p.MX = append(p.MX, pat)
		}
	}
	switch {
	case p.Version == "":
		return nil, &ParseError{Msg: "policy has no version"}
	case p.Mode == "":
		return nil, &ParseError{Msg: "policy has no mode"}
	case !maxAgeSeen:
		return nil, &ParseError{Msg: "policy has no max_age"}
	case len(p.MX) == 0 && p.Mode != None:
		return nil, &ParseError{Msg: "policy has no mx patterns"}
	}
	p.Text = string(text)
	return p, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// validKey: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
func validKey(k string) bool {
	if k == "" || len(k) > 32 || !isAlnum(k[0]) {
		return false
	}
	for i := 1; i < len(k); i++ {
		c := k[i]
		if !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validValue: sts-policy-vchar *(*WSP sts-policy-vchar), VCHAR or UTF-8
// beyond ASCII.
func validValue(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		switch {
		case r == ' ' || r == '\t':
		case r >= 0x21 && r <= 0x7e:
		case r >= 0x80 && r != utf8.RuneError:
		default:
			return false
		}
	}
	return true
}

// mxPattern checks and normalises an mx value: ["*."] Domain.
func mxPattern(v string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(v, "."))
	wild := strings.HasPrefix(d, "*.")
	if wild {
		d = d[2:]
	}
	if err := checkDomain(d); err != nil {
		return "", fmt.Errorf("bad mx pattern %q: %v", truncate(v), err)
	}
	if wild {
		if !strings.Contains(d, ".") {
			return "", fmt.Errorf("bad mx pattern %q: wildcard over a top-level domain", truncate(v))
		}
		return "*." + d, nil
	}
	return d, nil
}

// checkDomain checks a domain name in A-label form: LDH labels of 1 to 63
// characters, not starting or ending with "-", 253 characters at most, at
// least two labels.
func checkDomain(d string) error {
	if d == "" {
		return errors.New("empty domain")
	}
	if len(d) > 253 {
		return errors.New("domain too long")
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return errors.New("not a fully qualified domain")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("empty or too long label")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("label starts or ends with \"-\"")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !isAlnum(c) && c != '-' && c != '_' {
				return fmt.Errorf("character %q not allowed", c)
			}
		}
	}
	return nil
}

// ParseTXT picks the MTA-STS record among the TXT records at
// _mta-sts.DOMAIN and returns its id (RFC 8461 section 3.1). Records that
// do not start with "v=STSv1" are discarded; exactly one must remain,
// and it must be "v=STSv1" followed by ";"-separated fields, one of them
// "id=" 1*32(ALPHA / DIGIT); other fields are extensions (name as a
// policy key, value 1*(%x21-3A / %x3C / %x3E-7E)) and ignored; a repeated
// field counts with its first instance.
func ParseTXT(records []string) (string, error) {
	var recs []string
	for _, r := range records {
		if rest, ok := strings.CutPrefix(r, "v=STSv1"); ok && (rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t') {
			recs = append(recs, r)
		}
	}
	switch len(recs) {
	case 0:
		return "", ErrNoRecord
	case 1:
	default:
		return "", &ParseError{Msg: fmt.Sprintf("%d MTA-STS TXT records (want one)", len(recs))}
	}
	fields := strings.Split(recs[0], ";")
	if strings.Trim(fields[0], " \t") != "v=STSv1" {
		return "", &ParseError{Msg: "TXT record does not start with v=STSv1"}
	}
	// One trailing ";" (with optional WSP) is allowed.
	if n := len(fields); n > 1 && strings.Trim(fields[n-1], " \t") == "" {
		fields = fields[:n-1]
	}
	id := ""
	for _, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		k, v, ok := strings.Cut(f, "=")
		if !ok || !validKey(k) || v == "" {
			return "", &ParseError{Msg: fmt.Sprintf("bad field %q in TXT record", truncate(f))}
		}
		for i := 0; i < len(v); i++ {
			c := v[i]
			if c < 0x21 || c > 0x7e || c == ';' || c == '=' {
				return "", &ParseError{Msg: fmt.Sprintf("bad value in field %q of TXT record", truncate(f))}
			}
		}
		if k == "id" && id == "" {
			if len(v) > 32 {
				return "", &ParseError{Msg: "id longer than 32 characters"}
			}
			for i := 0; i < len(v); i++ {
				if !isAlnum(v[i]) {
					return "", &ParseError{Msg: fmt.Sprintf("id %q is not alphanumeric", truncate(v))}
				}
			}
			id = v
		}
	}
	if id == "" {
		return "", &ParseError{Msg: "TXT record has no id"}
	}
	return id, nil
}
