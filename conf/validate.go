package conf

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// validator checks a decoded Config and collects every problem, each at
// the line of the key it is about (or the nearest enclosing table).
type validator struct {
	file string
	pos  posIndex
	errs Errors
}

func (v *validator) errorf(key, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.file, Line: v.pos.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) config(c *Config) {
	if c.Hostname == "" {
		v.errorf("hostname", "must not be empty")
	} else if err := checkDomainName(c.Hostname); err != nil {
		v.errorf("hostname", "%v", err)
	} else {
		c.Hostname = strings.TrimSuffix(c.Hostname, ".")
	}
	if c.Postmaster != "" {
		if err := checkAliasTarget(c.Postmaster); err != nil || !strings.Contains(c.Postmaster, "@") {
			v.errorf("postmaster", "%q is not an address (user@domain)", c.Postmaster)
		}
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.errorf("log.level", "unknown level %q (use debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		v.errorf("log.format", "unknown format %q (use text or json)", c.Log.Format)
	}

	s := &c.SMTP
	v.listen("smtp.mx_address", s.MX)
	v.listen("smtp.submission_address", s.Submission)
	v.listen("smtp.submissions_address", s.Submissions)
	if s.MX == "" && s.Submission == "" && s.Submissions == "" {
		v.errorf("smtp", "no listener: set at least one of mx_address, submission_address, submissions_address")
	}
	for i, n := range s.ClientNetworks {
		key := indexKey("smtp.client_networks", i)
		if _, _, err := net.ParseCIDR(n); err != nil {
			if a, err := netip.ParseAddr(n); err == nil {
				v.errorf(key, "%q is an address, not a network: write %q for a single host", n, netip.PrefixFrom(a, a.BitLen()).String())
			} else {
				v.errorf(key, "invalid CIDR network %q (like \"192.0.2.0/24\" or \"2001:db8::/32\")", n)
			}
		}
	}
	if s.MaxMessageSize < 1 {
		v.errorf("smtp.max_message_size", "must be at least 1 byte")
	}
	v.atLeast("smtp.max_recipients", s.MaxRecipients, 1)
	if s.MaxLineLength != 0 && s.MaxLineLength < 1000 {
		v.errorf("smtp.max_line_length", "must be 0 (no limit) or at least 1000 (RFC 5321 §4.5.3.1.6), not %d", s.MaxLineLength)
	}
	v.atLeast("smtp.max_sessions_per_ip", s.MaxSessionsPerIP, 1)
	v.atLeast("smtp.max_sessions", s.MaxSessions, 1)
	v.atLeast("smtp.reserved_sessions", s.ReservedSessions, 0)
	if s.MaxSessions >= 1 && s.ReservedSessions >= s.MaxSessions {
		v.errorf("smtp.reserved_sessions", "%d leaves no session for other clients: must be less than max_sessions (%d)", s.ReservedSessions, s.MaxSessions)
	}
	v.atLeast("smtp.max_connection_rate_per_ip", s.MaxConnectionRatePerIP, 0)
	v.positive("smtp.command_timeout", s.CommandTimeout)
	v.positive("smtp.data_timeout", s.DataTimeout)

	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		key := "tls.cert_file"
		if c.TLS.CertFile != "" {
			key = "tls.key_file"
		}
		v.errorf(key, "cert_file and key_file must be set together (or both left empty for a self-signed certificate)")
	}
	if c.TLS.CertFile == "" && c.TLS.SelfSignedDir == "" {
		v.errorf("tls.self_signed_dir", "must be set when cert_file and key_file are empty")
	}

	q := &c.Queue
	if q.Dir == "" {
		v.errorf("queue.dir", "must not be empty")
	}
	minOK := v.positive("queue.min_backoff", q.MinBackoff)
	maxOK := v.positive("queue.max_backoff", q.MaxBackoff)
	if minOK && maxOK && q.MinBackoff > q.MaxBackoff {
		if v.pos.has("queue.min_backoff") || !v.pos.has("queue.max_backoff") {
			v.errorf("queue.min_backoff", "%s is more than max_backoff (%s)", q.MinBackoff, q.MaxBackoff)
		} else {
			v.errorf("queue.max_backoff", "%s is less than min_backoff (%s)", q.MaxBackoff, q.MinBackoff)
		}
	}
	v.positive("queue.max_lifetime", q.MaxLifetime)
	v.positive("queue.bounce_lifetime", q.BounceLifetime)
	v.atLeast("queue.workers", q.Workers, 1)
	if q.MinFreeSpace < 0 {
		v.errorf("queue.min_free_space", "must not be negative")
	}

	a := &c.Auth
	v.atLeast("auth.max_concurrent_checks", a.MaxConcurrentChecks, 1)
	v.atLeast("auth.max_failures_per_ip", a.MaxFailuresPerIP, 1)
	v.atLeast("auth.max_failures_per_account", a.MaxFailuresPerAccount, 1)
	v.positive("auth.failure_window", a.FailureWindow)
	v.positive("auth.block_time", a.BlockTime)

	if c.Local.MaildirRoot == "" {
		v.errorf("local.maildir_root", "must not be empty (set lmtp to deliver by LMTP)")
	}
	v.lmtp("local.lmtp", c.Local.LMTP)
	if d := c.Local.RecipientDelimiter; d != "" {
		if len(d) != 1 || !isAtext(d[0]) {
			v.errorf("local.recipient_delimiter", "must be empty or one character such as \"+\" or \"-\", not %q", d)
		}
	}

	v.listen("metrics.address", c.Metrics.Address)

	v.domains(c)
	v.dns(c)
	v.outbound(c)
	v.tlsEnforcement(c)
	v.directory(c)
	v.dkim(c)
	v.authres(c)
	v.plugins(c) // [[plugin]] and [encryption]
	v.milters(c) // [[milter]] and [milters]
}

func (v *validator) atLeast(key string, n, least int) {
	if n < least {
		v.errorf(key, "must be at least %d", least)
	}
}

func (v *validator) positive(key string, d Duration) bool {
	if d <= 0 {
		v.errorf(key, "must be more than 0s")
		return false
	}
	if d.D() > 100*365*24*time.Hour {
		v.errorf(key, "%s is too long", d)
		return false
	}
	return true
}

// listen checks a listener address: empty (off) or HOST:PORT with port
// 0-65535 and HOST empty, an IP address or a host name.
func (v *validator) listen(key, addr string) {
	if addr == "" {
		return
	}
	if err := checkHostPort(addr, true); err != nil {
		v.errorf(key, "invalid listen address %q: %v", addr, err)
	}
}

func checkHostPort(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want HOST:PORT")
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if p == 0 && !listen {
		return fmt.Errorf("port must not be 0")
	}
	if host == "" {
		if !listen {
			return fmt.Errorf("host is missing")
		}
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if checkDomainName(host) != nil {
		return fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	return nil
}

// lmtp checks an LMTP destination: empty, "tcp:HOST:PORT" or "unix:PATH".
func (v *validator) lmtp(key, spec string) {
	if spec == "" {
		return
	}
	if rest, ok := strings.CutPrefix(spec, "tcp:"); ok {
		if err := checkHostPort(rest, false); err != nil {
			v.errorf(key, "invalid LMTP destination %q: %v", spec, err)
		}
		return
	}
	if rest, ok := strings.CutPrefix(spec, "unix:"); ok {
		if rest == "" {
			v.errorf(key, "invalid LMTP destination %q: socket path is missing", spec)
		}
		return
	}
	v.errorf(key, "invalid LMTP destination %q: want \"tcp:HOST:PORT\" or \"unix:/path/to/socket\"", spec)
}

func (v *validator) domains(c *Config) {
	seen := map[string]int{} // lower-cased name -> index
	for i := range c.Domains {
		d := &c.Domains[i]
		key := indexKey("domain", i)
		name := strings.ToLower(strings.TrimSuffix(d.Name, "."))
		switch {
		case d.Name == "":
			v.errorf(key+".name", "must not be empty")
		case checkDomainName(d.Name) != nil:
			v.errorf(key+".name", "%v", checkDomainName(d.Name))
		default:
			if j, dup := seen[name]; dup {
				v.errorf(key+".name", "duplicate domain %q (first at %s)", d.Name, v.where(indexKey("domain", j)+".name"))
			} else {
				seen[name] = i
			}
			d.Name = name
		}

		boxes := map[string]bool{}
		for j, m := range d.Mailboxes {
			mk := indexKey(key+".mailboxes", j)
			if err := checkLocalPart(m); err != nil {
				v.errorf(mk, "%v", err)
				continue
			}
			lm := strings.ToLower(m)
			if boxes[lm] {
				v.errorf(mk, "duplicate mailbox %q", m)
			}
			boxes[lm] = true
		}
		if d.CatchAll != "" {
			if err := checkLocalPart(d.CatchAll); err != nil {
				v.errorf(key+".catch_all", "%v", err)
			}
		}
		v.lmtp(key+".lmtp", d.LMTP)

		if d.Aliases != nil {
			names := make([]string, 0, len(d.Aliases))
			for a := range d.Aliases {
				names = append(names, a)
			}
			sort.Strings(names)
			lower := make(map[string][]string, len(d.Aliases))
			first := map[string]string{}
			for _, a := range names {
				ak := joinKey(key+".aliases", a)
				if err := checkLocalPart(a); err != nil {
					v.errorf(ak, "%v", err)
					continue
				}
				la := strings.ToLower(a)
				if f, dup := first[la]; dup {
					v.errorf(ak, "duplicate alias (also written %q)", f)
					continue
				}
				first[la] = a
				targets := d.Aliases[a]
				if len(targets) == 0 {
					v.errorf(ak, "must list at least one target")
				}
				for t, target := range targets {
					if err := checkAliasTarget(target); err != nil {
						v.errorf(indexKey(ak, t), "%v", err)
					}
				}
				lower[la] = targets
			}
			d.Aliases = lower
		}
	}
}

// where names the position of key for messages: "line N", or the key.
func (v *validator) where(key string) string {
	if l := v.pos.line(key); l > 0 {
		return "line " + strconv.Itoa(l)
	}
	return key
}

// checkDomainName checks the syntax of a host or domain name.
func checkDomainName(name string) error {
	n := strings.TrimSuffix(name, ".")
	if n == "" || len(n) > 253 {
		return fmt.Errorf("invalid domain name %q", name)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("invalid domain name %q", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("invalid domain name %q: %q is not allowed", name, string(rune(c)))
			}
		}
	}
	return nil
}

// isAtext reports whether c may appear in an RFC 5322 dot-atom.
func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// checkLocalPart checks that s is a dot-atom local part of at most 64
// characters (quoted local parts are not supported in the config).
func checkLocalPart(s string) error {
	if s == "" {
		return fmt.Errorf("empty local part")
	}
	if len(s) > 64 {
		return fmt.Errorf("invalid local part %q: longer than 64 characters", s)
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return fmt.Errorf("invalid local part %q: misplaced dot", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && !isAtext(c) {
			return fmt.Errorf("invalid local part %q: %q is not allowed", s, string(rune(c)))
		}
	}
	return nil
}

// checkAliasTarget accepts a local part (of the same domain) or an address
// LOCAL@DOMAIN.
func checkAliasTarget(t string) error {
	i := strings.LastIndexByte(t, '@')
	if i < 0 {
		if checkLocalPart(t) != nil {
			return fmt.Errorf("invalid alias target %q: neither a local part nor an address", t)
		}
		return nil
	}
	if checkLocalPart(t[:i]) != nil || checkDomainName(t[i+1:]) != nil {
		return fmt.Errorf("invalid alias target %q: neither a local part nor an address", t)
	}
	return nil
}
