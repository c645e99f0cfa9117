package resolver

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Addrs returns the addresses to connect to for host: its A records and,
// with v6, its AAAA records. Unlike IP (which DANE uses and which must
// never act on half an answer), a failed AAAA lookup (REFUSED, SERVFAIL,
// a timeout) does not hide a good A answer: connecting needs one
// address, not both families. Without v6 no AAAA query is sent. An IP
// literal is returned as it is.
func (r *Resolver) Addrs(ctx context.Context, host string, v6 bool) ([]net.IP, error) {
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		return []net.IP{ip}, nil
	}
	if !v6 {
		rrs, _, err := r.lookup(ctx, host, dns.TypeA)
		if err != nil {
			return nil, err
		}
		ips := make([]net.IP, 0, len(rrs))
		for _, rr := range rrs {
			ips = append(ips, rr.(*dns.A).A)
		}
		return ips, nil
	}
	var a6 []dns.RR
	var err6 error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a6, _, err6 = r.lookup(ctx, host, dns.TypeAAAA)
	}()
	a4, _, err4 := r.lookup(ctx, host, dns.TypeA)
	wg.Wait()
	var ips []net.IP
	for _, rr := range a4 {
		ips = append(ips, rr.(*dns.A).A)
	}
	for _, rr := range a6 {
		ips = append(ips, rr.(*dns.AAAA).AAAA)
	}
	if len(ips) > 0 {
		return ips, nil
	}
	switch {
	case err4 != nil && !errors.Is(err4, ErrNotFound):
		return nil, err4
	case err6 != nil && !errors.Is(err6, ErrNotFound):
		return nil, err6
	case err4 != nil:
		return nil, err4
	}
	return nil, err6
}

// HostsFile is the static host table StaticAddrs reads.
var HostsFile = "/etc/hosts"

// StaticAddrs returns the addresses of host that need no DNS: an IP
// literal (brackets allowed), "localhost" (127.0.0.1 and ::1, RFC 6761
// §6.3), or the addresses HostsFile gives the name. Nil if none.
func StaticAddrs(host string) []net.IP {
	h := strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if ip := net.ParseIP(h); ip != nil {
		return []net.IP{ip}
	}
	var out []net.IP
	if f, err := os.Open(HostsFile); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			ip := net.ParseIP(fields[0])
			if ip == nil {
				continue
			}
			for _, n := range fields[1:] {
				if strings.EqualFold(strings.TrimSuffix(n, "."), h) {
					out = append(out, ip)
					break
				}
			}
		}
	}
	if len(out) == 0 && (h == "localhost" || strings.HasSuffix(h, ".localhost")) {
		out = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	return out
}
