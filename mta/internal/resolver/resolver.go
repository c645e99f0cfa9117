package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Options configure a Resolver.
type Options struct {
	// Server is the recursive resolver, "HOST:PORT" (a bare host gets
	// port 53). Empty means the first nameserver of /etc/resolv.conf.
	Server string
	// Timeout bounds each query (UDP and, if needed, the TCP retry
	// together). Zero means 5s.
	Timeout time.Duration
	// TrustAD makes the resolver believe the AD bit of answers, i.e. trust
	// that Server validated DNSSEC and that the path to it is secure.
	// Without it no answer is ever reported secure. The config decides;
	// DefaultTrustAD gives the default rule.
	TrustAD bool
	// TrustADAuto, when set, replaces TrustAD by DefaultTrustAD of the
	// server actually used (after reading resolv.conf when Server is
	// empty): the AD bit is believed only from a loopback resolver. This
	// is conf's trust_ad = "auto".
	TrustADAuto bool
	// CacheEntries, if positive, keeps up to that many answers of the
	// delivery path (MX, A, AAAA, TLSA, CNAME) for at most their TTL;
	// see cache.go for the rules. Zero means no cache: every lookup asks
	// Server. DefaultCacheEntries is the daemon's choice.
	CacheEntries int

	// resolvConf overrides /etc/resolv.conf (tests).
	resolvConf string
	// now is the cache's clock (tests; default time.Now).
	now func() time.Time
}

// DefaultTrustAD is the default for Options.TrustAD: true only when server
// is an explicit loopback address (127.0.0.0/8 or ::1, with or without
// port), where the validating resolver runs on this machine and the path
// to it cannot be tampered with (RFC 7672 section 1.3). An empty server
// gives false; Options.TrustADAuto applies the rule to the resolv.conf
// nameserver instead.
func DefaultTrustAD(server string) bool {
	if server == "" {
		return false
	}
	host := server
	if h, _, err := net.SplitHostPort(server); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// Resolver sends queries to one recursive resolver. It is safe for
// concurrent use.
type Resolver struct {
	server  string
	timeout time.Duration
	trustAD bool
	cache   *cache // nil: none
}

const (
	defaultTimeout = 5 * time.Second
	// ednsSize is the advertised UDP payload size (DNS flag day 2020); it
	// also caps the size of a UDP answer. TCP answers are capped by the
	// 16-bit length prefix (64 KiB).
	ednsSize = 1232
	// maxCNAMEHops bounds the CNAME chain followed for one lookup.
	maxCNAMEHops = 8
	// maxRecords caps the records returned for one lookup; the rest of a
	// hostile answer is ignored.
	maxRecords = 256
)

// New returns a resolver for opts.
func New(opts Options) (*Resolver, error) {
	server := opts.Server
	if server == "" {
		path := opts.resolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		cc, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("resolver: no server configured and %v", err)
		}
		if len(cc.Servers) == 0 {
			return nil, fmt.Errorf("resolver: no server configured and no nameserver in %s", path)
		}
		port := cc.Port
		if port == "" {
			port = "53"
		}
		server = net.JoinHostPort(cc.Servers[0], port)
	} else if _, _, err := net.SplitHostPort(server); err != nil {
		// A bare host or IP (an IPv6 literal may come with brackets).
		server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
	}
	host, port, err := net.SplitHostPort(server)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("resolver: bad server address %q (want HOST:PORT)", opts.Server)
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("resolver: negative timeout %v", opts.Timeout)
	}
	t := opts.Timeout
	if t == 0 {
		t = defaultTimeout
	}
	trust := opts.TrustAD
	if opts.TrustADAuto {
		trust = DefaultTrustAD(server)
	}
	res := &Resolver{server: server, timeout: t, trustAD: trust}
	if opts.CacheEntries < 0 {
		return nil, fmt.Errorf("resolver: negative cache size %d", opts.CacheEntries)
	}
	if opts.CacheEntries > 0 {
		res.cache = newCache(opts.CacheEntries, opts.now)
	}
	return res, nil
}

// Server returns the address queries go to ("HOST:PORT").
func (r *Resolver) Server() string { return r.server }

// TrustAD reports whether the AD bit is believed.
func (r *Resolver) TrustAD() bool { return r.trustAD }

// MX returns the MX records of domain sorted by preference (ties by host
// name; RFC 5321 section 5.1 wants the caller to randomise among equal
// preferences). Hosts are lower case and fully qualified with a trailing
// dot, as net.LookupMX returns them. A null MX (RFC 7505) is returned as
// the single record {Host: ".", Pref: 0}; a "." mixed with real MX records
// is dropped. A domain with no MX records gives ErrNotFound (callers fall
// back to the implicit MX, RFC 5321 section 5.1).
func (r *Resolver) MX(ctx context.Context, domain string) ([]*net.MX, bool, error) {
	rrs, secure, err := r.lookup(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, secure, err
	}
	var out []*net.MX
	null := false
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		host := strings.ToLower(mx.Mx)
		if host == "." {
			null = true
			continue
		}
		out = append(out, &net.MX{Host: host, Pref: mx.Preference})
	}
	if len(out) == 0 && null {
		return []*net.MX{{Host: ".", Pref: 0}}, secure, nil
	}
	slices.SortStableFunc(out, func(a, b *net.MX) int {
		if a.Pref != b.Pref {
			return int(a.Pref) - int(b.Pref)
		}
		return strings.Compare(a.Host, b.Host)
	})
	return out, secure, nil
}

// IP returns the IPv4 and IPv6 addresses of host (A and AAAA are both
// queried, concurrently), IPv4 first. It is secure only if both answers
// were. ErrNotFound only if neither type exists (IsNXDomain if the name
// does not exist); any other failure of either query is returned as an
// error, so that a caller never acts on half an answer.
func (r *Resolver) IP(ctx context.Context, host string) ([]net.IP, bool, error) {
	type res struct {
		rrs    []dns.RR
		secure bool
		err    error
	}
	var v4, v6 res
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		v6.rrs, v6.secure, v6.err = r.lookup(ctx, host, dns.TypeAAAA)
	}()
	v4.rrs, v4.secure, v4.err = r.lookup(ctx, host, dns.TypeA)
	wg.Wait()
	secure := v4.secure && v6.secure
	for _, e := range []error{v4.err, v6.err} {
		if e != nil && !errors.Is(e, ErrNotFound) {
			return nil, false, e
		}
	}
	var ips []net.IP
	for _, rr := range v4.rrs {
		ips = append(ips, rr.(*dns.A).A)
	}
	for _, rr := range v6.rrs {
		ips = append(ips, rr.(*dns.AAAA).AAAA)
	}
	if len(ips) == 0 {
		if IsNXDomain(v4.err) {
			return nil, secure, v4.err
		}
		if IsNXDomain(v6.err) {
			return nil, secure, v6.err
		}
		if v4.err != nil {
			return nil, secure, v4.err
		}
		return nil, secure, v6.err
	}
	return ips, secure, nil
}

// TXT returns the TXT records of name, each record's character strings
// joined into one string (as net.LookupTXT does).
func (r *Resolver) TXT(ctx context.Context, name string) ([]string, bool, error) {
	rrs, secure, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, secure, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, secure, nil
}

// TLSA returns the TLSA records (RFC 6698) of name, e.g.
// "_25._tcp.mx.example.org". Whether they may be used for DANE depends on
// the secure flag (RFC 7672 section 2.2).
func (r *Resolver) TLSA(ctx context.Context, name string) ([]*dns.TLSA, bool, error) {
	rrs, secure, err := r.lookup(ctx, name, dns.TypeTLSA)
	if err != nil {
		return nil, secure, err
	}
	out := make([]*dns.TLSA, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.TLSA))
	}
	return out, secure, nil
}

// CNAME returns the canonical name of name: the end of its CNAME chain,
// fully qualified with a trailing dot and lower case (RFC 7672 section
// 2.2.2 uses it to find the TLSA base domain). It is secure only if every
// hop was. A name that is not an alias gives ErrNotFound. A chain whose
// end does not exist still returns that end.
func (r *Resolver) CNAME(ctx context.Context, name string) (string, bool, error) {
	cur, err := canonicalName(name)
	if err != nil {
		return "", false, r.errorf(name, dns.TypeCNAME, err)
	}
	secure := r.trustAD
	seen := map[string]bool{cur: true}
	for hop := 0; ; hop++ {
		rrs, sec, err := r.lookup(ctx, cur, dns.TypeCNAME)
		if err != nil {
			if errors.Is(err, ErrNotFound) && hop > 0 {
				return cur, secure && sec, nil
			}
			return "", secure && sec, err
		}
		secure = secure && sec
		target := strings.ToLower(rrs[0].(*dns.CNAME).Target)
		if seen[target] || hop >= maxCNAMEHops {
			return "", false, r.temporary(name, dns.TypeCNAME, errors.New("CNAME loop or chain too long"))
		}
		seen[target] = true
		cur = target
	}
}

// PTR returns the names for ip (reverse lookup).
func (r *Resolver) PTR(ctx context.Context, ip net.IP) ([]string, bool, error) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return nil, false, r.errorf(ip.String(), dns.TypePTR, err)
	}
	rrs, secure, err := r.lookup(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, secure, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.ToLower(rr.(*dns.PTR).Ptr))
	}
	return out, secure, nil
}

// canonicalName returns name lower case and fully qualified, or an error
// if it is not a valid domain name.
func canonicalName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	n := strings.ToLower(dns.Fqdn(name))
	if _, ok := dns.IsDomainName(n); !ok || len(n) > 254 {
		return "", errors.New("invalid domain name")
	}
	// Mail never needs names with spaces, controls, quotes or escapes;
	// refusing them keeps hostile input (a MAIL FROM domain, an SPF
	// macro expansion) out of queries and logs.
	for i := 0; i < len(n); i++ {
		if c := n[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("\"\\();@$<>,:", c) >= 0 {
			return "", errors.New("invalid character in domain name")
		}
	}
	return n, nil
}

// lookup resolves name/qtype, following CNAMEs, and returns the records
// of qtype at the end of the chain (at most maxRecords).
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, bool, error) {
	cur, err := canonicalName(name)
	if err != nil {
		return nil, false, r.errorf(name, qtype, err)
	}
	secure := r.trustAD
	seen := map[string]bool{}
	for hop := 0; hop <= maxCNAMEHops; hop++ {
		seen[cur] = true
		msg, err := r.exchange(ctx, cur, qtype)
		if err != nil {
			return nil, false, err
		}
		secure = secure && msg.AuthenticatedData
		switch msg.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
		case dns.RcodeServerFailure:
			return nil, false, &Error{Name: name, Type: typeString(qtype), Server: r.server, Err: ErrBogus, Temporary: true, detail: extendedError(msg)}
		default:
			return nil, false, r.temporary(name, qtype, fmt.Errorf("server answered %s", rcodeString(msg.Rcode)))
		}
		rrs, end, err := extract(msg, cur, qtype)
		if err != nil {
			return nil, false, r.temporary(name, qtype, err)
		}
		if msg.Rcode == dns.RcodeNameError {
			return nil, secure, &Error{Name: name, Type: typeString(qtype), Server: r.server, Err: ErrNotFound, NXDomain: true}
		}
		if len(rrs) > 0 {
			return rrs, secure, nil
		}
		if end == cur {
			return nil, secure, &Error{Name: name, Type: typeString(qtype), Server: r.server, Err: ErrNotFound}
		}
		// The answer stopped at a CNAME target without records for it:
		// ask for the target itself.
		if seen[end] {
			return nil, false, r.temporary(name, qtype, errors.New("CNAME loop"))
		}
		cur = end
	}
	return nil, false, r.temporary(name, qtype, errors.New("CNAME chain too long"))
}

// extract walks the answer section of msg from qname along CNAMEs and
// returns the records of qtype (class IN) owned by the end of the chain,
// and that end. Records owned by names off the chain, of other classes or
// types, are ignored. It never panics, whatever msg holds.
func extract(msg *dns.Msg, qname string, qtype uint16) ([]dns.RR, string, error) {
	cur := qname
	seen := map[string]bool{}
	for hop := 0; ; hop++ {
		var rrs []dns.RR
		var target string
		for _, rr := range msg.Answer {
			if rr == nil {
				continue
			}
			h := rr.Header()
			if h.Class != dns.ClassINET || !strings.EqualFold(h.Name, cur) {
				continue
			}
			if h.Rrtype == qtype && typeMatches(rr, qtype) {
				if len(rrs) < maxRecords {
					rrs = append(rrs, rr)
				}
			} else if c, ok := rr.(*dns.CNAME); ok && target == "" && h.Rrtype == dns.TypeCNAME {
				target = strings.ToLower(dns.Fqdn(c.Target))
			}
		}
		// A name with a CNAME has no other data (RFC 1034 section 3.6.2):
		// records of qtype beside a CNAME are not trusted.
		if target == "" {
			return rrs, cur, nil
		}
		if _, ok := dns.IsDomainName(target); !ok || target == "." {
			return nil, "", fmt.Errorf("bad CNAME target %q", target)
		}
		seen[cur] = true
		if seen[target] {
			return nil, "", errors.New("CNAME loop in answer")
		}
		if hop >= maxCNAMEHops {
			return nil, "", errors.New("CNAME chain too long")
		}
		cur = target
	}
}

// typeMatches reports whether rr's Go type is the one for qtype (a
// record whose header claims a type but whose data is of another type is
// ignored).
func typeMatches(rr dns.RR, qtype uint16) bool {
	switch qtype {
	case dns.TypeA:
		a, ok := rr.(*dns.A)
		return ok && a.A.To4() != nil
	case dns.TypeAAAA:
		a, ok := rr.(*dns.AAAA)
		return ok && len(a.AAAA) == net.IPv6len
	case dns.TypeMX:
		mx, ok := rr.(*dns.MX)
		return ok && mx.Mx != ""
	case dns.TypeTXT:
		_, ok := rr.(*dns.TXT)
		return ok
	case dns.TypeTLSA:
		_, ok := rr.(*dns.TLSA)
		return ok
	case dns.TypeCNAME:
		c, ok := rr.(*dns.CNAME)
		return ok && c.Target != ""
	case dns.TypePTR:
		p, ok := rr.(*dns.PTR)
		return ok && p.Ptr != ""
	}
	return false
}

// exchange sends one query for name/qtype over UDP, retrying over TCP if
// the answer is truncated, and checks that the answer is a response to
// it. With a cache, an answer still within its TTL is served from there
// (name is canonical: lookup and CNAME pass it through canonicalName).
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, r.netError(name, qtype, err)
	}
	if r.cache == nil || !cacheable(qtype) {
		return r.query(ctx, name, qtype)
	}
	if m := r.cache.get(name, qtype); m != nil {
		return m, nil
	}
	sent := r.cache.now()
	resp, err := r.query(ctx, name, qtype)
	if err == nil {
		r.cache.put(name, qtype, resp, sent)
	}
	return resp, err
}

// query asks the server (see exchange).
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = true // RFC 6840 section 5.7
	m.SetEdns0(ednsSize, true) // DO bit: RFC 3225
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &dns.Client{Net: "udp", UDPSize: ednsSize, Timeout: r.timeout}
	resp, _, err := c.ExchangeContext(ctx, m, r.server)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, r.server)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, r.netError(name, qtype, err)
	}
	if !resp.Response || resp.Opcode != dns.OpcodeQuery || len(resp.Question) != 1 ||
		!strings.EqualFold(resp.Question[0].Name, name) || resp.Question[0].Qtype != qtype ||
		resp.Question[0].Qclass != dns.ClassINET {
		return nil, r.temporary(name, qtype, errors.New("answer does not match the question"))
	}
	return resp, nil
}

func typeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return fmt.Sprintf("TYPE%d", t)
}

func rcodeString(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// extendedError returns the text of an Extended DNS Error (RFC 8914) in
// msg, if any, for error messages.
func extendedError(msg *dns.Msg) string {
	opt := msg.IsEdns0()
	if opt == nil {
		return ""
	}
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_EDE); ok {
			s := dns.ExtendedErrorCodeToString[e.InfoCode]
			if s == "" {
				s = fmt.Sprintf("EDE %d", e.InfoCode)
			}
			if e.ExtraText != "" {
				t := e.ExtraText
				if len(t) > 100 {
					t = t[:100]
				}
				s += ": " + strings.ToValidUTF8(t, "?")
			}
			return s
		}
	}
	return ""
}
