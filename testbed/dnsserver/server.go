package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Mode says how a zone's answers look to a client that trusts this server
// as its validating resolver.
type Mode int

const (
	// Secure zones answer with the AD bit set (when the query carries the
	// AD or DO bit, as a validating resolver does per RFC 6840 section 5.7).
	Secure Mode = iota
	// Insecure zones answer without the AD bit (unsigned zone).
	Insecure
	// Bogus zones answer SERVFAIL to every query, as a validating
	// resolver does when DNSSEC validation fails.
	Bogus
)

func (m Mode) String() string {
	switch m {
	case Secure:
		return "secure"
	case Insecure:
		return "insecure"
	case Bogus:
		return "bogus"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Query is one query the server received, in arrival order.
type Query struct {
	Name string // question name, lower case, fully qualified
	Type uint16 // question type (dns.TypeA, ...)
	Net  string // "udp" or "tcp"
}

// behaviour is a per-name misbehaviour.
type behaviour struct {
	truncate bool
	delay    time.Duration
	drop     bool
	rcode    int // -1 = none
}

type behaviourKey struct {
	name  string
	qtype uint16 // 0 = every type
}

// Server is a running DNS server. All methods are safe for concurrent use,
// also while queries are being served.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	closeOnce sync.Once
	closed    chan struct{}

	mu         sync.RWMutex
	zones      map[string]*Zone // by canonical origin
	behaviours map[behaviourKey]*behaviour
	queries    []Query
}

// maxQueryLog bounds the query log (oldest entries are dropped).
const maxQueryLog = 10000

// Start starts a server on 127.0.0.1, UDP and TCP on the same free port.
func Start() (*Server, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			lastErr = err
			continue
		}
		s := &Server{
			addr:       addr,
			closed:     make(chan struct{}),
			zones:      make(map[string]*Zone),
			behaviours: make(map[behaviourKey]*behaviour),
		}
		s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve("udp"))}
		s.tcp = &dns.Server{Listener: l, Handler: dns.HandlerFunc(s.serve("tcp"))}
		var started sync.WaitGroup
		started.Add(2)
		s.udp.NotifyStartedFunc = started.Done
		s.tcp.NotifyStartedFunc = started.Done
		go s.udp.ActivateAndServe()
		go s.tcp.ActivateAndServe()
		started.Wait()
		return s, nil
	}
	return nil, fmt.Errorf("dnsserver: no free port for UDP and TCP: %w", lastErr)
}

// Addr returns "127.0.0.1:PORT", the address for both UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// Port returns the port number.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Close stops the server. Delayed and dropped queries are abandoned.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = errors.Join(s.udp.ShutdownContext(ctx), s.tcp.ShutdownContext(ctx))
	})
	return err
}

// Zone returns the zone for origin (e.g. "example.org"), creating it if
// needed, and sets its mode. A new zone has a SOA record at its apex.
// Zones may nest (a zone for "sub.example.org" takes precedence over
// "example.org" for names under it).
func (s *Server) Zone(origin string, mode Mode) *Zone {
	o := canonical(origin)
	s.mu.Lock()
	defer s.mu.Unlock()
	z, ok := s.zones[o]
	if !ok {
		z = &Zone{srv: s, origin: o, records: make(map[string][]dns.RR)}
		soa := &dns.SOA{
			Hdr:     dns.RR_Header{Name: o, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: defaultTTL},
			Ns:      "ns." + trimRoot(o),
			Mbox:    "hostmaster." + trimRoot(o),
			Serial:  1,
			Refresh: 3600,
			Retry:   600,
			Expire:  86400,
			Minttl:  60,
		}
		z.records[o] = []dns.RR{soa}
		s.zones[o] = z
	}
	z.mode = mode
	return z
}

// RemoveZone stops serving the zone; its names then get REFUSED.
func (s *Server) RemoveZone(origin string) {
	s.mu.Lock()
	delete(s.zones, canonical(origin))
	s.mu.Unlock()
}

// Truncate makes UDP answers for name (limited to the given query types,
// or all if none given) come back empty with TC=1, so that the client must
// retry over TCP. TCP answers are unaffected.
func (s *Server) Truncate(name string, qtypes ...uint16) {
	s.setBehaviour(name, qtypes, func(b *behaviour) { b.truncate = true })
}

// Delay makes the server wait d before answering queries for name.
func (s *Server) Delay(name string, d time.Duration, qtypes ...uint16) {
	s.setBehaviour(name, qtypes, func(b *behaviour) { b.delay = d })
}

// Fail makes queries for name answer with rcode (e.g. dns.RcodeServerFailure)
// and empty sections.
func (s *Server) Fail(name string, rcode int, qtypes ...uint16) {
	s.setBehaviour(name, qtypes, func(b *behaviour) { b.rcode = rcode })
}

// Drop makes the server never answer queries for name (client timeout).
func (s *Server) Drop(name string, qtypes ...uint16) {
	s.setBehaviour(name, qtypes, func(b *behaviour) { b.drop = true })
}

// Clear removes all behaviours (Truncate, Delay, Fail, Drop) set for name.
func (s *Server) Clear(name string) {
	n := canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.behaviours {
		if k.name == n {
			delete(s.behaviours, k)
		}
	}
}

func (s *Server) setBehaviour(name string, qtypes []uint16, f func(*behaviour)) {
	n := canonical(name)
	if len(qtypes) == 0 {
		qtypes = []uint16{0}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range qtypes {
		k := behaviourKey{n, t}
		b := s.behaviours[k]
		if b == nil {
			b = &behaviour{rcode: -1}
			s.behaviours[k] = b
		}
		f(b)
	}
}

// Queries returns the queries received so far (at most the last 10000).
func (s *Server) Queries() []Query {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]Query(nil), s.queries...)
}

// ResetQueries empties the query log.
func (s *Server) ResetQueries() {
	s.mu.Lock()
	s.queries = nil
	s.mu.Unlock()
}

// Client returns a miekg/dns client and the server address, a convenience
// for tests: c.Exchange(msg, addr).
func (s *Server) Client() (*dns.Client, string) {
	return &dns.Client{Net: "udp", Timeout: 2 * time.Second}, s.addr
}

func (s *Server) serve(network string) func(dns.ResponseWriter, *dns.Msg) {
	return func(w dns.ResponseWriter, req *dns.Msg) {
		s.handle(network, w, req)
	}
}

func (s *Server) handle(network string, w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNotImplemented)
		if len(req.Question) != 1 {
			m.Rcode = dns.RcodeFormatError
		}
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	qname := strings.ToLower(q.Name)

	s.mu.Lock()
	if len(s.queries) >= maxQueryLog {
		s.queries = append(s.queries[:0], s.queries[len(s.queries)-maxQueryLog/2:]...)
	}
	s.queries = append(s.queries, Query{Name: qname, Type: q.Qtype, Net: network})
	var b behaviour
	b.rcode = -1
	for _, k := range []behaviourKey{{qname, 0}, {qname, q.Qtype}} {
		if x := s.behaviours[k]; x != nil {
			b.truncate = b.truncate || x.truncate
			b.drop = b.drop || x.drop
			if x.delay > b.delay {
				b.delay = x.delay
			}
			if x.rcode >= 0 {
				b.rcode = x.rcode
			}
		}
	}
	s.mu.Unlock()

	if b.drop {
		return
	}
	if b.delay > 0 {
		t := time.NewTimer(b.delay)
		select {
		case <-t.C:
		case <-s.closed:
			t.Stop()
			return
		}
	}

	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	opt := req.IsEdns0()
	udpSize := dns.MinMsgSize
	if opt != nil {
		udpSize = int(opt.UDPSize())
		m.SetEdns0(1232, opt.Do())
	}

	switch {
	case b.rcode >= 0:
		m.Rcode = b.rcode
	case b.truncate && network == "udp":
		m.Truncated = true
	default:
		s.answer(req, m)
	}
	if network == "udp" {
		m.Truncate(udpSize)
	}
	w.WriteMsg(m)
}

// answer fills in m for the question of req from the zones.
func (s *Server) answer(req *dns.Msg, m *dns.Msg) {
	q := req.Question[0]
	wantAD := req.AuthenticatedData || (req.IsEdns0() != nil && req.IsEdns0().Do())

	s.mu.RLock()
	defer s.mu.RUnlock()

	name := strings.ToLower(q.Name)
	secure := true
	seen := map[string]bool{}
	for hop := 0; ; hop++ {
		z := s.zoneFor(name)
		if z == nil {
			if hop == 0 {
				m.Rcode = dns.RcodeRefused
				return
			}
			// CNAME target outside the served zones: stop here.
			break
		}
		if z.mode == Bogus {
			m.Answer = nil
			m.Ns = nil
			m.Rcode = dns.RcodeServerFailure
			return
		}
		if z.mode != Secure {
			secure = false
		}
		rrs, exists := z.lookup(name)
		if !exists {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{z.soa()}
			break
		}
		var match, cname []dns.RR
		for _, rr := range rrs {
			t := rr.Header().Rrtype
			if t == q.Qtype || q.Qtype == dns.TypeANY {
				match = append(match, dns.Copy(rr))
			} else if t == dns.TypeCNAME {
				cname = append(cname, dns.Copy(rr))
			}
		}
		if len(match) > 0 {
			m.Answer = append(m.Answer, match...)
			break
		}
		if len(cname) == 0 {
			m.Ns = []dns.RR{z.soa()} // NODATA
			break
		}
		m.Answer = append(m.Answer, cname[0])
		seen[name] = true
		name = strings.ToLower(cname[0].(*dns.CNAME).Target)
		if seen[name] || hop >= 16 {
			m.Rcode = dns.RcodeServerFailure
			m.Answer = nil
			return
		}
	}
	m.AuthenticatedData = secure && wantAD
}

// zoneFor returns the most specific zone containing name. s.mu must be held.
func (s *Server) zoneFor(name string) *Zone {
	for n := name; ; {
		if z := s.zones[n]; z != nil {
			return z
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			if z := s.zones["."]; z != nil {
				return z
			}
			return nil
		}
		n = n[i+1:]
	}
}

const defaultTTL = 300

// canonical returns name lower-cased and fully qualified.
func canonical(name string) string {
	return strings.ToLower(dns.Fqdn(name))
}

func trimRoot(fqdn string) string {
	if fqdn == "." {
		return ""
	}
	return fqdn
}
