package conf

import (
	"encoding/hex"
	"net/netip"
	"strings"
)

// Outbound configures delivery to other domains' MX hosts (and smarthosts).
type Outbound struct {
	// HeloName is the name we give in EHLO; default: hostname.
	HeloName string `toml:"helo_name"`
	// TLSLevel is the default TLS security level (Postfix's words):
	// none, may, encrypt, dane, dane-only, fingerprint, verify, secure.
	TLSLevel TLSLevel `toml:"tls_level"`
	// Concurrency caps all outbound connections; PerDomainConcurrency
	// caps those to one destination domain.
	Concurrency          int `toml:"concurrency"`
	PerDomainConcurrency int `toml:"per_domain_concurrency"`
	// PerDomainRate caps messages per minute to one destination domain;
	// 0 means no cap.
	PerDomainRate int `toml:"per_domain_rate"`

	ConnectTimeout Duration `toml:"connect_timeout"`
	CommandTimeout Duration `toml:"command_timeout"`
	DataTimeout    Duration `toml:"data_timeout"`
	// ConnectionReuseTime keeps an idle connection for the next message
	// to the same host; MaxMessagesPerConnection bounds one session.
	ConnectionReuseTime      Duration `toml:"connection_reuse_time"`
	MaxMessagesPerConnection int      `toml:"max_messages_per_connection"`
	// DelayWarning sends a "delayed" DSN once a message has waited this
	// long; 0 turns warnings off.
	DelayWarning Duration `toml:"delay_warning"`
	// CAFile adds trust anchors (PEM) for the verify and secure levels,
	// beside the system's.
	CAFile string `toml:"ca_file"`
	// IPv6 allows connecting to AAAA addresses.
	IPv6 bool `toml:"ipv6"`
	// SourceAddress is the local address outbound connections come
	// from: at most one IPv4 and one IPv6 address (each used for
	// destinations of its family); empty: the system chooses.
	SourceAddress []string `toml:"source_address"`
}

// TLSPolicy is one entry of the per-destination TLS policy map (Postfix's
// smtp_tls_policy_maps).
type TLSPolicy struct {
	// Domain is a destination domain; ".example.org" covers its
	// subdomains too.
	Domain string   `toml:"domain"`
	Level  TLSLevel `toml:"level"`
	// Match lists what the certificate must name at verify and secure:
	// "hostname" (the MX host), "nexthop" (the domain), "dot-nexthop"
	// (any subdomain of it), or a literal name. Defaults as Postfix:
	// verify = ["hostname"], secure = ["nexthop", "dot-nexthop"].
	Match []string `toml:"match"`
	// Fingerprints are SHA-256 digests (hex, colons allowed) of the
	// certificate or of its public key, for the fingerprint level.
	Fingerprints []string `toml:"fingerprints"`
}

// Transport routes one domain another way than MX delivery (Postfix's
// transport_maps). Domain "*" sets the default for every remote domain.
type Transport struct {
	Domain string `toml:"domain"`
	// Kind: "mx" (the default), "smarthost", "lmtp", "maildir" (into
	// Host/LOCALPART, a Maildir per recipient: for development and
	// archives) or "discard".
	Kind string `toml:"kind"`
	// Host: for smarthost HOST:PORT; for lmtp "tcp:HOST:PORT" or
	// "unix:/path".
	Host string `toml:"host"`
	// ImplicitTLS connects to a smarthost with TLS from the first byte
	// (port 465 style).
	ImplicitTLS bool `toml:"implicit_tls"`
	// AuthUser and AuthPasswordFile log in to a smarthost (AUTH PLAIN,
	// only over TLS). The file holds the password on its first line.
	AuthUser         string `toml:"auth_user"`
	AuthPasswordFile string `toml:"auth_password_file"`
	// TLSLevel for this transport; TLSUnset (not given) means the
	// policy map decides.
	TLSLevel TLSLevel `toml:"tls_level"`
	// SourceAddress overrides [outbound] source_address for this
	// transport (smarthost, lmtp over TCP, mx).
	SourceAddress []string `toml:"source_address"`
}

// Testing holds settings meant for tests and demos only.
type Testing struct {
	// PortMap connects to the named MX hosts on the given port instead
	// of 25, so the testbed's remote MTAs on loopback can stand in for
	// the Internet. Never set it in production.
	PortMap map[string]int `toml:"port_map"`
}

func (v *validator) outbound(c *Config) {
	o := &c.Outbound
	if o.HeloName != "" {
		if err := checkDomainName(o.HeloName); err != nil {
			v.errorf("outbound.helo_name", "%v", err)
		}
	}
	if !o.TLSLevel.Valid() {
		v.errorf("outbound.tls_level", "must be set (use one of %s)", strings.Join(TLSLevels, ", "))
	}
	v.atLeast("outbound.concurrency", o.Concurrency, 1)
	v.atLeast("outbound.per_domain_concurrency", o.PerDomainConcurrency, 1)
	v.atLeast("outbound.per_domain_rate", o.PerDomainRate, 0)
	v.positive("outbound.connect_timeout", o.ConnectTimeout)
	v.positive("outbound.command_timeout", o.CommandTimeout)
	v.positive("outbound.data_timeout", o.DataTimeout)
	v.atLeast("outbound.max_messages_per_connection", o.MaxMessagesPerConnection, 1)
	if o.DelayWarning < 0 {
		v.errorf("outbound.delay_warning", "must not be negative")
	}
	if o.ConnectionReuseTime < 0 {
		v.errorf("outbound.connection_reuse_time", "must not be negative")
	}
	v.sourceAddress("outbound.source_address", o.SourceAddress)

	seen := map[string]bool{}
	for i := range c.TLSPolicies {
		p := &c.TLSPolicies[i]
		key := indexKey("tls_policy", i)
		p.Domain = strings.ToLower(strings.TrimSuffix(p.Domain, "."))
		if err := checkDomainName(strings.TrimPrefix(p.Domain, ".")); err != nil {
			v.errorf(key+".domain", "%v", err)
		} else if seen[p.Domain] {
			v.errorf(key+".domain", "%q has a policy already", p.Domain)
		}
		seen[p.Domain] = true
		if !p.Level.Valid() {
			v.errorf(key+".level", "must be set (use one of %s)", strings.Join(TLSLevels, ", "))
		}
		if p.Level == TLSFingerprint && len(p.Fingerprints) == 0 {
			v.errorf(key+".fingerprints", "level fingerprint needs at least one fingerprint")
		}
		for j, f := range p.Fingerprints {
			b, err := hex.DecodeString(strings.ReplaceAll(f, ":", ""))
			if err != nil || len(b) != 32 {
				v.errorf(indexKey(key+".fingerprints", j), "%q is not a SHA-256 digest (64 hex digits, colons allowed)", f)
			}
		}
		for j, m := range p.Match {
			if m == "hostname" || m == "nexthop" || m == "dot-nexthop" {
				continue
			}
			if err := checkDomainName(strings.TrimPrefix(m, ".")); err != nil {
				v.errorf(indexKey(key+".match", j), "%q is neither hostname, nexthop, dot-nexthop nor a name: %v", m, err)
			}
		}
	}

	seenT := map[string]bool{}
	for i := range c.Transports {
		t := &c.Transports[i]
		key := indexKey("transport", i)
		t.Domain = strings.ToLower(strings.TrimSuffix(t.Domain, "."))
		if t.Domain != "*" {
			if err := checkDomainName(strings.TrimPrefix(t.Domain, ".")); err != nil {
				v.errorf(key+".domain", "%v (or \"*\" for every remote domain)", err)
			}
		}
		if seenT[t.Domain] {
			v.errorf(key+".domain", "%q has a transport already", t.Domain)
		}
		seenT[t.Domain] = true
		if t.Kind == "" {
			t.Kind = "mx"
		}
		switch t.Kind {
		case "mx", "discard":
		case "smarthost":
			if err := checkHostPort(t.Host, false); err != nil || t.Host == "" {
				v.errorf(key+".host", "smarthost needs HOST:PORT, got %q", t.Host)
			}
		case "lmtp":
			if t.Host == "" {
				v.errorf(key+".host", "lmtp needs \"tcp:HOST:PORT\" or \"unix:/path\"")
			} else {
				v.lmtp(key+".host", t.Host)
			}
		case "maildir":
			if t.Host == "" {
				v.errorf(key+".host", "maildir needs a directory")
			}
		default:
			v.errorf(key+".kind", "unknown kind %q (use mx, smarthost, lmtp, maildir or discard)", t.Kind)
		}
		v.sourceAddress(key+".source_address", t.SourceAddress)
		if (t.AuthUser == "") != (t.AuthPasswordFile == "") {
			v.errorf(key+".auth_user", "auth_user and auth_password_file go together")
		}
	}
	for host, port := range c.Testing.PortMap {
		if port < 1 || port > 65535 {
			v.errorf("testing.port_map."+host, "port %d out of range", port)
		}
	}
}

// sourceAddress checks a source_address list: IP addresses, at most one
// of each family.
func (v *validator) sourceAddress(key string, addrs []string) {
	var v4, v6 int
	for i, a := range addrs {
		ip, err := netip.ParseAddr(strings.Trim(a, "[]"))
		if err != nil || ip.Zone() != "" {
			v.errorf(indexKey(key, i), "%q is not an IP address", a)
			continue
		}
		if ip.Is4() || ip.Is4In6() {
			v4++
		} else {
			v6++
		}
	}
	if v4 > 1 || v6 > 1 {
		v.errorf(key, "at most one IPv4 and one IPv6 address")
	}
}
