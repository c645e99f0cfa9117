package resolver

import (
	"testing"

	"github.com/miekg/dns"
)

// FuzzExtract feeds arbitrary answers to the answer-section walk: it must
// never panic, never return more than maxRecords, and only return records
// of the asked type owned by the end of the chain.
func FuzzExtract(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := new(dns.Msg)
		if err := m.Unpack(data); err != nil {
			return
		}
		qname, qtype := "example.org.", dns.TypeA
		if len(m.Question) > 0 {
			qname, qtype = m.Question[0].Name, m.Question[0].Qtype
		}
		rrs, end, err := extract(m, qname, qtype)
		if err != nil {
			return
		}
		if len(rrs) > maxRecords {
			t.Fatalf("%d records", len(rrs))
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype != qtype || !typeMatches(rr, qtype) || rr.Header().Name == "" {
				t.Fatalf("wrong record %v for %s/%d (end %s)", rr, qname, qtype, end)
			}
		}
		extendedError(m)
	})
}

func fuzzSeeds() [][]byte {
	var out [][]byte
	add := func(q string, qt uint16, rrs ...string) {
		m := new(dns.Msg)
		m.SetQuestion(q, qt)
		m.Response = true
		for _, s := range rrs {
			m.Answer = append(m.Answer, rr(s))
		}
		b, err := m.Pack()
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	add("example.org.", dns.TypeMX, "example.org. 60 IN MX 10 mx.example.org.", "example.org. 60 IN MX 0 .")
	add("www.example.org.", dns.TypeA, "www.example.org. 60 IN CNAME a.example.net.", "a.example.net. 60 IN A 192.0.2.1", "evil. 60 IN A 192.0.2.66")
	add("a.example.", dns.TypeAAAA, "a.example. 60 IN CNAME b.example.", "b.example. 60 IN CNAME a.example.")
	add("_25._tcp.mx.example.org.", dns.TypeTLSA, "_25._tcp.mx.example.org. 60 IN TLSA 3 1 1 aabbcc")
	add("example.org.", dns.TypeTXT, "example.org. 60 IN TXT \"v=spf1\" \" -all\"", "example.org. 60 CH TXT \"x\"")
	add("x.example.", dns.TypeCNAME, "x.example. 60 IN CNAME y.example.")
	return out
}
