package dnsserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/posthorn/posthorn/testbed/wait"
)

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ask sends a query with the AD bit set (as a stub trusting a validating
// resolver does) over network.
func ask(t *testing.T, s *Server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.AuthenticatedData = true
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s %s/%s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestRecordTypes(t *testing.T) {
	s := start(t)
	z := s.Zone("example.org", Secure)
	z.A("mx", "127.0.0.1", "127.0.0.2").
		AAAA("mx.example.org", "::1").
		MX("@", 10, "mx").
		MX("", 20, "mx.other.net").
		TXT("_mta-sts", "v=STSv1; id=1").
		TLSA("_25._tcp.mx", 3, 1, 1, "ABCDEF0123").
		CNAME("www", "mx")
	s.Zone("null.example", Insecure).NullMX("@")

	r := ask(t, s, "udp", "mx.example.org", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 || !r.AuthenticatedData {
		t.Fatalf("A: %v", r)
	}
	if a := r.Answer[0].(*dns.A); a.A.String() != "127.0.0.1" || a.Hdr.Name != "mx.example.org." {
		t.Fatalf("A: %v", a)
	}
	r = ask(t, s, "tcp", "MX.Example.ORG.", dns.TypeAAAA)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "::1" {
		t.Fatalf("AAAA: %v", r)
	}
	r = ask(t, s, "udp", "example.org", dns.TypeMX)
	if len(r.Answer) != 2 {
		t.Fatalf("MX: %v", r)
	}
	hosts := map[string]uint16{}
	for _, rr := range r.Answer {
		mx := rr.(*dns.MX)
		hosts[mx.Mx] = mx.Preference
	}
	if hosts["mx.example.org."] != 10 || hosts["mx.other.net."] != 20 {
		t.Fatalf("MX: %v", hosts)
	}
	r = ask(t, s, "udp", "null.example", dns.TypeMX)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.MX).Mx != "." || r.Answer[0].(*dns.MX).Preference != 0 {
		t.Fatalf("null MX: %v", r)
	}
	r = ask(t, s, "udp", "_mta-sts.example.org", dns.TypeTXT)
	if len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, "") != "v=STSv1; id=1" {
		t.Fatalf("TXT: %v", r)
	}
	r = ask(t, s, "udp", "_25._tcp.mx.example.org", dns.TypeTLSA)
	if len(r.Answer) != 1 {
		t.Fatalf("TLSA: %v", r)
	}
	if tl := r.Answer[0].(*dns.TLSA); tl.Usage != 3 || tl.Selector != 1 || tl.MatchingType != 1 || tl.Certificate != "abcdef0123" {
		t.Fatalf("TLSA: %v", tl)
	}
	r = ask(t, s, "udp", "example.org", dns.TypeSOA)
	if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("SOA: %v", r)
	}

	z.Add("srv1 120 IN A 127.0.0.9\n_smtp._tls TXT \"v=TLSRPTv1; rua=mailto:r@example.org\"")
	r = ask(t, s, "udp", "srv1.example.org", dns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 120 {
		t.Fatalf("Add: %v", r)
	}
	r = ask(t, s, "udp", "_smtp._tls.example.org", dns.TypeTXT)
	if len(r.Answer) != 1 {
		t.Fatalf("Add TXT: %v", r)
	}

	z.Remove("mx", dns.TypeA)
	r = ask(t, s, "udp", "mx.example.org", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("after Remove: %v", r)
	}
}

func TestModes(t *testing.T) {
	s := start(t)
	s.Zone("secure.test", Secure).A("a", "127.0.0.1")
	s.Zone("insecure.test", Insecure).A("a", "127.0.0.1")
	s.Zone("bogus.test", Bogus).A("a", "127.0.0.1")

	if r := ask(t, s, "udp", "a.secure.test", dns.TypeA); !r.AuthenticatedData || len(r.Answer) != 1 {
		t.Errorf("secure: %v", r)
	}
	// NXDOMAIN in a secure zone is authenticated too.
	if r := ask(t, s, "udp", "nope.secure.test", dns.TypeA); !r.AuthenticatedData || r.Rcode != dns.RcodeNameError {
		t.Errorf("secure nxdomain: %v", r)
	}
	if r := ask(t, s, "udp", "a.insecure.test", dns.TypeA); r.AuthenticatedData || len(r.Answer) != 1 {
		t.Errorf("insecure: %v", r)
	}
	for _, n := range []string{"a.bogus.test", "nope.bogus.test", "bogus.test"} {
		if r := ask(t, s, "udp", n, dns.TypeA); r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 || r.AuthenticatedData {
			t.Errorf("bogus %s: %v", n, r)
		}
	}
	// No AD without AD/DO in the query.
	m := new(dns.Msg)
	m.SetQuestion("a.secure.test.", dns.TypeA)
	r, _, err := new(dns.Client).Exchange(m, s.Addr())
	if err != nil || r.AuthenticatedData {
		t.Errorf("plain query: %v %v", r, err)
	}
	// DO bit (EDNS0) also asks for AD.
	m.SetEdns0(1232, true)
	r, _, err = new(dns.Client).Exchange(m, s.Addr())
	if err != nil || !r.AuthenticatedData || r.IsEdns0() == nil {
		t.Errorf("DO query: %v %v", r, err)
	}
	// Mode switch at runtime.
	s.Zone("secure.test", Insecure)
	if r := ask(t, s, "udp", "a.secure.test", dns.TypeA); r.AuthenticatedData {
		t.Errorf("after switch: %v", r)
	}
	// Not served: REFUSED.
	if r := ask(t, s, "udp", "example.com", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("unserved: %v", r)
	}
}

func TestNXDomainNoData(t *testing.T) {
	s := start(t)
	s.Zone("example.org", Secure).A("mx", "127.0.0.1").TLSA("_25._tcp.mx", 3, 1, 1, "00")
	r := ask(t, s, "udp", "nope.example.org", dns.TypeA)
	if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("NXDOMAIN: %v", r)
	}
	r = ask(t, s, "udp", "mx.example.org", dns.TypeMX)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("NODATA: %v", r)
	}
	// Empty non-terminal: NODATA, not NXDOMAIN.
	r = ask(t, s, "udp", "_tcp.mx.example.org", dns.TypeTXT)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("ENT: %v", r)
	}
}

func TestCNAME(t *testing.T) {
	s := start(t)
	z := s.Zone("example.org", Secure)
	z.CNAME("www", "web").CNAME("web", "host.other.test").CNAME("ext", "mx.elsewhere.net").CNAME("dangling", "nope")
	s.Zone("other.test", Insecure).A("host", "127.0.0.5")

	r := ask(t, s, "udp", "www.example.org", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 3 {
		t.Fatalf("chain: %v", r)
	}
	if a, ok := r.Answer[2].(*dns.A); !ok || a.A.String() != "127.0.0.5" {
		t.Fatalf("chain end: %v", r.Answer[2])
	}
	if r.AuthenticatedData {
		t.Fatal("chain through an insecure zone must not be AD")
	}
	r = ask(t, s, "udp", "www.example.org", dns.TypeCNAME)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.CNAME).Target != "web.example.org." {
		t.Fatalf("CNAME query: %v", r)
	}
	r = ask(t, s, "udp", "ext.example.org", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !r.AuthenticatedData {
		t.Fatalf("outside: %v", r)
	}
	r = ask(t, s, "udp", "dangling.example.org", dns.TypeA)
	if r.Rcode != dns.RcodeNameError || len(r.Answer) != 1 {
		t.Fatalf("dangling: %v", r)
	}
	z.CNAME("loop1", "loop2").CNAME("loop2", "loop1")
	if r = ask(t, s, "udp", "loop1.example.org", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("loop: %v", r)
	}
}

func TestTruncateTCPRetry(t *testing.T) {
	s := start(t)
	s.Zone("example.org", Secure).MX("@", 10, "mx").A("mx", "127.0.0.1")
	s.Truncate("example.org", dns.TypeMX)

	r := ask(t, s, "udp", "example.org", dns.TypeMX)
	if !r.Truncated || len(r.Answer) != 0 {
		t.Fatalf("udp: %v", r)
	}
	r = ask(t, s, "tcp", "example.org", dns.TypeMX)
	if r.Truncated || len(r.Answer) != 1 || !r.AuthenticatedData {
		t.Fatalf("tcp: %v", r)
	}
	// Other types at the same name are not affected.
	if r = ask(t, s, "udp", "mx.example.org", dns.TypeA); r.Truncated {
		t.Fatalf("A: %v", r)
	}
	q := s.Queries()
	if len(q) != 3 || q[0].Net != "udp" || q[1].Net != "tcp" || q[1].Name != "example.org." || q[1].Type != dns.TypeMX {
		t.Fatalf("queries: %+v", q)
	}

	// Large answers are truncated by size on UDP, as a real server does.
	z := s.Zone("big.test", Insecure)
	for i := range 40 {
		z.TXT("t", fmt.Sprintf("%02d %s", i, strings.Repeat("x", 60)))
	}
	if r = ask(t, s, "udp", "t.big.test", dns.TypeTXT); !r.Truncated {
		t.Fatalf("big udp not truncated: %d answers", len(r.Answer))
	}
	if r = ask(t, s, "tcp", "t.big.test", dns.TypeTXT); r.Truncated || len(r.Answer) != 40 {
		t.Fatalf("big tcp: %d answers", len(r.Answer))
	}
}

func TestBehaviours(t *testing.T) {
	s := start(t)
	s.Zone("example.org", Secure).A("slow", "127.0.0.1").A("fail", "127.0.0.1").A("drop", "127.0.0.1")
	s.Delay("slow.example.org", 150*time.Millisecond)
	s.Fail("fail.example.org.", dns.RcodeServerFailure)
	s.Drop("drop.example.org")

	t0 := time.Now()
	if r := ask(t, s, "udp", "slow.example.org", dns.TypeA); len(r.Answer) != 1 || time.Since(t0) < 150*time.Millisecond {
		t.Fatalf("delay: %v after %v", r, time.Since(t0))
	}
	if r := ask(t, s, "udp", "fail.example.org", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("fail: %v", r)
	}
	m := new(dns.Msg)
	m.SetQuestion("drop.example.org.", dns.TypeA)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	if _, _, err := c.Exchange(m, s.Addr()); err == nil {
		t.Fatal("drop: got an answer")
	}
	s.Clear("drop.example.org")
	if r := ask(t, s, "udp", "drop.example.org", dns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("after clear: %v", r)
	}
	// Close does not wait for long delays.
	s.Delay("slow.example.org", time.Hour)
	go func() {
		c := &dns.Client{Timeout: 5 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("slow.example.org.", dns.TypeA)
		c.Exchange(m, s.Addr())
	}()
	wait.For(t, 5*time.Second, "the delayed query to arrive", func() bool {
		return slices.ContainsFunc(s.Queries(), func(q Query) bool { return q.Name == "slow.example.org." })
	})
	t0 = time.Now()
	s.Close()
	if time.Since(t0) > 2*time.Second {
		t.Fatal("close waited for a delayed query")
	}
}

func TestConcurrentEdits(t *testing.T) {
	s := start(t)
	z := s.Zone("example.org", Secure)
	var wg, readers sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			z.A("h", fmt.Sprintf("127.0.0.%d", i%250+1))
			z.Remove("h", dns.TypeA)
			s.Zone("example.org", Mode(i%2))
		}
	}()
	for range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			c := &dns.Client{Timeout: 2 * time.Second}
			for range 50 {
				m := new(dns.Msg)
				m.SetQuestion("h.example.org.", dns.TypeA)
				if _, _, err := c.Exchange(m, s.Addr()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// The edits go on for as long as the readers ask.
	readers.Wait()
	close(stop)
	wg.Wait()
}

func TestTLSAData(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	got := TLSAData(cert, 1, 1)
	want := &dns.TLSA{}
	if err := want.Sign(3, 1, 1, cert); err != nil {
		t.Fatal(err)
	}
	if got != want.Certificate {
		t.Fatalf("TLSAData = %s, miekg says %s", got, want.Certificate)
	}
	if len(TLSAData(cert, 0, 2)) != 128 || TLSAData(cert, 0, 0) == "" {
		t.Fatal("lengths")
	}
}
