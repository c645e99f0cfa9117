package remote

import (
	"context"
	"net"
	"strings"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/resolver"
)

// hostAddrs returns the addresses to connect to for a candidate. A host
// the operator named (smarthost) may be an IP literal ("192.0.2.7" or
// "[192.0.2.7]"), "localhost" or a name in /etc/hosts, none of which
// needs DNS; everything else is asked of the configured resolver. IPv6
// addresses are used only with [outbound] ipv6.
func (t *Transport) hostAddrs(ctx context.Context, c candidate) ([]net.IP, error) {
	if c.static {
		if ips := resolver.StaticAddrs(c.host); len(ips) > 0 {
			return t.familyFilter(ips, c.host)
		}
	}
	ips, err := t.res.Addrs(ctx, c.host, t.ipv6)
	if err != nil {
		return nil, err
	}
	return t.familyFilter(ips, c.host)
}

func (t *Transport) familyFilter(ips []net.IP, host string) ([]net.IP, error) {
	var out []net.IP
	for _, ip := range ips {
		if ip.To4() == nil && !t.ipv6 {
			continue
		}
		out = append(out, ip)
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no usable address (IPv6 is off)", Name: host, IsNotFound: true}
	}
	return out, nil
}

// sourceFor returns the local address to connect from for a transport
// entry and a destination address: the transport's source_address of
// the destination's family, else [outbound]'s, else "" (the system
// chooses). With ip nil it returns the IPv4 one (for reports of
// attempts that made no connection).
func (t *Transport) sourceFor(r conf.Transport, ip net.IP) string {
	v6 := ip != nil && ip.To4() == nil
	pick := func(list []string) string {
		for _, a := range list {
			if p := net.ParseIP(strings.Trim(a, "[]")); p != nil && (p.To4() == nil) == v6 {
				return p.String()
			}
		}
		return ""
	}
	if s := pick(r.SourceAddress); s != "" {
		return s
	}
	return pick(t.source)
}

// dialer returns the dialer for one connection, bound to the source
// address if one is configured.
func dialerFrom(source string) *net.Dialer {
	d := &net.Dialer{}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	return d
}
