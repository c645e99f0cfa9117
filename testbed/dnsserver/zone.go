package dnsserver

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// Zone is a served zone. Its methods add or remove records; they panic on
// malformed input (an IP that does not parse, an owner outside the zone),
// since they are meant for test setup. They return the zone for chaining.
//
// Owner names may be relative ("mx", "_25._tcp.mx", "@" or "" for the apex)
// or absolute ("mx.example.org" or "mx.example.org."): a name that ends in
// the zone's origin or in a dot is absolute, anything else is relative.
//
// Target names (MX host, CNAME target) are absolute if they contain a dot
// ("mx.other.net" is mx.other.net.) and relative to the zone if they are a
// single label ("mx" is mx.example.org.); "@" is the apex.
type Zone struct {
	srv     *Server
	origin  string // canonical
	mode    Mode
	records map[string][]dns.RR // by canonical owner; guarded by srv.mu
}

// Origin returns the zone's origin, fully qualified ("example.org.").
func (z *Zone) Origin() string { return z.origin }

// Mode returns the zone's mode.
func (z *Zone) Mode() Mode {
	z.srv.mu.RLock()
	defer z.srv.mu.RUnlock()
	return z.mode
}

// SetMode changes the zone's mode.
func (z *Zone) SetMode(m Mode) *Zone {
	z.srv.mu.Lock()
	z.mode = m
	z.srv.mu.Unlock()
	return z
}

// Name returns the absolute form of a (possibly relative) owner name.
func (z *Zone) Name(name string) string {
	n := strings.ToLower(name)
	switch {
	case n == "" || n == "@":
		return z.origin
	case strings.HasSuffix(n, "."):
		return n
	case z.origin == ".":
		return n + "."
	case n+"." == z.origin || strings.HasSuffix(n+".", "."+z.origin):
		return n + "."
	}
	return n + "." + trimRoot(z.origin)
}

func (z *Zone) owner(name string) string {
	n := z.Name(name)
	if n != z.origin && !strings.HasSuffix(n, "."+z.origin) && z.origin != "." {
		panic(fmt.Sprintf("dnsserver: name %q is not in zone %s", name, z.origin))
	}
	return n
}

func (z *Zone) target(name string) string {
	n := strings.ToLower(name)
	switch {
	case n == "@":
		return z.origin
	case n == ".":
		return "."
	case strings.Contains(n, "."):
		return dns.Fqdn(n)
	}
	return z.Name(n)
}

func (z *Zone) hdr(owner string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: defaultTTL}
}

func (z *Zone) add(rrs ...dns.RR) *Zone {
	z.srv.mu.Lock()
	defer z.srv.mu.Unlock()
	for _, rr := range rrs {
		o := rr.Header().Name
		dup := false
		for _, old := range z.records[o] {
			if dns.IsDuplicate(old, rr) {
				dup = true
				break
			}
		}
		if !dup {
			z.records[o] = append(z.records[o], rr)
		}
	}
	return z
}

// A adds A records for name.
func (z *Zone) A(name string, ips ...string) *Zone {
	o := z.owner(name)
	var rrs []dns.RR
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil || ip.To4() == nil {
			panic(fmt.Sprintf("dnsserver: A %s: bad IPv4 address %q", o, s))
		}
		rrs = append(rrs, &dns.A{Hdr: z.hdr(o, dns.TypeA), A: ip.To4()})
	}
	return z.add(rrs...)
}

// AAAA adds AAAA records for name.
func (z *Zone) AAAA(name string, ips ...string) *Zone {
	o := z.owner(name)
	var rrs []dns.RR
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil || ip.To4() != nil {
			panic(fmt.Sprintf("dnsserver: AAAA %s: bad IPv6 address %q", o, s))
		}
		rrs = append(rrs, &dns.AAAA{Hdr: z.hdr(o, dns.TypeAAAA), AAAA: ip})
	}
	return z.add(rrs...)
}

// MX adds an MX record for name.
func (z *Zone) MX(name string, pref uint16, host string) *Zone {
	o := z.owner(name)
	return z.add(&dns.MX{Hdr: z.hdr(o, dns.TypeMX), Preference: pref, Mx: z.target(host)})
}

// NullMX replaces the MX records of name by the null MX of RFC 7505
// (MX 0 ".": the domain accepts no mail).
func (z *Zone) NullMX(name string) *Zone {
	z.Remove(name, dns.TypeMX)
	return z.MX(name, 0, ".")
}

// TXT adds one TXT record for name made of the given character strings
// (each at most 255 bytes; use several for longer texts).
func (z *Zone) TXT(name string, strs ...string) *Zone {
	o := z.owner(name)
	return z.add(&dns.TXT{Hdr: z.hdr(o, dns.TypeTXT), Txt: append([]string(nil), strs...)})
}

// TLSA adds a TLSA record (RFC 6698) for name, e.g. "_25._tcp.mx".
// dataHex is the certificate association data in hex. See TLSAData.
func (z *Zone) TLSA(name string, usage, selector, mtype uint8, dataHex string) *Zone {
	o := z.owner(name)
	if _, err := hex.DecodeString(dataHex); err != nil {
		panic(fmt.Sprintf("dnsserver: TLSA %s: bad hex data: %v", o, err))
	}
	return z.add(&dns.TLSA{Hdr: z.hdr(o, dns.TypeTLSA), Usage: usage, Selector: selector,
		MatchingType: mtype, Certificate: strings.ToLower(dataHex)})
}

// CNAME sets name to be an alias of target (replacing an earlier CNAME).
func (z *Zone) CNAME(name, target string) *Zone {
	o := z.owner(name)
	z.Remove(o, dns.TypeCNAME)
	return z.add(&dns.CNAME{Hdr: z.hdr(o, dns.TypeCNAME), Target: z.target(target)})
}

// Add adds records written in zone-file syntax, relative names being
// relative to the zone, e.g. `z.Add("mx 60 IN A 127.0.0.1")`,
// `z.Add("_smtp._tls TXT \"v=TLSRPTv1; rua=mailto:r@example.org\"")`.
// Several records may be given separated by newlines.
func (z *Zone) Add(text string) *Zone {
	zp := dns.NewZoneParser(strings.NewReader(text), z.origin, "")
	zp.SetDefaultTTL(defaultTTL)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		h := rr.Header()
		h.Name = z.owner(h.Name)
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		panic(fmt.Sprintf("dnsserver: Add to %s: %v", z.origin, err))
	}
	return z.add(rrs...)
}

// Remove removes the records of type qtype at name; dns.TypeANY removes
// every record at name (the apex SOA stays).
func (z *Zone) Remove(name string, qtype uint16) *Zone {
	o := z.owner(name)
	z.srv.mu.Lock()
	defer z.srv.mu.Unlock()
	var keep []dns.RR
	for _, rr := range z.records[o] {
		t := rr.Header().Rrtype
		if t == dns.TypeSOA && o == z.origin {
			keep = append(keep, rr)
			continue
		}
		if qtype != dns.TypeANY && t != qtype {
			keep = append(keep, rr)
		}
	}
	if len(keep) == 0 {
		delete(z.records, o)
	} else {
		z.records[o] = keep
	}
	return z
}

// Records returns a copy of the records at name.
func (z *Zone) Records(name string) []dns.RR {
	o := z.owner(name)
	z.srv.mu.RLock()
	defer z.srv.mu.RUnlock()
	var out []dns.RR
	for _, rr := range z.records[o] {
		out = append(out, dns.Copy(rr))
	}
	return out
}

// lookup returns the records at name and whether the name exists (has
// records, or is an empty non-terminal). srv.mu must be held.
func (z *Zone) lookup(name string) ([]dns.RR, bool) {
	if rrs, ok := z.records[name]; ok {
		return rrs, true
	}
	suffix := "." + name
	for o := range z.records {
		if strings.HasSuffix(o, suffix) {
			return nil, true
		}
	}
	return nil, false
}

// soa returns a copy of the zone's SOA. srv.mu must be held.
func (z *Zone) soa() dns.RR {
	for _, rr := range z.records[z.origin] {
		if rr.Header().Rrtype == dns.TypeSOA {
			return dns.Copy(rr)
		}
	}
	return nil
}

// TLSAData returns the certificate association data (hex) for cert with
// the given selector (0 = full certificate, 1 = SubjectPublicKeyInfo) and
// matching type (0 = exact, 1 = SHA-256, 2 = SHA-512), as in RFC 6698.
func TLSAData(cert *x509.Certificate, selector, mtype uint8) string {
	var data []byte
	switch selector {
	case 0:
		data = cert.Raw
	case 1:
		data = cert.RawSubjectPublicKeyInfo
	default:
		panic(fmt.Sprintf("dnsserver: TLSA selector %d unknown", selector))
	}
	switch mtype {
	case 0:
	case 1:
		h := sha256.Sum256(data)
		data = h[:]
	case 2:
		h := sha512.Sum512(data)
		data = h[:]
	default:
		panic(fmt.Sprintf("dnsserver: TLSA matching type %d unknown", mtype))
	}
	return hex.EncodeToString(data)
}
