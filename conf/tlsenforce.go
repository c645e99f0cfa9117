package conf

import (
	"sort"
	"strings"
	"time"
)

// MTASTS configures MTA-STS (RFC 8461) for outbound delivery.
type MTASTS struct {
	// Enabled looks up and applies recipients' MTA-STS policies.
	Enabled bool `toml:"enabled"`
	// CacheDir keeps fetched policies across restarts; empty keeps them
	// in memory only.
	CacheDir string `toml:"cache_dir"`
	// Refresh is how often cached policies are checked and those that
	// are due refetched before they expire.
	Refresh Duration `toml:"refresh"`

	// Publishing our own policy: an HTTPS listener (e.g. ":443") that
	// serves https://mta-sts.DOMAIN/.well-known/mta-sts.txt for every
	// local domain, with our TLS certificate (it must cover the
	// mta-sts.DOMAIN names). Empty: not served.
	ServeAddress string   `toml:"serve_address"`
	ServeMode    string   `toml:"serve_mode"`    // enforce, testing or none
	ServeMX      []string `toml:"serve_mx"`      // MX patterns; empty = hostname
	ServeMaxAge  Duration `toml:"serve_max_age"` // max_age of the published policy
}

// DANE configures DANE for SMTP (RFC 7672) for outbound delivery. It
// needs a DNSSEC-validating resolver whose AD bit is trusted ([dns]).
type DANE struct {
	Enabled bool `toml:"enabled"`
}

// TLSRPT configures SMTP TLS reporting (RFC 8460): recording the TLS
// outcome of deliveries and sending daily reports to domains that ask
// for them.
type TLSRPT struct {
	Enabled bool `toml:"enabled"`
	// OrganizationName and ContactInfo go into every report; empty means
	// the hostname and postmaster@hostname.
	OrganizationName string `toml:"organization_name"`
	ContactInfo      string `toml:"contact_info"`
	// StateDir keeps the daily records and what was sent.
	StateDir string `toml:"state_dir"`
}

// SecureAliasLevels are the TLS levels a secure alias may ask for.
var SecureAliasLevels = []TLSLevel{TLSEncrypt, TLSDaneOnly, TLSVerify}

// SecureAlias configures secure aliases: mail from or to
// user@SUBDOMAIN.DOMAIN travels only over TLS (strict TLS or a bounce).
type SecureAlias struct {
	// Subdomain is the label(s) put before a local domain, e.g. "secure"
	// for alice@secure.example.org.
	Subdomain string `toml:"subdomain"`
	// Users who have the alias: ["*"] for every local user, or a list of
	// addresses (lower-cased by validation).
	Users []string `toml:"users"`
	// Level is the outbound TLS level of mail sent through a secure
	// alias: encrypt, dane-only or verify.
	Level TLSLevel `toml:"level"`
	// Levels overrides Level per user (address -> level); keys are
	// lower-cased by validation.
	Levels map[string]TLSLevel `toml:"levels"`
}

// AllUsers reports whether every local user has a secure alias.
func (s *SecureAlias) AllUsers() bool { return len(s.Users) == 1 && s.Users[0] == "*" }

// UserLevel returns the level for addr (any case) and whether addr has a
// secure alias at all.
func (s *SecureAlias) UserLevel(addr string) (TLSLevel, bool) {
	a := strings.ToLower(addr)
	ok := s.AllUsers()
	for _, u := range s.Users {
		if u == a {
			ok = true
		}
	}
	if !ok {
		return TLSUnset, false
	}
	if l, found := s.Levels[a]; found {
		return l, true
	}
	return s.Level, true
}

func validSecureAliasLevel(l TLSLevel) bool {
	for _, x := range SecureAliasLevels {
		if x == l {
			return true
		}
	}
	return false
}

func secureAliasLevelNames() string {
	names := make([]string, len(SecureAliasLevels))
	for i, l := range SecureAliasLevels {
		names[i] = l.String()
	}
	return strings.Join(names, ", ")
}

func checkAddress(a string) error {
	i := strings.LastIndexByte(a, '@')
	if i < 0 || checkLocalPart(a[:i]) != nil || checkDomainName(a[i+1:]) != nil {
		return errInvalidAddress(a)
	}
	return nil
}

type errInvalidAddress string

func (e errInvalidAddress) Error() string {
	return "invalid address \"" + string(e) + "\" (want LOCAL@DOMAIN)"
}

func (v *validator) tlsEnforcement(c *Config) {
	if c.MTASTS.Enabled {
		v.positive("mta_sts.refresh", c.MTASTS.Refresh)
	}
	v.listen("mta_sts.serve_address", c.MTASTS.ServeAddress)
	switch c.MTASTS.ServeMode {
	case "enforce", "testing", "none":
	default:
		v.errorf("mta_sts.serve_mode", "must be \"enforce\", \"testing\" or \"none\", not %q", c.MTASTS.ServeMode)
	}
	for i, m := range c.MTASTS.ServeMX {
		if err := checkDomainName(strings.TrimPrefix(m, "*.")); err != nil {
			v.errorf(indexKey("mta_sts.serve_mx", i), "%v", err)
		}
	}
	if d := c.MTASTS.ServeMaxAge.D(); d < 24*time.Hour || d > 31557600*time.Second {
		v.errorf("mta_sts.serve_max_age", "must be between 1d and 365d (RFC 8461 §3.2 allows up to 31557600 s)")
	}
	if c.TLSRPT.Enabled && c.TLSRPT.StateDir == "" {
		v.errorf("tls_rpt.state_dir", "must be set when tls_rpt is enabled")
	}

	s := &c.SecureAlias
	if s.Subdomain == "" {
		v.errorf("secure_alias.subdomain", "must not be empty")
	} else if err := checkDomainName(s.Subdomain); err != nil || strings.HasSuffix(s.Subdomain, ".") {
		v.errorf("secure_alias.subdomain", "invalid subdomain %q (one or more DNS labels, like \"secure\")", s.Subdomain)
	} else {
		s.Subdomain = strings.ToLower(s.Subdomain)
	}
	if !validSecureAliasLevel(s.Level) {
		v.errorf("secure_alias.level", "level %q not allowed for a secure alias (use one of %s)", s.Level, secureAliasLevelNames())
	}
	users := map[string]bool{}
	star := false
	for i, u := range s.Users {
		key := indexKey("secure_alias.users", i)
		if u == "*" {
			star = true
			if len(s.Users) > 1 {
				v.errorf(key, "\"*\" (every user) cannot be combined with a list of addresses")
			}
			continue
		}
		if err := checkAddress(u); err != nil {
			v.errorf(key, "%v", err)
			continue
		}
		lu := strings.ToLower(u)
		if users[lu] {
			v.errorf(key, "duplicate user %q", u)
		}
		users[lu] = true
		s.Users[i] = lu
	}
	if len(s.Levels) > 0 {
		addrs := make([]string, 0, len(s.Levels))
		for a := range s.Levels {
			addrs = append(addrs, a)
		}
		sort.Strings(addrs)
		lower := make(map[string]TLSLevel, len(s.Levels))
		for _, a := range addrs {
			key := joinKey("secure_alias.levels", a)
			l := s.Levels[a]
			if err := checkAddress(a); err != nil {
				v.errorf(key, "%v", err)
				continue
			}
			la := strings.ToLower(a)
			if _, dup := lower[la]; dup {
				v.errorf(key, "duplicate user (the same address in another case)")
				continue
			}
			if !validSecureAliasLevel(l) {
				v.errorf(key, "level %q not allowed for a secure alias (use one of %s)", l, secureAliasLevelNames())
			}
			if !star && !users[la] {
				v.errorf(key, "%q is not in secure_alias.users", a)
			}
			lower[la] = l
		}
		s.Levels = lower
	}
}
