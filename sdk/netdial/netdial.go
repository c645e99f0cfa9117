// Package netdial gives plugins the name resolution the host uses: a
// dialer whose lookups go to one configured DNS resolver (the MTA's
// [dns] resolver, handed to plugins in their configuration) instead of the
// system's. IP literals and names in /etc/hosts resolve without DNS, as
// with the system resolver.
package netdial

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Dialer connects to HOST:PORT, resolving HOST through Server.
type Dialer struct {
	// Server is the DNS resolver, "IP:PORT"; empty means the system's.
	Server string
	// Timeout bounds each connection attempt and each DNS exchange.
	Timeout time.Duration
	// Static maps a host name to a fixed "IP:PORT" or ":PORT"
	// (tests and split-horizon setups); it is consulted first.
	Static map[string]string
}

// Validate reports a malformed Server or Static entry.
func (d *Dialer) Validate() error {
	if d.Server != "" {
		if _, _, err := net.SplitHostPort(d.Server); err != nil {
			return fmt.Errorf("resolver %q: want IP:PORT", d.Server)
		}
	}
	for h, a := range d.Static {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("static address for %s %q: want IP:PORT or :PORT", h, a)
		}
	}
	return nil
}

// Resolver is the *net.Resolver that asks Server (the system's resolver
// when Server is empty).
func (d *Dialer) Resolver() *net.Resolver {
	if d.Server == "" {
		return net.DefaultResolver
	}
	timeout := d.timeout()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			nd := net.Dialer{Timeout: timeout}
			return nd.DialContext(ctx, network, d.Server)
		},
	}
}

func (d *Dialer) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return 30 * time.Second
}

// DialContext connects to addr ("HOST:PORT"), trying each address HOST
// resolves to in turn.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	nd := &net.Dialer{Timeout: d.timeout()}
	if a, ok := d.Static[strings.ToLower(host)]; ok {
		h, p, _ := net.SplitHostPort(a)
		if h != "" {
			return nd.DialContext(ctx, network, a)
		}
		port = p
	}
	if ip := net.ParseIP(host); ip != nil {
		return nd.DialContext(ctx, network, net.JoinHostPort(host, port))
	}
	ips, err := d.Resolver().LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	var errs []error
	for _, ip := range ips {
		c, err := nd.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}
