package dane

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/testbed/dnsserver"
)

func TestLookup(t *testing.T) {
	p := getPKI(t)
	srv, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	good := dnsserver.TLSAData(p.leaf0, 1, 1)
	sec := srv.Zone("secure.example", dnsserver.Secure)
	sec.A("mx", "127.0.0.1").TLSA("_25._tcp.mx", 3, 1, 1, good).TLSA("_25._tcp.mx", 0, 1, 1, good)
	sec.A("plain", "127.0.0.1")                                     // no TLSA: authenticated denial
	sec.A("pkix", "127.0.0.1").TLSA("_25._tcp.pkix", 1, 1, 1, good) // only unusable
	sec.A("fail", "127.0.0.1").TLSA("_25._tcp.fail", 3, 1, 1, good) // TLSA SERVFAIL (below)
	sec.A("slow", "127.0.0.1").TLSA("_25._tcp.slow", 3, 1, 1, good) // TLSA dropped (below)
	sec.CNAME("alias", "target").A("target", "127.0.0.2").TLSA("_25._tcp.target", 2, 1, 1, good)
	sec.CNAME("alias2", "target2").A("target2", "127.0.0.3").TLSA("_25._tcp.alias2", 3, 1, 1, good)
	sec.CNAME("outside", "mx.insecure.example")
	sec.A("sub", "127.0.0.1")
	sec.A("port", "127.0.0.1").TLSA("_465._tcp.port", 3, 1, 1, good)
	srv.Zone("_tcp.sub.secure.example", dnsserver.Insecure).TLSA("_25._tcp.sub.secure.example", 3, 1, 1, good)
	srv.Zone("insecure.example", dnsserver.Insecure).A("mx", "127.0.0.1").TLSA("_25._tcp.mx", 3, 1, 1, good)
	srv.Zone("bogus.example", dnsserver.Bogus).A("mx", "127.0.0.1").TLSA("_25._tcp.mx", 3, 1, 1, good)
	srv.Fail("_25._tcp.fail.secure.example", dns.RcodeServerFailure, dns.TypeTLSA)
	srv.Drop("_25._tcp.slow.secure.example", dns.TypeTLSA)

	res, err := resolver.New(resolver.Options{Server: srv.Addr(), TrustAD: true, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		host     string
		port     int
		mxSecure bool
		state    State
		nrec     int
		base     string
		isErr    bool
	}{
		{"mx.secure.example.", 25, true, Authenticate, 1, "mx.secure.example", false},
		{"MX.Secure.Example", 25, true, Authenticate, 1, "mx.secure.example", false},
		{"mx.secure.example", 25, false, NoDANE, 0, "", false},
		{"plain.secure.example", 25, true, NoTLSA, 0, "", false},
		{"pkix.secure.example", 25, true, Unusable, 1, "pkix.secure.example", false},
		{"fail.secure.example", 25, true, Indeterminate, 0, "", true},
		{"slow.secure.example", 25, true, Indeterminate, 0, "", true},
		{"alias.secure.example", 25, true, Authenticate, 1, "target.secure.example", false},
		{"alias2.secure.example", 25, true, Authenticate, 1, "alias2.secure.example", false},
		{"outside.secure.example", 25, true, NoDANE, 0, "", false},
		{"sub.secure.example", 25, true, NoDANE, 0, "", false},
		{"port.secure.example", 465, true, Authenticate, 1, "port.secure.example", false},
		{"port.secure.example", 25, true, NoTLSA, 0, "", false},
		{"mx.insecure.example", 25, true, NoDANE, 0, "", false},
		{"mx.bogus.example", 25, true, Indeterminate, 0, "", true},
		{"mx.bogus.example", 25, false, NoDANE, 0, "", false},
	} {
		r, err := LookupHost(ctx, res, tc.host, tc.port, tc.mxSecure)
		if r.State != tc.state || len(r.Records) != tc.nrec || (err != nil) != tc.isErr {
			t.Errorf("%s:%d secure=%v: state %v, %d records, err %v (%s); want %v, %d",
				tc.host, tc.port, tc.mxSecure, r.State, len(r.Records), err, r.Reason, tc.state, tc.nrec)
			continue
		}
		if tc.base != "" && r.Base != tc.base {
			t.Errorf("%s: base %q, want %q", tc.host, r.Base, tc.base)
		}
		if r.Reason == "" {
			t.Errorf("%s: no reason", tc.host)
		}
		if tc.isErr && !errors.Is(err, resolver.ErrBogus) && !resolver.IsTemporary(err) {
			t.Errorf("%s: error %v is neither bogus nor temporary", tc.host, err)
		}
	}

	// The alias' names include both the target and the MX host name.
	r, _ := LookupHost(ctx, res, "alias.secure.example", 25, true)
	if len(r.Names) != 2 || r.Names[0] != "target.secure.example" || r.Names[1] != "alias.secure.example" {
		t.Errorf("names %v", r.Names)
	}
	st, recs, err := Lookup(ctx, res, "mx.secure.example", 25, true)
	if st != Authenticate || len(recs) != 1 || err != nil {
		t.Errorf("Lookup: %v %d %v", st, len(recs), err)
	}
	// The records found authenticate the leaf they were made for.
	if ok, _, err := Verify(recs, p.leaf, []string{"mx.secure.example"}); !ok {
		t.Errorf("verify: %v", err)
	}
	// No DNS traffic when the MX RRset is insecure.
	srv.ResetQueries()
	Lookup(ctx, res, "mx.secure.example", 25, false)
	if q := srv.Queries(); len(q) != 0 {
		t.Errorf("queries for an insecure MX: %v", q)
	}
	// Without trusting AD nothing is secure.
	res2, _ := resolver.New(resolver.Options{Server: srv.Addr(), TrustAD: false})
	if st, _, _ := Lookup(ctx, res2, "mx.secure.example", 25, true); st != NoDANE {
		t.Errorf("without TrustAD: %v", st)
	}
}

func TestStateStrings(t *testing.T) {
	for s := NoDANE; s <= Indeterminate; s++ {
		if s.String() == "" || s.String()[0] == 'S' {
			t.Errorf("%d: %q", s, s)
		}
	}
	if !Authenticate.RequiresTLS() || !Unusable.RequiresTLS() || NoTLSA.RequiresTLS() || Indeterminate.RequiresTLS() {
		t.Error("RequiresTLS")
	}
}
