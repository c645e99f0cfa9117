package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// hostile is a DNS server whose answers the test writes by hand, to play
// a broken or malicious resolver.
type hostile struct {
	addr   string
	mu     sync.Mutex
	answer func(req *dns.Msg, network string) *dns.Msg
}

func startHostile(t *testing.T) *hostile {
	t.Helper()
	h := &hostile{}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Skipf("no TCP on the UDP port: %v", err)
	}
	h.addr = pc.LocalAddr().String()
	serve := func(network string) dns.HandlerFunc {
		return func(w dns.ResponseWriter, req *dns.Msg) {
			h.mu.Lock()
			f := h.answer
			h.mu.Unlock()
			if m := f(req, network); m != nil {
				w.WriteMsg(m)
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	us := &dns.Server{PacketConn: pc, Handler: serve("udp"), NotifyStartedFunc: wg.Done}
	ts := &dns.Server{Listener: l, Handler: serve("tcp"), NotifyStartedFunc: wg.Done}
	go us.ActivateAndServe()
	go ts.ActivateAndServe()
	wg.Wait()
	t.Cleanup(func() { us.Shutdown(); ts.Shutdown() })
	return h
}

func (h *hostile) set(f func(req *dns.Msg, network string) *dns.Msg) {
	h.mu.Lock()
	h.answer = f
	h.mu.Unlock()
}

func rr(s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return r
}

func TestHostileAnswers(t *testing.T) {
	h := startHostile(t)
	r := newRes(t, h.addr, true)
	ctx := context.Background()

	// Records off the chain, of other types and classes are ignored.
	h.set(func(req *dns.Msg, _ string) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		m.AuthenticatedData = true
		m.Answer = []dns.RR{
			rr("evil.example. 60 IN A 203.0.113.66"),
			rr("www.example.org. 60 IN CNAME host.example.net."),
			rr("www.example.org. 60 IN A 203.0.113.67"), // beside a CNAME: not on the chain
			rr("host.example.net. 60 IN MX 10 mx.evil."),
			rr("host.example.net. 60 CH A 203.0.113.68"),
			rr("HOST.example.NET. 60 IN A 192.0.2.1"),
		}
		m.Extra = append(m.Extra, rr("host.example.net. 60 IN A 203.0.113.69"))
		if req.Question[0].Qtype != dns.TypeA {
			m.Answer = m.Answer[:2]
		}
		return m
	})
	ips, secure, err := r.IP(ctx, "www.example.org")
	if err != nil || !secure || len(ips) != 1 || ips[0].String() != "192.0.2.1" {
		t.Fatalf("filtered: %v %v %v", ips, secure, err)
	}

	// A wrong question in the answer is an error, not data.
	h.set(func(req *dns.Msg, _ string) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Question[0].Name = "other.example."
		m.Answer = []dns.RR{rr("other.example. 60 IN TXT \"x\"")}
		return m
	})
	if _, _, err := r.TXT(ctx, "www.example.org"); err == nil || !IsTemporary(err) {
		t.Fatalf("mismatched question: %v", err)
	}
	h.set(func(req *dns.Msg, _ string) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Response = false
		return m
	})
	if _, _, err := r.TXT(ctx, "www.example.org"); err == nil || !IsTemporary(err) {
		t.Fatalf("not a response: %v", err)
	}

	// Huge answers (over TCP) are capped.
	h.set(func(req *dns.Msg, network string) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		if network == "udp" {
			m.Truncated = true
			return m
		}
		for i := range 1500 {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))})
		}
		if req.Question[0].Qtype != dns.TypeA {
			m.Answer = nil
		}
		return m
	})
	ips, _, err = r.IP(ctx, "big.example")
	if err != nil || len(ips) != maxRecords {
		t.Fatalf("huge answer: %d %v", len(ips), err)
	}

	// A CNAME loop inside one answer.
	h.set(func(req *dns.Msg, _ string) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Answer = []dns.RR{rr("a.example. 60 IN CNAME b.example."), rr("b.example. 60 IN CNAME a.example.")}
		return m
	})
	if _, _, err := r.IP(ctx, "a.example"); err == nil || !IsTemporary(err) {
		t.Fatalf("loop: %v", err)
	}

	// An endless chain of CNAMEs across answers is cut.
	var n atomic.Int32
	h.set(func(req *dns.Msg, _ string) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Answer = []dns.RR{rr(fmt.Sprintf("%s 60 IN CNAME n%d.example.", req.Question[0].Name, n.Add(1)))}
		return m
	})
	if _, _, err := r.TXT(ctx, "start.example"); err == nil || !IsTemporary(err) || n.Load() > maxCNAMEHops+2 {
		t.Fatalf("endless chain: %v after %d queries", err, n.Load())
	}

	// A chain that stops at a target without data is followed by a new
	// query for the target, and secure only if both answers are.
	h.set(func(req *dns.Msg, _ string) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		switch req.Question[0].Name {
		case "mx.example.org.":
			m.AuthenticatedData = true
			m.Answer = []dns.RR{rr("mx.example.org. 60 IN CNAME mx.hoster.example.")}
		case "mx.hoster.example.":
			m.Answer = []dns.RR{rr("mx.hoster.example. 60 IN TLSA 3 1 1 aabb")}
		}
		return m
	})
	tl, secure, err := r.TLSA(ctx, "mx.example.org")
	if err != nil || secure || len(tl) != 1 || tl[0].Certificate != "aabb" {
		t.Fatalf("followed chain: %v %v %v", tl, secure, err)
	}

	// Rcodes.
	for rc, check := range map[int]func(error) bool{
		dns.RcodeServerFailure: func(err error) bool { return errors.Is(err, ErrBogus) && IsTemporary(err) },
		dns.RcodeRefused:       func(err error) bool { return IsTemporary(err) && !errors.Is(err, ErrBogus) },
		dns.RcodeFormatError:   func(err error) bool { return IsTemporary(err) },
		dns.RcodeNameError:     func(err error) bool { return IsNXDomain(err) && !IsTemporary(err) },
	} {
		h.set(func(req *dns.Msg, _ string) *dns.Msg {
			m := new(dns.Msg)
			m.SetRcode(req, rc)
			m.Answer = []dns.RR{rr("x.example. 60 IN TXT \"ignored\"")}
			if rc == dns.RcodeServerFailure {
				m.SetEdns0(1232, true)
				m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeDNSBogus, ExtraText: "signature expired"})
			}
			return m
		})
		txt, _, err := r.TXT(ctx, "x.example")
		if !check(err) || txt != nil {
			t.Errorf("rcode %s: %v %v", dns.RcodeToString[rc], txt, err)
		}
		if rc == dns.RcodeServerFailure {
			t.Log(err)
		}
	}

	// Garbage on the wire: a timeout, never a panic.
	h.set(func(req *dns.Msg, _ string) *dns.Msg { return nil })
	r2, _ := New(Options{Server: h.addr, Timeout: 100 * time.Millisecond})
	if _, _, err := r2.MX(ctx, "x.example"); !IsTemporary(err) {
		t.Fatalf("silence: %v", err)
	}
}

func TestExtractNeverPanics(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	m.Answer = []dns.RR{nil, &dns.CNAME{Hdr: dns.RR_Header{Name: "a.example.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET}, Target: ""},
		&dns.MX{Hdr: dns.RR_Header{Name: "a.example.", Rrtype: dns.TypeA, Class: dns.ClassINET}, Mx: "x."}}
	rrs, end, err := extract(m, "a.example.", dns.TypeA)
	if len(rrs) != 0 || err == nil && end != "a.example." {
		t.Fatalf("%v %q %v", rrs, end, err)
	}
}
