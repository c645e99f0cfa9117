package conf

// DNS configures the resolver used for MX, TLSA, MTA-STS, SPF, DKIM and
// DMARC lookups.
type DNS struct {
	// Resolver is the recursive resolver, HOST:PORT. Empty means the
	// first nameserver in /etc/resolv.conf.
	Resolver string `toml:"resolver"`
	// TrustAD says whether to believe the resolver's AD bit (that it
	// validated DNSSEC): "auto" believes it only from a resolver on a
	// loopback address, where the path to it cannot be tampered with;
	// "yes" and "no" force it. DANE needs it.
	TrustAD string `toml:"trust_ad"`
	// Timeout bounds each query.
	Timeout Duration `toml:"timeout"`
}

func (v *validator) dns(c *Config) {
	if c.DNS.Resolver != "" {
		if err := checkHostPort(c.DNS.Resolver, false); err != nil {
			v.errorf("dns.resolver", "%v", err)
		}
	}
	switch c.DNS.TrustAD {
	case "auto", "yes", "no":
	default:
		v.errorf("dns.trust_ad", "must be \"auto\", \"yes\" or \"no\", not %q", c.DNS.TrustAD)
	}
	v.positive("dns.timeout", c.DNS.Timeout)
}
