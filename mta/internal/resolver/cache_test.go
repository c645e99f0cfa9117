package resolver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeClock is the cache's clock in these tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// cachedRes is a resolver with a cache of n entries on the hostile
// server h, and the count of queries h received.
func cachedRes(t *testing.T, h *hostile, n int) (*Resolver, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	r, err := New(Options{Server: h.addr, Timeout: 2 * time.Second, TrustAD: true, CacheEntries: n, now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return r, clk
}

// answering makes h answer every query with reply(req) and counts the
// queries per type and name.
func answering(h *hostile, reply func(req, m *dns.Msg, network string)) *queryCount {
	qc := &queryCount{m: map[string]int{}}
	h.set(func(req *dns.Msg, network string) *dns.Msg {
		q := req.Question[0]
		qc.add(dns.TypeToString[q.Qtype] + " " + strings.ToLower(q.Name))
		m := new(dns.Msg)
		m.SetReply(req)
		reply(req, m, network)
		return m
	})
	return qc
}

type queryCount struct {
	mu sync.Mutex
	m  map[string]int
	n  atomic.Int64
}

func (q *queryCount) add(k string) {
	q.mu.Lock()
	q.m[k]++
	q.mu.Unlock()
	q.n.Add(1)
}

func (q *queryCount) get(k string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.m[k]
}

func TestCacheTTL(t *testing.T) {
	h := startHostile(t)
	r, clk := cachedRes(t, h, 100)
	ctx := context.Background()
	var insecure atomic.Bool
	qc := answering(h, func(req, m *dns.Msg, network string) {
		m.AuthenticatedData = !insecure.Load()
		switch req.Question[0].Qtype {
		case dns.TypeMX:
			m.Answer = []dns.RR{rr("example.org. 300 IN MX 10 mx1.example.org."), rr("example.org. 60 IN MX 20 mx2.example.org.")}
		case dns.TypeA:
			m.Answer = []dns.RR{rr("mx1.example.org. 120 IN A 192.0.2.1")}
		case dns.TypeAAAA:
			m.Answer = []dns.RR{rr("mx1.example.org. 120 IN AAAA 2001:db8::1")}
		case dns.TypeTLSA:
			m.Answer = []dns.RR{rr("_25._tcp.mx1.example.org. 90 IN TLSA 3 1 1 " + strings.Repeat("ab", 32))}
		case dns.TypeTXT:
			m.Answer = []dns.RR{rr(`example.org. 300 IN TXT "v=spf1 -all"`)}
		}
	})
	lookupAll := func() {
		t.Helper()
		if mx, sec, err := r.MX(ctx, "Example.ORG"); err != nil || !sec || len(mx) != 2 {
			t.Fatalf("MX: %v %v %v", mx, sec, err)
		}
		if ips, sec, err := r.IP(ctx, "mx1.example.org."); err != nil || !sec || len(ips) != 2 {
			t.Fatalf("IP: %v %v %v", ips, sec, err)
		}
		if tl, sec, err := r.TLSA(ctx, "_25._tcp.mx1.example.org"); err != nil || !sec || len(tl) != 1 {
			t.Fatalf("TLSA: %v %v %v", tl, sec, err)
		}
		if _, _, err := r.TXT(ctx, "example.org"); err != nil {
			t.Fatal(err)
		}
	}
	lookupAll()
	insecure.Store(true) // the cached answers keep their AD bit
	for range 3 {
		lookupAll()
	}
	for k, want := range map[string]int{"MX example.org.": 1, "A mx1.example.org.": 1, "AAAA mx1.example.org.": 1,
		"TLSA _25._tcp.mx1.example.org.": 1, "TXT example.org.": 4} {
		if got := qc.get(k); got != want {
			t.Errorf("%s asked %d times, want %d (TXT is not cached)", k, got, want)
		}
	}
	// A served answer's TTLs count down.
	clk.add(59 * time.Second)
	m, err := r.exchange(ctx, "example.org.", dns.TypeMX)
	if err != nil || m.Answer[0].Header().Ttl != 300-59 || m.Answer[1].Header().Ttl != 1 || !m.AuthenticatedData {
		t.Fatalf("cached MX after 59 s: %v %v", m, err)
	}
	if qc.get("MX example.org.") != 1 {
		t.Fatal("MX asked again within its TTL")
	}
	// The smallest TTL of the answer ends the entry, to the second.
	clk.add(time.Second)
	if _, sec, err := r.MX(ctx, "example.org"); err != nil || sec {
		t.Fatalf("MX after 60 s: secure %v err %v; want a fresh insecure answer", sec, err)
	}
	if qc.get("MX example.org.") != 2 {
		t.Fatal("MX not asked again once its TTL ran out")
	}
	// At 90 s the TLSA answer expires, A and AAAA (120 s) not yet.
	clk.add(29 * time.Second)
	r.TLSA(ctx, "_25._tcp.mx1.example.org")
	if qc.get("TLSA _25._tcp.mx1.example.org.") != 1 {
		t.Fatal("TLSA asked again within its TTL")
	}
	clk.add(time.Second)
	r.TLSA(ctx, "_25._tcp.mx1.example.org")
	r.IP(ctx, "mx1.example.org")
	if qc.get("TLSA _25._tcp.mx1.example.org.") != 2 || qc.get("A mx1.example.org.") != 1 || qc.get("AAAA mx1.example.org.") != 1 {
		t.Fatalf("after 90 s: %v", qc.m)
	}
}

func TestCacheNegative(t *testing.T) {
	h := startHostile(t)
	r, clk := cachedRes(t, h, 100)
	ctx := context.Background()
	soa := func(ttl, minimum int) dns.RR {
		return rr(fmt.Sprintf("example.org. %d IN SOA ns.example.org. host.example.org. 1 7200 900 1209600 %d", ttl, minimum))
	}
	qc := answering(h, func(req, m *dns.Msg, network string) {
		m.AuthenticatedData = true
		switch strings.ToLower(req.Question[0].Name) {
		case "nx.example.org.": // SOA TTL 3600, MINIMUM 30: 30 s
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa(3600, 30)}
		case "nodata.example.org.": // SOA TTL 20, MINIMUM 300: 20 s
			m.Ns = []dns.RR{soa(20, 300)}
		case "nosoa.example.org.": // no SOA: not cached
			m.Rcode = dns.RcodeNameError
		case "alias.example.org.": // a CNAME (600 s) to NXDOMAIN (SOA 45 s)
			m.Rcode = dns.RcodeNameError
			m.Answer = []dns.RR{rr("alias.example.org. 600 IN CNAME gone.example.org.")}
			m.Ns = []dns.RR{soa(45, 45)}
		}
	})
	ask := func(name string) error {
		_, _, err := r.MX(ctx, name)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: %v, want not found", name, err)
		}
		return err
	}
	for range 2 {
		if err := ask("nx.example.org"); !IsNXDomain(err) {
			t.Fatalf("cached NXDOMAIN lost its kind: %v", err)
		}
		if err := ask("nodata.example.org"); IsNXDomain(err) {
			t.Fatalf("cached NODATA became NXDOMAIN: %v", err)
		}
		ask("nosoa.example.org")
		ask("alias.example.org")
	}
	check := func(when string, want map[string]int) {
		t.Helper()
		for k, n := range want {
			if got := qc.get("MX " + k); got != n {
				t.Errorf("%s: %s asked %d times, want %d", when, k, got, n)
			}
		}
	}
	check("at once", map[string]int{"nx.example.org.": 1, "nodata.example.org.": 1, "nosoa.example.org.": 2, "alias.example.org.": 1})
	clk.add(20 * time.Second)
	for _, n := range []string{"nx", "nodata", "alias"} {
		ask(n + ".example.org")
	}
	check("after 20 s", map[string]int{"nx.example.org.": 1, "nodata.example.org.": 2, "alias.example.org.": 1})
	clk.add(10 * time.Second)
	for _, n := range []string{"nx", "alias"} {
		ask(n + ".example.org")
	}
	check("after 30 s", map[string]int{"nx.example.org.": 2, "alias.example.org.": 1})
	clk.add(15 * time.Second)
	ask("alias.example.org")
	check("after 45 s", map[string]int{"alias.example.org.": 2})
}

// TestCacheHostile: a resolver that asks for eternity gets maxCacheTTL
// (maxNegativeTTL for a denial); a TTL of 0, SERVFAIL, a truncated or
// oversized answer are not cached (the TCP answer after a truncated UDP
// one is); the cache never holds more entries than configured.
func TestCacheHostile(t *testing.T) {
	h := startHostile(t)
	r, clk := cachedRes(t, h, 50)
	ctx := context.Background()
	qc := answering(h, func(req, m *dns.Msg, network string) {
		name := strings.ToLower(req.Question[0].Name)
		switch {
		case name == "trunc.example.":
			m.Answer = []dns.RR{rr("trunc.example. 3600 IN A 192.0.2.11")}
			if network == "udp" {
				m.Truncated = true
				m.Answer = nil
			}
		case name == "forever.example.":
			m.Answer = []dns.RR{rr("forever.example. 4294967295 IN A 192.0.2.7")}
		case name == "neverno.example.":
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{rr("example. 2147483647 IN SOA ns.example. h.example. 1 1 1 1 4294967295")}
		case name == "zero.example.":
			m.Answer = []dns.RR{rr("zero.example. 3600 IN A 192.0.2.8"), rr("zero.example. 0 IN A 192.0.2.9")}
		case name == "servfail.example.":
			m.Rcode = dns.RcodeServerFailure
		case name == "big.example.":
			if network == "udp" {
				m.Truncated = true
				break
			}
			for i := range 400 {
				m.Answer = append(m.Answer, rr(fmt.Sprintf("big.example. 3600 IN A 192.0.%d.%d", i/250, i%250+1)))
			}
		case strings.HasSuffix(name, ".many.example."):
			m.Answer = []dns.RR{rr(name + " 3600 IN A 192.0.2.10")}
		}
	})
	for range 2 {
		r.exchange(ctx, "forever.example.", dns.TypeA)
		r.exchange(ctx, "neverno.example.", dns.TypeA)
		r.exchange(ctx, "zero.example.", dns.TypeA)
		r.exchange(ctx, "servfail.example.", dns.TypeA)
		r.exchange(ctx, "big.example.", dns.TypeA)
		r.exchange(ctx, "trunc.example.", dns.TypeA)
	}
	for k, want := range map[string]int{"forever.example.": 1, "neverno.example.": 1, "zero.example.": 2,
		"servfail.example.": 2, "big.example.": 4, "trunc.example.": 2} {
		// trunc: a truncated answer and the TCP one, then from the cache;
		// big: the same, but the TCP answer is too large to cache.
		if got := qc.get("A " + k); got != want {
			t.Errorf("%s asked %d times, want %d", k, got, want)
		}
	}
	if _, _, err := r.IP(ctx, "servfail.example"); !errors.Is(err, ErrBogus) {
		t.Errorf("SERVFAIL: %v", err)
	}
	clk.add(maxNegativeTTL)
	r.exchange(ctx, "neverno.example.", dns.TypeA)
	r.exchange(ctx, "forever.example.", dns.TypeA)
	if qc.get("A neverno.example.") != 2 || qc.get("A forever.example.") != 1 {
		t.Errorf("after %v: %v", maxNegativeTTL, qc.m)
	}
	clk.add(maxCacheTTL - maxNegativeTTL)
	r.exchange(ctx, "forever.example.", dns.TypeA)
	if qc.get("A forever.example.") != 2 {
		t.Errorf("huge TTL not capped at %v", maxCacheTTL)
	}
	for i := range 200 {
		r.exchange(ctx, fmt.Sprintf("h%d.many.example.", i), dns.TypeA)
		if n := r.cache.len(); n > 50 {
			t.Fatalf("cache holds %d entries, limit 50", n)
		}
	}
}

// TestCacheOff: without CacheEntries every lookup reaches the server.
func TestCacheOff(t *testing.T) {
	h := startHostile(t)
	r := newRes(t, h.addr, true)
	qc := answering(h, func(req, m *dns.Msg, network string) {
		m.Answer = []dns.RR{rr("example.org. 3600 IN MX 10 mx.example.org.")}
	})
	for range 3 {
		if _, _, err := r.MX(context.Background(), "example.org"); err != nil {
			t.Fatal(err)
		}
	}
	if n := qc.n.Load(); n != 3 {
		t.Fatalf("%d queries, want 3", n)
	}
	if _, err := New(Options{Server: h.addr, CacheEntries: -1}); err == nil {
		t.Error("negative cache size accepted")
	}
}
