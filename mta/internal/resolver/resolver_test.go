package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/miekg/dns"
	"github.com/posthorn/posthorn/testbed/dnsserver"
)

func startDNS(t *testing.T) *dnsserver.Server {
	t.Helper()
	s, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newRes(t *testing.T, server string, trustAD bool) *Resolver {
	t.Helper()
	r, err := New(Options{Server: server, Timeout: 2 * time.Second, TrustAD: trustAD})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRecordTypes(t *testing.T) {
	s := startDNS(t)
	z := s.Zone("example.org", dnsserver.Secure)
	z.MX("@", 20, "mx2").MX("@", 10, "MX1").MX("@", 10, "mx0").
		A("mx1", "192.0.2.1", "192.0.2.2").AAAA("mx1", "2001:db8::1").
		TXT("@", "v=spf1 ", "ip4:192.0.2.0/24 -all").TXT("@", "other").
		TLSA("_25._tcp.mx1", 3, 1, 1, "00112233").
		CNAME("alias", "mx1").A("v4only", "192.0.2.9").AAAA("v6only", "2001:db8::9")
	s.Zone("null.test", dnsserver.Insecure).NullMX("@")
	r := newRes(t, s.Addr(), true)
	ctx := context.Background()

	mxs, secure, err := r.MX(ctx, "Example.ORG")
	if err != nil || !secure {
		t.Fatalf("MX: %v %v", err, secure)
	}
	var got []string
	for _, mx := range mxs {
		got = append(got, mx.Host)
	}
	if strings.Join(got, " ") != "mx0.example.org. mx1.example.org. mx2.example.org." || mxs[0].Pref != 10 || mxs[2].Pref != 20 {
		t.Fatalf("MX order: %v", got)
	}
	mxs, secure, err = r.MX(ctx, "null.test.")
	if err != nil || secure || len(mxs) != 1 || mxs[0].Host != "." || mxs[0].Pref != 0 {
		t.Fatalf("null MX: %v %v %v", mxs, secure, err)
	}

	ips, secure, err := r.IP(ctx, "mx1.example.org")
	if err != nil || !secure || len(ips) != 3 || ips[0].To4() == nil || ips[2].String() != "2001:db8::1" {
		t.Fatalf("IP: %v %v %v", ips, secure, err)
	}
	if ips, _, err = r.IP(ctx, "v4only.example.org"); err != nil || len(ips) != 1 {
		t.Fatalf("IP v4only: %v %v", ips, err)
	}
	if ips, _, err = r.IP(ctx, "v6only.example.org"); err != nil || len(ips) != 1 || ips[0].To4() != nil {
		t.Fatalf("IP v6only: %v %v", ips, err)
	}
	if ips, _, err = r.IP(ctx, "alias.example.org"); err != nil || len(ips) != 3 {
		t.Fatalf("IP via CNAME: %v %v", ips, err)
	}

	txt, secure, err := r.TXT(ctx, "example.org")
	if err != nil || !secure || len(txt) != 2 {
		t.Fatalf("TXT: %v %v %v", txt, secure, err)
	}
	if !(txt[0] == "v=spf1 ip4:192.0.2.0/24 -all" || txt[1] == "v=spf1 ip4:192.0.2.0/24 -all") {
		t.Fatalf("TXT strings not joined: %q", txt)
	}

	tl, secure, err := r.TLSA(ctx, "_25._tcp.mx1.example.org")
	if err != nil || !secure || len(tl) != 1 || tl[0].Usage != 3 || tl[0].Selector != 1 || tl[0].MatchingType != 1 || tl[0].Certificate != "00112233" {
		t.Fatalf("TLSA: %v %v %v", tl, secure, err)
	}

	cn, secure, err := r.CNAME(ctx, "alias.example.org")
	if err != nil || !secure || cn != "mx1.example.org." {
		t.Fatalf("CNAME: %q %v %v", cn, secure, err)
	}
	if _, _, err := r.CNAME(ctx, "mx1.example.org"); !errors.Is(err, ErrNotFound) || IsNXDomain(err) {
		t.Fatalf("CNAME of a non-alias: %v", err)
	}
}

func TestSecureInsecureTrustAD(t *testing.T) {
	s := startDNS(t)
	s.Zone("secure.test", dnsserver.Secure).A("a", "192.0.2.1").AAAA("a", "2001:db8::1").CNAME("out", "a.insecure.test")
	s.Zone("insecure.test", dnsserver.Insecure).A("a", "192.0.2.2").CNAME("in", "a.secure.test")
	trusting := newRes(t, s.Addr(), true)
	sceptic := newRes(t, s.Addr(), false)
	ctx := context.Background()

	for _, c := range []struct {
		r      *Resolver
		name   string
		secure bool
	}{
		{trusting, "a.secure.test", true},
		{trusting, "a.insecure.test", false},
		{trusting, "out.secure.test", false}, // chain into an insecure zone
		{trusting, "in.insecure.test", false},
		{sceptic, "a.secure.test", false}, // AD set, but not believed
		{sceptic, "a.insecure.test", false},
	} {
		ips, secure, err := c.r.IP(ctx, c.name)
		if err != nil || len(ips) == 0 || secure != c.secure {
			t.Errorf("IP %s (trustAD %v): %v secure=%v err=%v", c.name, c.r.TrustAD(), ips, secure, err)
		}
	}
	// Authenticated denial: a secure NODATA / NXDOMAIN keeps the flag.
	if _, secure, err := trusting.TLSA(ctx, "_25._tcp.a.secure.test"); !errors.Is(err, ErrNotFound) || !secure {
		t.Errorf("secure NODATA: %v %v", secure, err)
	}
	if _, secure, err := trusting.TLSA(ctx, "_25._tcp.nope.secure.test"); !IsNXDomain(err) || !secure {
		t.Errorf("secure NXDOMAIN: %v %v", secure, err)
	}
	if _, secure, err := trusting.TLSA(ctx, "_25._tcp.a.insecure.test"); !errors.Is(err, ErrNotFound) || secure {
		t.Errorf("insecure NODATA: %v %v", secure, err)
	}
}

func TestBogus(t *testing.T) {
	s := startDNS(t)
	s.Zone("bogus.test", dnsserver.Bogus).MX("@", 10, "mx").A("mx", "192.0.2.1")
	s.Zone("example.org", dnsserver.Secure).CNAME("b", "mx.bogus.test")
	r := newRes(t, s.Addr(), true)
	ctx := context.Background()
	_, _, err := r.MX(ctx, "bogus.test")
	if !errors.Is(err, ErrBogus) || !IsTemporary(err) || errors.Is(err, ErrNotFound) {
		t.Fatalf("MX bogus: %v", err)
	}
	if _, _, err := r.IP(ctx, "b.example.org"); !errors.Is(err, ErrBogus) {
		t.Fatalf("CNAME into bogus: %v", err)
	}
	if _, _, err := r.TLSA(ctx, "_25._tcp.mx.bogus.test"); !errors.Is(err, ErrBogus) {
		t.Fatalf("TLSA bogus: %v", err)
	}
	// The adapters report it as temporary (SPF temperror, DKIM tempfail).
	_, err = r.LookupTXTFunc()("bogus.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.Temporary() || de.IsNotFound {
		t.Fatalf("LookupTXTFunc bogus: %#v", err)
	}
	// Also an explicit SERVFAIL from a server.
	s.Fail("mx.example.org", dns.RcodeServerFailure)
	s.Zone("example.org", dnsserver.Secure).A("mx", "192.0.2.1")
	if _, _, err := r.IP(ctx, "mx.example.org"); !errors.Is(err, ErrBogus) {
		t.Fatalf("SERVFAIL: %v", err)
	}
	s.Fail("r.example.org", dns.RcodeRefused)
	if _, _, err := r.IP(ctx, "r.example.org"); err == nil || !IsTemporary(err) || errors.Is(err, ErrBogus) || errors.Is(err, ErrNotFound) {
		t.Fatalf("REFUSED: %v", err)
	}
}

func TestNXDomainNoData(t *testing.T) {
	s := startDNS(t)
	s.Zone("example.org", dnsserver.Insecure).A("mx", "192.0.2.1").CNAME("dangling", "nope")
	r := newRes(t, s.Addr(), true)
	ctx := context.Background()

	_, _, err := r.MX(ctx, "nope.example.org")
	if !errors.Is(err, ErrNotFound) || !IsNXDomain(err) || IsTemporary(err) {
		t.Fatalf("NXDOMAIN: %v", err)
	}
	if !strings.Contains(err.Error(), "NXDOMAIN") || !strings.Contains(err.Error(), "nope.example.org") {
		t.Errorf("NXDOMAIN message: %v", err)
	}
	_, _, err = r.MX(ctx, "mx.example.org")
	if !errors.Is(err, ErrNotFound) || IsNXDomain(err) || IsTemporary(err) {
		t.Fatalf("NODATA: %v", err)
	}
	if !strings.Contains(err.Error(), "NODATA") {
		t.Errorf("NODATA message: %v", err)
	}
	if _, _, err := r.IP(ctx, "nope.example.org"); !IsNXDomain(err) {
		t.Fatalf("IP NXDOMAIN: %v", err)
	}
	if _, _, err := r.IP(ctx, "dangling.example.org"); !IsNXDomain(err) {
		t.Fatalf("dangling CNAME: %v", err)
	}
	if cn, _, err := r.CNAME(ctx, "dangling.example.org"); err != nil || cn != "nope.example.org." {
		t.Fatalf("CNAME of dangling: %q %v", cn, err)
	}
	// The SPF adapter maps both to IsNotFound.
	for _, n := range []string{"nope.example.org", "mx.example.org"} {
		_, err := r.SPFResolver().LookupTXT(ctx, n)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound || de.Temporary() {
			t.Errorf("SPF adapter %s: %#v", n, err)
		}
	}
	// Invalid names are permanent errors, not "not found".
	if _, _, err := r.TXT(ctx, "a..b"); err == nil || IsTemporary(err) || errors.Is(err, ErrNotFound) {
		t.Errorf("invalid name: %v", err)
	}
	for _, bad := range []string{"a b.example", "a;b.example", "a\"b.example", "a\r\nb.example", "a\\065.example"} {
		if _, _, err := r.TXT(ctx, bad); err == nil || IsTemporary(err) || errors.Is(err, ErrNotFound) {
			t.Errorf("name %q: %v", bad, err)
		}
	}
	if _, _, err := r.TXT(ctx, strings.Repeat("a", 64)+".org"); err == nil {
		t.Errorf("long label accepted")
	}
}

func TestCNAMEChain(t *testing.T) {
	s := startDNS(t)
	s.Zone("example.org", dnsserver.Secure).CNAME("www", "web").CNAME("web", "host.other.test").
		CNAME("loop1", "loop2").CNAME("loop2", "loop1")
	s.Zone("other.test", dnsserver.Secure).A("host", "192.0.2.5").TXT("host", "hello")
	r := newRes(t, s.Addr(), true)
	ctx := context.Background()
	ips, secure, err := r.IP(ctx, "www.example.org")
	if err != nil || !secure || len(ips) != 1 || ips[0].String() != "192.0.2.5" {
		t.Fatalf("chain: %v %v %v", ips, secure, err)
	}
	txt, _, err := r.TXT(ctx, "www.example.org")
	if err != nil || len(txt) != 1 || txt[0] != "hello" {
		t.Fatalf("TXT chain: %v %v", txt, err)
	}
	cn, secure, err := r.CNAME(ctx, "www.example.org")
	if err != nil || !secure || cn != "host.other.test." {
		t.Fatalf("CNAME chain: %q %v %v", cn, secure, err)
	}
	s.Zone("other.test", dnsserver.Insecure)
	if cn, secure, err = r.CNAME(ctx, "www.example.org"); err != nil || secure {
		t.Fatalf("CNAME chain insecure end: %q %v %v", cn, secure, err)
	}
	if _, _, err := r.IP(ctx, "loop1.example.org"); err == nil || !IsTemporary(err) {
		t.Fatalf("loop: %v", err)
	}
	if _, _, err := r.CNAME(ctx, "loop1.example.org"); err == nil || !IsTemporary(err) {
		t.Fatalf("CNAME loop: %v", err)
	}
}

func TestTruncationTCP(t *testing.T) {
	s := startDNS(t)
	z := s.Zone("example.org", dnsserver.Secure).MX("@", 10, "mx")
	for i := range 40 {
		z.TXT("big", fmt.Sprintf("%02d %s", i, strings.Repeat("x", 60)))
	}
	s.Truncate("example.org", dns.TypeMX)
	r := newRes(t, s.Addr(), true)
	ctx := context.Background()
	mxs, secure, err := r.MX(ctx, "example.org")
	if err != nil || !secure || len(mxs) != 1 {
		t.Fatalf("MX: %v %v %v", mxs, secure, err)
	}
	q := s.Queries()
	if len(q) != 2 || q[0].Net != "udp" || q[1].Net != "tcp" {
		t.Fatalf("queries: %+v", q)
	}
	txt, _, err := r.TXT(ctx, "big.example.org")
	if err != nil || len(txt) != 40 {
		t.Fatalf("big TXT over TCP: %d %v", len(txt), err)
	}
}

func TestTimeout(t *testing.T) {
	s := startDNS(t)
	s.Zone("example.org", dnsserver.Secure).A("drop", "192.0.2.1").A("slow", "192.0.2.1")
	s.Drop("drop.example.org")
	r, err := New(Options{Server: s.Addr(), Timeout: 200 * time.Millisecond, TrustAD: true})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	_, _, err = r.IP(context.Background(), "drop.example.org")
	if d := time.Since(t0); d > 1500*time.Millisecond {
		t.Errorf("took %v", d)
	}
	var e *Error
	if !IsTemporary(err) || !errors.As(err, &e) || !e.Timeout || errors.Is(err, ErrNotFound) {
		t.Fatalf("drop: %v", err)
	}
	_, err = r.SPFResolver().LookupTXT(context.Background(), "drop.example.org")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTimeout || !de.Temporary() {
		t.Fatalf("SPF adapter timeout: %#v", err)
	}
	// The caller's context bounds the lookup too.
	s.Delay("slow.example.org", time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r2 := newRes(t, s.Addr(), true)
	t0 = time.Now()
	if _, _, err := r2.TXT(ctx, "slow.example.org"); !IsTemporary(err) || time.Since(t0) > 500*time.Millisecond {
		t.Fatalf("ctx: %v after %v", err, time.Since(t0))
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	os.WriteFile(rc, []byte("# test\nsearch example.org\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"), 0o644)
	r, err := New(Options{resolvConf: rc})
	if err != nil || r.Server() != "192.0.2.53:53" || r.TrustAD() || r.timeout != defaultTimeout {
		t.Fatalf("resolv.conf: %v %v", r, err)
	}
	if r, _ := New(Options{resolvConf: rc, TrustADAuto: true}); r.TrustAD() {
		t.Error("auto trusts a remote resolv.conf nameserver")
	}
	os.WriteFile(rc, []byte("nameserver 127.0.0.53\noptions edns0 trust-ad\n"), 0o644)
	if r, _ := New(Options{resolvConf: rc, TrustADAuto: true}); !r.TrustAD() || r.Server() != "127.0.0.53:53" {
		t.Error("auto does not trust a loopback resolv.conf nameserver")
	}
	if r, _ := New(Options{Server: "127.0.0.1:5353", TrustADAuto: true}); !r.TrustAD() {
		t.Error("auto does not trust a loopback server")
	}
	if r, _ := New(Options{Server: "192.0.2.1:53", TrustAD: true, TrustADAuto: true}); r.TrustAD() {
		t.Error("auto trusts a remote server")
	}
	os.WriteFile(rc, []byte("search example.org\n"), 0o644)
	if _, err := New(Options{resolvConf: rc}); err == nil || !strings.Contains(err.Error(), "nameserver") {
		t.Fatalf("empty resolv.conf: %v", err)
	}
	if _, err := New(Options{resolvConf: filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("missing resolv.conf accepted")
	}
	for in, want := range map[string]string{"127.0.0.1": "127.0.0.1:53", "::1": "[::1]:53", "[::1]": "[::1]:53", "[::1]:5353": "[::1]:5353", "ns.example:53": "ns.example:53"} {
		r, err := New(Options{Server: in})
		if err != nil || r.Server() != want {
			t.Errorf("New(%q): %v %v", in, r, err)
		}
	}
	for _, bad := range []string{":53", "1.2.3.4:"} {
		if _, err := New(Options{Server: bad}); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
	if _, err := New(Options{Server: "127.0.0.1:53", Timeout: -1}); err == nil {
		t.Error("negative timeout accepted")
	}
	for in, want := range map[string]bool{"": false, "127.0.0.1:53": true, "127.0.0.53": true, "[::1]:53": true, "::1": true,
		"192.0.2.1:53": false, "localhost:53": false, "8.8.8.8": false} {
		if DefaultTrustAD(in) != want {
			t.Errorf("DefaultTrustAD(%q) != %v", in, want)
		}
	}
}

func TestSPFAdapter(t *testing.T) {
	s := startDNS(t)
	s.Zone("example.org", dnsserver.Insecure).
		TXT("@", "v=spf1 mx a:relay.example.org ip4:198.51.100.0/24 -all").
		MX("@", 10, "mx").A("mx", "192.0.2.1").AAAA("relay", "2001:db8::25").
		TXT("soft", "v=spf1 ~all")
	s.Zone("2.0.192.in-addr.arpa", dnsserver.Insecure).Add("7 PTR host.ptr.example.org.")
	s.Zone("ptr.example.org", dnsserver.Insecure).A("host", "192.0.2.7").TXT("@", "v=spf1 ptr -all")
	r := newRes(t, s.Addr(), true)
	check := func(ip, sender string) spf.Result {
		res, _ := spf.CheckHostWithSender(net.ParseIP(ip), "helo.example", sender,
			spf.WithResolver(r.SPFResolver()), spf.WithContext(context.Background()))
		return res
	}
	for _, c := range []struct {
		ip, sender string
		want       spf.Result
	}{
		{"192.0.2.1", "a@example.org", spf.Pass},
		{"198.51.100.9", "a@example.org", spf.Pass},
		{"2001:db8::25", "a@example.org", spf.Pass},
		{"203.0.113.1", "a@example.org", spf.Fail},
		{"203.0.113.1", "a@soft.example.org", spf.SoftFail},
		{"203.0.113.1", "a@none.example.org", spf.None},
		{"192.0.2.7", "a@ptr.example.org", spf.Pass},
		{"192.0.2.8", "a@ptr.example.org", spf.Fail},
	} {
		if got := check(c.ip, c.sender); got != c.want {
			t.Errorf("SPF %s %s = %s, want %s", c.ip, c.sender, got, c.want)
		}
	}
	s.Fail("example.org", dns.RcodeServerFailure, dns.TypeTXT)
	if got := check("192.0.2.1", "a@example.org"); got != spf.TempError {
		t.Errorf("SPF SERVFAIL = %s", got)
	}
}
