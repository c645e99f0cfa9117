package dane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
)

// pki is a test hierarchy: root -> intermediate -> leaves.
type pki struct {
	root, inter                *ca.CA
	leaf, expired, wrongName   []*x509.Certificate // leaf, intermediate (root not included)
	wildcard, selfSigned       []*x509.Certificate
	other                      []*x509.Certificate // a leaf from another hierarchy
	rootCert, interCert, leaf0 *x509.Certificate
}

var testPKI *pki

func chainOf(t testing.TB, c tls.Certificate, err error) []*x509.Certificate {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for _, der := range c.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
	return out
}

func getPKI(t testing.TB) *pki {
	t.Helper()
	if testPKI != nil {
		return testPKI
	}
	root, err := ca.New("DANE test root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Intermediate("DANE test intermediate")
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.New("other root")
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{root: root, inter: inter, rootCert: root.Certificate(), interCert: inter.Certificate()}
	c, err := inter.Issue("mx.example.org")
	p.leaf = chainOf(t, c, err)
	c, err = inter.IssueWith(ca.LeafOptions{Expired: true}, "mx.example.org")
	p.expired = chainOf(t, c, err)
	c, err = inter.Issue("elsewhere.example.net")
	p.wrongName = chainOf(t, c, err)
	c, err = inter.Issue("*.example.org")
	p.wildcard = chainOf(t, c, err)
	c, err = ca.SelfSigned("mx.example.org")
	p.selfSigned = chainOf(t, c, err)
	c, err = other.Issue("mx.example.org")
	p.other = chainOf(t, c, err)
	p.leaf0 = p.leaf[0]
	testPKI = p
	return p
}

func rec(usage, sel, mt uint8, c *x509.Certificate) *dns.TLSA {
	return &dns.TLSA{Hdr: dns.RR_Header{Name: "_25._tcp.mx.example.org.", Rrtype: dns.TypeTLSA, Class: dns.ClassINET},
		Usage: usage, Selector: sel, MatchingType: mt, Certificate: dnsserver.TLSAData(c, sel, mt)}
}

func withRoot(chain []*x509.Certificate, root *x509.Certificate) []*x509.Certificate {
	return append(append([]*x509.Certificate(nil), chain...), root)
}

var names = []string{"mx.example.org"}

// TestVerifyEveryCombination crosses usages, selectors and matching types
// with certificates from the testbed CA.
func TestVerifyEveryCombination(t *testing.T) {
	p := getPKI(t)
	type setup struct {
		name   string
		chain  []*x509.Certificate
		target func() *x509.Certificate // the certificate the record names
		names  []string
	}
	type want struct {
		ok  bool
		err error // errors.Is target, or nil for "any error"
	}
	cases := []struct {
		setup
		want map[uint8]want // by usage
	}{
		{setup{"leaf record, good leaf", p.leaf, func() *x509.Certificate { return p.leaf[0] }, names},
			map[uint8]want{DANEEE: {ok: true}, DANETA: {err: ErrNoMatch}, PKIXEE: {err: ErrNoUsable}, PKIXTA: {err: ErrNoUsable}}},
		{setup{"leaf record, expired leaf", p.expired, func() *x509.Certificate { return p.expired[0] }, names},
			map[uint8]want{DANEEE: {ok: true}, DANETA: {err: ErrNoMatch}, PKIXEE: {err: ErrNoUsable}}},
		{setup{"leaf record, wrong-name leaf", p.wrongName, func() *x509.Certificate { return p.wrongName[0] }, names},
			map[uint8]want{DANEEE: {ok: true}, DANETA: {err: ErrNoMatch}}},
		{setup{"leaf record, self-signed leaf", p.selfSigned, func() *x509.Certificate { return p.selfSigned[0] }, names},
			map[uint8]want{DANEEE: {ok: true}, DANETA: {err: ErrNoMatch}, PKIXEE: {err: ErrNoUsable}}},
		{setup{"intermediate record, good leaf", p.leaf, func() *x509.Certificate { return p.interCert }, names},
			map[uint8]want{DANETA: {ok: true}, DANEEE: {err: ErrNoMatch}, PKIXTA: {err: ErrNoUsable}}},
		{setup{"root record, root in chain", withRoot(p.leaf, p.rootCert), func() *x509.Certificate { return p.rootCert }, names},
			map[uint8]want{DANETA: {ok: true}, DANEEE: {err: ErrNoMatch}, PKIXTA: {err: ErrNoUsable}}},
		{setup{"root record, root not presented", p.leaf, func() *x509.Certificate { return p.rootCert }, names},
			map[uint8]want{DANETA: {err: ErrNoMatch}, DANEEE: {err: ErrNoMatch}}},
		{setup{"intermediate record, expired leaf", p.expired, func() *x509.Certificate { return p.interCert }, names},
			map[uint8]want{DANETA: {ok: false}, DANEEE: {err: ErrNoMatch}}},
		{setup{"intermediate record, wrong-name leaf", p.wrongName, func() *x509.Certificate { return p.interCert }, names},
			map[uint8]want{DANETA: {ok: false}, DANEEE: {err: ErrNoMatch}}},
		{setup{"intermediate record, wrong name but base domain given", p.wrongName, func() *x509.Certificate { return p.interCert },
			[]string{"elsewhere.example.net.", "mx.example.org"}},
			map[uint8]want{DANETA: {ok: true}}},
		{setup{"intermediate record, wildcard leaf", p.wildcard, func() *x509.Certificate { return p.interCert }, names},
			map[uint8]want{DANETA: {ok: true}}},
		{setup{"intermediate record, leaf of another CA", p.other, func() *x509.Certificate { return p.interCert }, names},
			map[uint8]want{DANETA: {err: ErrNoMatch}, DANEEE: {err: ErrNoMatch}}},
		{setup{"intermediate presented by another CA's leaf", append(p.other[:1:1], p.interCert), func() *x509.Certificate { return p.interCert }, names},
			map[uint8]want{DANETA: {ok: false}}},
	}
	for _, c := range cases {
		for usage, w := range c.want {
			for sel := uint8(0); sel <= 1; sel++ {
				for mt := uint8(0); mt <= 2; mt++ {
					name := fmt.Sprintf("%s/usage%d/sel%d/mt%d", c.name, usage, sel, mt)
					t.Run(name, func(t *testing.T) {
						ok, used, err := Verify([]*dns.TLSA{rec(usage, sel, mt, c.target())}, c.chain, c.names)
						if ok != w.ok {
							t.Fatalf("ok = %v (%v), want %v", ok, err, w.ok)
						}
						if ok {
							if used != usage || err != nil {
								t.Fatalf("used %d err %v", used, err)
							}
							return
						}
						if err == nil {
							t.Fatal("failure without error")
						}
						if w.err != nil && !errors.Is(err, w.err) {
							t.Fatalf("err = %v, want %v", err, w.err)
						}
					})
				}
			}
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	p := getPKI(t)
	// Expired leaf under DANE-TA: a validation error naming expiry.
	_, _, err := Verify([]*dns.TLSA{rec(DANETA, 1, 1, p.interCert)}, p.expired, names)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired: %v", err)
	}
	var ne *NameError
	_, _, err = Verify([]*dns.TLSA{rec(DANETA, 1, 1, p.interCert)}, p.wrongName, names)
	if !errors.As(err, &ne) {
		t.Errorf("wrong name: %v", err)
	}
	if ok, _, err := Verify([]*dns.TLSA{rec(DANEEE, 1, 1, p.leaf0)}, nil, names); ok || !errors.Is(err, ErrNoChain) {
		t.Errorf("empty chain: %v %v", ok, err)
	}
	if ok, _, err := Verify(nil, p.leaf, names); ok || !errors.Is(err, ErrNoUsable) {
		t.Errorf("no records: %v %v", ok, err)
	}
	// The leaf itself is no trust anchor for DANE-TA.
	if ok, _, _ := Verify([]*dns.TLSA{rec(DANETA, 0, 1, p.leaf0)}, p.leaf, names); ok {
		t.Error("DANE-TA matched the leaf")
	}
}

func TestVerifyMixedRecords(t *testing.T) {
	p := getPKI(t)
	good := rec(DANEEE, 1, 1, p.leaf0)
	bad := rec(DANEEE, 1, 1, p.other[0])
	pkix := rec(PKIXEE, 1, 1, p.leaf0)
	ta := rec(DANETA, 1, 1, p.interCert)
	for _, tc := range []struct {
		name  string
		recs  []*dns.TLSA
		ok    bool
		usage uint8
	}{
		{"one good among bad", []*dns.TLSA{bad, pkix, good}, true, DANEEE},
		{"EE before TA", []*dns.TLSA{ta, good}, true, DANEEE},
		{"TA when EE does not match", []*dns.TLSA{bad, ta}, true, DANETA},
		{"only bad", []*dns.TLSA{bad, pkix}, false, 0},
		{"nil record", []*dns.TLSA{nil, good}, true, DANEEE},
	} {
		ok, usage, err := Verify(tc.recs, p.leaf, names)
		if ok != tc.ok || usage != tc.usage {
			t.Errorf("%s: ok=%v usage=%d err=%v", tc.name, ok, usage, err)
		}
	}
}

// TestAgility: a SHA2-512 record for a usage/selector pair hides the
// SHA2-256 records of that pair (RFC 7671 section 9).
func TestAgility(t *testing.T) {
	p := getPKI(t)
	good256 := rec(DANEEE, 1, 1, p.leaf0)
	bad512 := rec(DANEEE, 1, 2, p.other[0])
	if ok, _, _ := Verify([]*dns.TLSA{good256, bad512}, p.leaf, names); ok {
		t.Error("a matching SHA2-256 record was used beside a SHA2-512 one")
	}
	// Another selector is not affected, nor Full(0).
	if ok, _, _ := Verify([]*dns.TLSA{rec(DANEEE, 0, 1, p.leaf0), bad512}, p.leaf, names); !ok {
		t.Error("selector 0 SHA2-256 hidden by selector 1 SHA2-512")
	}
	if ok, _, _ := Verify([]*dns.TLSA{rec(DANEEE, 1, 0, p.leaf0), bad512}, p.leaf, names); !ok {
		t.Error("Full(0) hidden by SHA2-512")
	}
}

func TestUsable(t *testing.T) {
	p := getPKI(t)
	good := rec(DANEEE, 1, 1, p.leaf0)
	mk := func(u, s, m uint8, data string) *dns.TLSA {
		return &dns.TLSA{Usage: u, Selector: s, MatchingType: m, Certificate: data}
	}
	h32 := strings.Repeat("ab", 32)
	h64 := strings.Repeat("ab", 64)
	for _, tc := range []struct {
		name string
		r    *dns.TLSA
		ok   bool
	}{
		{"good", good, true},
		{"DANE-TA sha256", mk(2, 1, 1, h32), true},
		{"DANE-EE sha512", mk(3, 0, 2, h64), true},
		{"full", mk(3, 1, 0, "3059"), true},
		{"PKIX-TA", mk(0, 1, 1, h32), false},
		{"PKIX-EE", mk(1, 1, 1, h32), false},
		{"usage 4", mk(4, 1, 1, h32), false},
		{"usage 255", mk(255, 1, 1, h32), false},
		{"selector 2", mk(3, 2, 1, h32), false},
		{"mtype 3", mk(3, 1, 3, h32), false},
		{"sha256 short", mk(3, 1, 1, h32[:62]), false},
		{"sha256 long", mk(3, 1, 1, h32+"00"), false},
		{"sha256 given sha512 length", mk(3, 1, 1, h64), false},
		{"sha512 short", mk(3, 1, 2, h32), false},
		{"full empty", mk(3, 1, 0, ""), false},
		{"bad hex", mk(3, 1, 1, strings.Repeat("zz", 32)), false},
		{"odd hex", mk(3, 1, 0, "abc"), false},
	} {
		got := len(Usable([]*dns.TLSA{tc.r})) == 1
		if got != tc.ok {
			t.Errorf("%s: usable = %v", tc.name, got)
		}
	}
	if n := len(Usable([]*dns.TLSA{nil, good, mk(0, 1, 1, h32), good})); n != 2 {
		t.Errorf("Usable kept %d", n)
	}
}

func TestVerifyAtTime(t *testing.T) {
	p := getPKI(t)
	ta := []*dns.TLSA{rec(DANETA, 1, 1, p.interCert)}
	if ok, _, err := verifyAt(ta, p.leaf, names, time.Now().AddDate(0, 2, 0)); ok {
		t.Errorf("DANE-TA accepted a leaf past its NotAfter: %v", err)
	}
	ee := []*dns.TLSA{rec(DANEEE, 1, 1, p.leaf0)}
	if ok, _, err := verifyAt(ee, p.leaf, names, time.Now().AddDate(2, 0, 0)); !ok {
		t.Errorf("DANE-EE checked dates: %v", err)
	}
}

func TestVerifyConnection(t *testing.T) {
	p := getPKI(t)
	var got uint8
	f := VerifyConnection([]*dns.TLSA{rec(DANETA, 0, 2, p.interCert)}, names, func(u uint8) { got = u })
	if err := f(tls.ConnectionState{PeerCertificates: p.leaf}); err != nil || got != DANETA {
		t.Fatalf("err %v usage %d", err, got)
	}
	if err := f(tls.ConnectionState{PeerCertificates: p.other}); err == nil {
		t.Fatal("other CA accepted")
	}
}

// TestRealHandshake runs VerifyConnection in a real TLS handshake over
// loopback: DANE-TA with the intermediate, then a record that does not
// match, which must fail the handshake.
func TestRealHandshake(t *testing.T) {
	root, _ := ca.New("hs root")
	inter, _ := root.Intermediate("hs inter")
	cert, err := inter.Issue("mx.example.org")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	dial := func(recs []*dns.TLSA) (uint8, error) {
		var used uint8
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "mx.example.org", InsecureSkipVerify: true,
			VerifyConnection: VerifyConnection(recs, []string{"mx.example.org"}, func(u uint8) { used = u })})
		if err == nil {
			c.Close()
		}
		return used, err
	}
	if used, err := dial([]*dns.TLSA{rec(DANETA, 1, 1, inter.Certificate())}); err != nil || used != DANETA {
		t.Fatalf("DANE-TA: %v %d", err, used)
	}
	if _, err := dial([]*dns.TLSA{rec(DANEEE, 1, 1, getPKI(t).leaf0)}); err == nil {
		t.Fatal("wrong record accepted")
	}
}
