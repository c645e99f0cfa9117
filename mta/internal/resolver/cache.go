package resolver

import (
	"sync"
	"time"

	"github.com/miekg/dns"
)

// The answer cache (Options.CacheEntries). Only the responses of the
// delivery path are cached: MX, A, AAAA, TLSA and CNAME (the TLSA base
// domain). A response is kept whole, as the configured server sent it,
// AD bit included, so that everything built on it (CNAME chains, the
// secure flag, NXDOMAIN vs NODATA) comes out exactly as from the server.
//
// How long (all times count from when the query was sent, so an entry
// never outlives the server's TTL):
//   - a positive answer: the smallest TTL in its answer section (the
//     CNAMEs of a chain included);
//   - NXDOMAIN and NODATA: RFC 2308 section 5, the smaller of the SOA's
//     TTL and its MINIMUM field, from the authority section; without a
//     SOA a negative answer is not cached (RFC 2308 section 5);
//   - never longer than maxCacheTTL (maxNegativeTTL for negative
//     answers), whatever a hostile or broken server says;
//   - a TTL of 0 is not cached (RFC 1035 section 3.2.1: "only for the
//     transaction in progress");
//   - SERVFAIL (a DNSSEC validation failure), REFUSED and every other
//     error are never cached, nor truncated answers or answers larger
//     than maxCachedAnswer bytes.
//
// Memory is bounded by CacheEntries entries of at most maxCachedAnswer
// bytes each; when the cache is full, expired entries go first, then
// arbitrary ones.
const (
	maxCacheTTL     = time.Hour
	maxNegativeTTL  = 5 * time.Minute
	maxCachedAnswer = 4 << 10
	// DefaultCacheEntries is what the daemon uses.
	DefaultCacheEntries = 2048
)

type cacheKey struct {
	name  string // canonical: lower case, fully qualified
	qtype uint16
}

type cacheEntry struct {
	msg     *dns.Msg
	fetched time.Time // when the query was sent
	expires time.Time
}

type cache struct {
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[cacheKey]*cacheEntry
}

func newCache(max int, now func() time.Time) *cache {
	if now == nil {
		now = time.Now
	}
	return &cache{max: max, now: now, m: make(map[cacheKey]*cacheEntry)}
}

func cacheable(qtype uint16) bool {
	switch qtype {
	case dns.TypeMX, dns.TypeA, dns.TypeAAAA, dns.TypeTLSA, dns.TypeCNAME:
		return true
	}
	return false
}

// get returns a copy of a cached response that has not expired, with its
// records' TTLs lowered by the time spent in the cache.
func (c *cache) get(name string, qtype uint16) *dns.Msg {
	now := c.now()
	c.mu.Lock()
	e := c.m[cacheKey{name, qtype}]
	if e != nil && !now.Before(e.expires) {
		delete(c.m, cacheKey{name, qtype})
		e = nil
	}
	c.mu.Unlock()
	if e == nil {
		return nil
	}
	m := e.msg.Copy()
	age := uint32(now.Sub(e.fetched) / time.Second)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				h.Ttl -= min(h.Ttl, age)
			}
		}
	}
	return m
}

// put caches resp, the checked response to name/qtype whose query was
// sent at fetched, if its TTL allows.
func (c *cache) put(name string, qtype uint16, resp *dns.Msg, fetched time.Time) {
	ttl, ok := cacheTTL(resp)
	if !ok || ttl <= 0 || resp.Len() > maxCachedAnswer {
		return
	}
	e := &cacheEntry{msg: resp.Copy(), fetched: fetched, expires: fetched.Add(ttl)}
	if !c.now().Before(e.expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		now := c.now()
		for k, old := range c.m {
			if !now.Before(old.expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[cacheKey{name, qtype}] = e
}

// cacheTTL returns how long resp may be cached (see above); ok is false
// for a response that must not be.
func cacheTTL(resp *dns.Msg) (ttl time.Duration, ok bool) {
	if resp.Truncated || (resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError) {
		return 0, false
	}
	secs := ^uint32(0)
	for _, rr := range resp.Answer {
		if rr != nil {
			secs = min(secs, rr.Header().Ttl)
		}
	}
	negative := resp.Rcode == dns.RcodeNameError || len(resp.Answer) == 0
	var soa *dns.SOA
	for _, rr := range resp.Ns {
		if s, isSOA := rr.(*dns.SOA); isSOA && s.Hdr.Rrtype == dns.TypeSOA {
			soa = s
			break
		}
	}
	if soa != nil {
		// A negative answer, or a CNAME chain ending in NODATA or
		// NXDOMAIN: the denial counts too.
		secs = min(secs, soa.Hdr.Ttl, soa.Minttl)
	} else if negative {
		return 0, false
	}
	limit := maxCacheTTL
	if negative {
		limit = maxNegativeTTL
	}
	// Compare in seconds: a hostile 2^32-1 must not overflow.
	if time.Duration(secs) >= limit/time.Second {
		return limit, true
	}
	return time.Duration(secs) * time.Second, true
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
