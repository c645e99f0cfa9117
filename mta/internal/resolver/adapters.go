package resolver

import (
	"context"
	"net"

	"blitiri.com.ar/go/spf"
)

// SPFResolver returns r as the resolver of blitiri.com.ar/go/spf (pass it
// with spf.WithResolver). Errors are *net.DNSError as that library
// expects: NXDOMAIN/NODATA have IsNotFound, timeouts and SERVFAIL are
// temporary (SPF temperror).
func (r *Resolver) SPFResolver() spf.DNSResolver { return spfResolver{r} }

type spfResolver struct{ r *Resolver }

func (s spfResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txt, _, err := s.r.TXT(ctx, name)
	return txt, toDNSError(err, name)
}

func (s spfResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, _, err := s.r.MX(ctx, name)
	if err != nil {
		return nil, toDNSError(err, name)
	}
	if len(mxs) == 1 && mxs[0].Host == "." {
		// Null MX (RFC 7505): no mail hosts.
		return nil, nil
	}
	return mxs, nil
}

func (s spfResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, _, err := s.r.IP(ctx, host)
	if err != nil {
		return nil, toDNSError(err, host)
	}
	out := make([]net.IPAddr, len(ips))
	for i, ip := range ips {
		out[i] = net.IPAddr{IP: ip}
	}
	return out, nil
}

func (s spfResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	names, _, err := s.r.PTR(ctx, ip)
	return names, toDNSError(err, addr)
}

// LookupTXTFunc returns a TXT lookup in the shape go-msgauth wants
// (dkim.VerifyOptions.LookupTXT, dmarc.LookupOptions.LookupTXT): errors
// are *net.DNSError, temporary ones report Temporary(). Each call is
// bounded by the resolver's timeout.
func (r *Resolver) LookupTXTFunc() func(string) ([]string, error) {
	return r.LookupTXTFuncContext(context.Background())
}

// LookupTXTFuncContext is LookupTXTFunc with calls bound to ctx.
func (r *Resolver) LookupTXTFuncContext(ctx context.Context) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		txt, _, err := r.TXT(ctx, name)
		if err != nil {
			return nil, toDNSError(err, name)
		}
		return txt, nil
	}
}
