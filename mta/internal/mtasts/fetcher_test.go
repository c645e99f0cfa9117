package mtasts

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	"github.com/posthorn/posthorn/testbed/mtasts"
)

// clock is a settable time for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// world is the testbed: DNS with the _mta-sts records and the HTTPS
// policy server.
type world struct {
	t    *testing.T
	dns  *dnsserver.Server
	zone *dnsserver.Zone
	sts  *mtasts.Server
	res  *resolver.Resolver
	clk  *clock
	dir  string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	d, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	s, err := mtasts.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	res, err := resolver.New(resolver.Options{Server: d.Addr(), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, dns: d, zone: d.Zone("example.org", dnsserver.Insecure), sts: s, res: res,
		clk: &clock{t: time.Now()}, dir: t.TempDir()}
}

func (w *world) fetcher(mod ...func(*Options)) *Fetcher {
	w.t.Helper()
	o := Options{Resolver: w.res, DialContext: w.sts.DialContext, RootCAs: w.sts.CA().Pool(),
		Timeout: 2 * time.Second, CacheDir: w.dir, Now: w.clk.Now, RetryAfter: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mod {
		m(&o)
	}
	f, err := New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	return f
}

// setID publishes the TXT record for domain with id (sub-zone names under
// example.org).
func (w *world) setID(domain, id string) {
	name := "_mta-sts." + domain
	w.zone.Remove(name, dns.TypeTXT)
	if id != "" {
		w.zone.TXT(name, "v=STSv1; id="+id+";")
	}
}

// waitRequests waits up to max for n requests for domain and returns
// the number seen.
func (w *world) waitRequests(domain string, n int, max time.Duration) int {
	deadline := time.Now().Add(max)
	for w.requests(domain) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return w.requests(domain)
}

func (w *world) requests(domain string) int {
	n := 0
	for _, r := range w.sts.Requests() {
		if r.Host == "mta-sts."+domain {
			n++
		}
	}
	return n
}

var ctx = context.Background()

func TestLookupModes(t *testing.T) {
	w := newWorld(t)
	f := w.fetcher()
	for _, mode := range []string{"enforce", "testing", "none"} {
		d := mode + ".example.org"
		w.setID(d, "1")
		w.sts.SetPolicy(d, mtasts.Policy(mode, 86400, "mx."+d, "*.mx.example.net"))
		p, st, err := f.Lookup(ctx, d)
		if err != nil || st != Fetched || p == nil {
			t.Fatalf("%s: %v %v %v", mode, p, st, err)
		}
		if string(p.Mode) != mode || !p.Matches("mx."+d) || !p.Matches("a.mx.example.net") || p.Matches("mx.example.net") ||
			p.ID != "1" || p.Domain != d || p.MaxAge != 86400*time.Second || p.FetchedAt != w.clk.Now() {
			t.Errorf("%s: %+v", mode, p)
		}
		if f.Cached(d) != p {
			t.Errorf("%s: Cached", mode)
		}
		// SNI and Host name the policy host.
		rs := w.sts.Requests()
		last := rs[len(rs)-1]
		if last.SNI != "mta-sts."+d || last.Path != "/.well-known/mta-sts.txt" {
			t.Errorf("request %+v", last)
		}
	}
}

func TestLookupNoPolicy(t *testing.T) {
	w := newWorld(t)
	f := w.fetcher()
	p, st, err := f.Lookup(ctx, "nothing.example.org")
	if p != nil || st != NoPolicy || err != nil {
		t.Errorf("no TXT: %v %v %v", p, st, err)
	}
	// An invalid TXT record: no policy, with an error.
	w.zone.TXT("_mta-sts.broken.example.org", "v=STSv1; id=not-valid!")
	p, st, err = f.Lookup(ctx, "broken.example.org")
	if p != nil || st != NoPolicy || err == nil {
		t.Errorf("bad TXT: %v %v %v", p, st, err)
	}
	// A DNS failure: no policy, with an error.
	w.dns.Fail("_mta-sts.servfail.example.org", dns.RcodeServerFailure)
	p, st, err = f.Lookup(ctx, "servfail.example.org")
	if p != nil || st != NoPolicy || !errors.Is(err, resolver.ErrBogus) {
		t.Errorf("servfail: %v %v %v", p, st, err)
	}
	if _, _, err := f.Lookup(ctx, "not a domain"); err == nil {
		t.Error("bad domain accepted")
	}
	if w.requests("nothing.example.org")+w.requests("broken.example.org") != 0 {
		t.Error("policy fetched without a valid TXT record")
	}
}

func TestCacheAndIDChange(t *testing.T) {
	w := newWorld(t)
	d := "id.example.org"
	w.setID(d, "1")
	w.sts.SetPolicy(d, mtasts.Policy("testing", 86400, "mx.id.example.org"))
	f := w.fetcher()
	if _, st, _ := f.Lookup(ctx, d); st != Fetched {
		t.Fatalf("first: %v", st)
	}
	// Same id: served from the cache, no HTTP request.
	for range 3 {
		if p, st, err := f.Lookup(ctx, d); st != Cached || err != nil || p.Mode != Testing {
			t.Fatalf("again: %v %v", st, err)
		}
	}
	if n := w.requests(d); n != 1 {
		t.Fatalf("%d requests for an unchanged id", n)
	}
	// A new policy under the same id is not noticed...
	w.sts.SetPolicy(d, mtasts.Policy("enforce", 86400, "mx.id.example.org"))
	if p, _, _ := f.Lookup(ctx, d); p.Mode != Testing {
		t.Fatal("refetched without an id change")
	}
	// ... until the id changes.
	w.setID(d, "2")
	p, st, err := f.Lookup(ctx, d)
	if st != Fetched || err != nil || p.Mode != Enforce || p.ID != "2" {
		t.Fatalf("after id change: %+v %v %v", p, st, err)
	}
	if n := w.requests(d); n != 2 {
		t.Fatalf("%d requests", n)
	}

	// The cache survives a restart (a new Fetcher over the same dir).
	f2 := w.fetcher()
	if c := f2.Cached(d); c == nil || c.Mode != Enforce || c.ID != "2" || !c.FetchedAt.Equal(p.FetchedAt) {
		t.Fatalf("after restart: %+v", c)
	}
	if p, st, _ := f2.Lookup(ctx, d); st != Cached || p.Mode != Enforce {
		t.Fatalf("after restart lookup: %v", st)
	}
	if n := w.requests(d); n != 2 {
		t.Fatalf("%d requests after restart", n)
	}
	// The file is JSON holding the policy.
	if _, err := os.Stat(filepath.Join(w.dir, d+".json")); err != nil {
		t.Fatal(err)
	}
}

func TestMaxAgeExpiry(t *testing.T) {
	w := newWorld(t)
	d := "age.example.org"
	w.setID(d, "1")
	w.sts.SetPolicy(d, mtasts.Policy("enforce", 3600, "mx.age.example.org"))
	f := w.fetcher()
	if _, st, _ := f.Lookup(ctx, d); st != Fetched {
		t.Fatal(st)
	}
	w.clk.Add(59 * time.Minute)
	if _, st, _ := f.Lookup(ctx, d); st != Cached {
		t.Fatalf("before expiry: %v", st)
	}
	// Expired: refetched although the id is the same.
	w.clk.Add(2 * time.Minute)
	if _, st, _ := f.Lookup(ctx, d); st != Fetched {
		t.Fatalf("after expiry: %v", st)
	}
	// Expired and the TXT record gone: no policy any more, and the
	// cache file is removed.
	w.setID(d, "")
	w.clk.Add(30 * time.Minute)
	if p, st, _ := f.Lookup(ctx, d); st != CachedFallback || p == nil {
		t.Fatalf("TXT gone, cache valid: %v", st)
	}
	w.clk.Add(31 * time.Minute)
	if p, st, err := f.Lookup(ctx, d); st != NoPolicy || p != nil || err != nil {
		t.Fatalf("TXT gone, cache expired: %v %v %v", p, st, err)
	}
	if _, err := os.Stat(filepath.Join(w.dir, d+".json")); !os.IsNotExist(err) {
		t.Errorf("expired cache file kept: %v", err)
	}
	// An expired file is not loaded by a new Fetcher either.
	w.setID(d, "1")
	f.Lookup(ctx, d)
	w.clk.Add(2 * time.Hour)
	if c := w.fetcher().Cached(d); c != nil {
		t.Error("expired policy loaded")
	}
}

// TestHostile: every misbehaviour of the policy host fails the fetch
// cleanly, and never replaces a valid cached policy.
func TestHostile(t *testing.T) {
	w := newWorld(t)
	f := w.fetcher(func(o *Options) { o.Timeout = 700 * time.Millisecond })
	good := mtasts.Policy("enforce", 86400, "mx.example.org")
	cases := []struct {
		name string
		b    mtasts.Behaviour
		text string // policy served, if not good
		rt   string
	}{
		{"huge body", mtasts.Behaviour{HugeBody: 200 << 10}, "", ResultInvalid},
		{"body just over 64k", mtasts.Behaviour{HugeBody: 64<<10 + 1}, "", ResultInvalid},
		{"slow body", mtasts.Behaviour{SlowBody: 5 * time.Second}, "", ResultFetchError},
		{"redirect", mtasts.Behaviour{RedirectTo: "https://evil.example/policy"}, "", ResultFetchError},
		{"wrong content type", mtasts.Behaviour{ContentType: "text/html"}, "", ResultInvalid},
		{"no content type", mtasts.Behaviour{ContentType: "application/octet-stream"}, "", ResultInvalid},
		{"expired cert", mtasts.Behaviour{Cert: mtasts.CertExpired}, "", ResultWebPKIError},
		{"wrong-name cert", mtasts.Behaviour{Cert: mtasts.CertWrongName}, "", ResultWebPKIError},
		{"self-signed cert", mtasts.Behaviour{Cert: mtasts.CertSelfSigned}, "", ResultWebPKIError},
		{"404", mtasts.Behaviour{Status: 404}, "", ResultFetchError},
		{"500", mtasts.Behaviour{Status: 500}, "", ResultFetchError},
		{"garbage", mtasts.Behaviour{}, "\x00\x01garbage\xff", ResultInvalid},
		{"html", mtasts.Behaviour{}, "<html>hello</html>", ResultInvalid},
		{"mode none missing max_age", mtasts.Behaviour{}, "version: STSv1\nmode: none\n", ResultInvalid},
		{"max_age too large", mtasts.Behaviour{}, mtasts.Policy("enforce", MaxMaxAge+1, "mx.example.org"), ResultInvalid},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// With a cached policy: it stays.
			d := "h" + strconv.Itoa(i) + ".example.org"
			w.sts.SetBehaviour(d, mtasts.Behaviour{})
			w.sts.SetPolicy(d, good)
			w.setID(d, "1")
			p0, st, err := f.Lookup(ctx, d)
			if st != Fetched {
				t.Fatalf("setup: %v %v", st, err)
			}
			file := filepath.Join(w.dir, d+".json")
			before, _ := os.ReadFile(file)

			text := good
			if tc.text != "" {
				text = tc.text
			}
			w.sts.SetPolicy(d, text)
			w.sts.SetBehaviour(d, tc.b)
			w.setID(d, "2")
			start := time.Now()
			p, st, err := f.Lookup(ctx, d)
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("took %v", took)
			}
			if p != p0 || st != CachedFallback || err == nil {
				t.Fatalf("cached policy not kept: %+v %v %v", p, st, err)
			}
			var fe *FetchError
			if !errors.As(err, &fe) || fe.ResultType != tc.rt {
				t.Errorf("error %v, result type want %s", err, tc.rt)
			}
			after, _ := os.ReadFile(file)
			if string(before) != string(after) {
				t.Error("cache file changed")
			}
			// Retried only after RetryAfter. (The server logs a request
			// when its handler ends, which may be after the client gave up.)
			want := 2
			if tc.rt == ResultWebPKIError {
				want = 1 // the handshake failed: no HTTP request
			}
			n := w.waitRequests(d, want, 2*time.Second)
			if n != want {
				t.Errorf("%d requests, want %d", n, want)
			}
			if _, st, _ := f.Lookup(ctx, d); st != CachedFallback || w.waitRequests(d, n+1, 100*time.Millisecond) != n {
				t.Errorf("refetched within RetryAfter: %v", st)
			}

			// Without a cached policy: FetchFailed, no policy.
			d2 := "n" + strconv.Itoa(i) + ".example.org"
			w.sts.SetPolicy(d2, text)
			w.sts.SetBehaviour(d2, tc.b)
			w.setID(d2, "1")
			p, st, err = f.Lookup(ctx, d2)
			if p != nil || st != FetchFailed || !errors.As(err, &fe) || fe.ResultType != tc.rt {
				t.Fatalf("uncached: %v %v %v", p, st, err)
			}
			if _, err := os.Stat(filepath.Join(w.dir, d2+".json")); !os.IsNotExist(err) {
				t.Error("failed fetch cached")
			}
		})
	}
	// After RetryAfter a fixed server is fetched again.
	d := "h0.example.org"
	w.sts.SetBehaviour(d, mtasts.Behaviour{})
	w.clk.Add(2 * time.Minute)
	if _, st, err := f.Lookup(ctx, d); st != Fetched {
		t.Errorf("after RetryAfter: %v %v", st, err)
	}
}

func TestTXTVanishesOrFails(t *testing.T) {
	w := newWorld(t)
	d := "gone.example.org"
	w.setID(d, "1")
	w.sts.SetPolicy(d, mtasts.Policy("enforce", 86400, "mx.example.org"))
	f := w.fetcher()
	p0, _, _ := f.Lookup(ctx, d)
	w.setID(d, "")
	w.sts.RemovePolicy(d)
	if p, st, _ := f.Lookup(ctx, d); p != p0 || st != CachedFallback {
		t.Fatalf("TXT vanished: %v", st)
	}
	w.dns.Fail("_mta-sts."+d, dns.RcodeServerFailure)
	if p, st, err := f.Lookup(ctx, d); p != p0 || st != CachedFallback || err == nil {
		t.Fatalf("TXT lookup failed: %v %v", st, err)
	}
	w.dns.Clear("_mta-sts." + d)
	w.zone.TXT("_mta-sts."+d, "v=STSv1; id=1", "")
	w.zone.TXT("_mta-sts."+d, "v=STSv1; id=2")
	if p, st, err := f.Lookup(ctx, d); p != p0 || st != CachedFallback || err == nil {
		t.Fatalf("two TXT records: %v %v", st, err)
	}
}

func TestHTTPClientOption(t *testing.T) {
	w := newWorld(t)
	d := "client.example.org"
	w.setID(d, "1")
	w.sts.SetBehaviour(d, mtasts.Behaviour{RedirectTo: "https://mta-sts.other.example.org/.well-known/mta-sts.txt"})
	w.sts.SetPolicy("other.example.org", mtasts.Policy("enforce", 60, "mx.example.org"))
	// A client that would follow redirects: the Fetcher stops it.
	c := w.sts.Client()
	c.CheckRedirect = nil
	f := w.fetcher(func(o *Options) { o.HTTPClient = c })
	if _, st, err := f.Lookup(ctx, d); st != FetchFailed || err == nil {
		t.Fatalf("redirect followed: %v %v", st, err)
	}
	if w.requests("other.example.org") != 0 {
		t.Fatal("redirect target requested")
	}
}

func TestConcurrentLookups(t *testing.T) {
	w := newWorld(t)
	d := "busy.example.org"
	w.setID(d, "1")
	w.sts.SetPolicy(d, mtasts.Policy("enforce", 86400, "mx.example.org"))
	w.sts.SetBehaviour(d, mtasts.Behaviour{SlowBody: 200 * time.Millisecond})
	f := w.fetcher()
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p, _, err := f.Lookup(ctx, d); p != nil && err == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 8 || w.requests(d) != 1 {
		t.Errorf("%d ok, %d requests", ok.Load(), w.requests(d))
	}
}

func TestRefresh(t *testing.T) {
	w := newWorld(t)
	d := "refresh.example.org"
	w.setID(d, "1")
	w.sts.SetPolicy(d, mtasts.Policy("testing", 7200, "mx.example.org"))
	f := w.fetcher()
	p0, _, _ := f.Lookup(ctx, d)
	if n := f.RefreshDue(ctx); n != 0 {
		t.Fatalf("refreshed a fresh policy: %d", n)
	}
	// Past half of max_age: refetched (even with the same id), and the
	// new fetch time pushes the expiry out.
	w.clk.Add(61 * time.Minute)
	w.sts.SetPolicy(d, mtasts.Policy("enforce", 7200, "mx.example.org"))
	if n := f.RefreshDue(ctx); n != 1 {
		t.Fatalf("refreshed %d", n)
	}
	p1 := f.Cached(d)
	if p1 == p0 || p1.Mode != Enforce || !p1.FetchedAt.Equal(w.clk.Now()) {
		t.Fatalf("after refresh: %+v", p1)
	}
	// A failing refresh keeps the policy.
	w.clk.Add(61 * time.Minute)
	w.sts.SetBehaviour(d, mtasts.Behaviour{Status: 503})
	if n := f.RefreshDue(ctx); n != 0 {
		t.Fatalf("refreshed %d", n)
	}
	if f.Cached(d) != p1 {
		t.Fatal("policy replaced by a failed refresh")
	}
	// RefreshLoop runs a round at once and stops with its context.
	w.sts.SetBehaviour(d, mtasts.Behaviour{})
	w.clk.Add(2 * time.Minute) // past RetryAfter
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.RefreshLoop(lctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for f.Cached(d) == p1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if f.Cached(d) == p1 {
		t.Fatal("RefreshLoop did not refresh")
	}
}

func TestCacheFilesHostile(t *testing.T) {
	w := newWorld(t)
	os.WriteFile(filepath.Join(w.dir, "bad.example.org.json"), []byte("{not json"), 0o600)
	os.WriteFile(filepath.Join(w.dir, "wrong.example.org.json"),
		[]byte(`{"domain":"other.example.org","id":"1","fetched_at":"2099-01-01T00:00:00Z","policy":"version: STSv1\nmode: none\nmax_age: 60\n"}`), 0o600)
	os.WriteFile(filepath.Join(w.dir, "inv.example.org.json"),
		[]byte(`{"domain":"inv.example.org","id":"1","fetched_at":"2099-01-01T00:00:00Z","policy":"mode: bogus"}`), 0o600)
	os.WriteFile(filepath.Join(w.dir, ".tmp-x-1"), []byte("partial"), 0o600)
	f := w.fetcher()
	for _, d := range []string{"bad.example.org", "wrong.example.org", "other.example.org", "inv.example.org"} {
		if f.Cached(d) != nil {
			t.Errorf("%s loaded", d)
		}
	}
	ents, _ := os.ReadDir(w.dir)
	if len(ents) != 0 {
		t.Errorf("left in cache dir: %v", ents)
	}
}

func TestStateStrings(t *testing.T) {
	for s := NoPolicy; s <= FetchFailed; s++ {
		if s.String() == "" || s.String()[0] == 'P' {
			t.Errorf("%d", s)
		}
	}
	_ = http.StatusOK
}
