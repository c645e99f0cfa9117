package dane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/posthorn/posthorn/mta/internal/resolver"
)

// Resolver is the DNS that Lookup needs; *resolver.Resolver has it. Each
// method reports whether the answer was DNSSEC-validated (secure) and
// returns errors that wrap resolver.ErrNotFound for NXDOMAIN/NODATA.
type Resolver interface {
	TLSA(ctx context.Context, name string) ([]*dns.TLSA, bool, error)
	IP(ctx context.Context, host string) ([]net.IP, bool, error)
	CNAME(ctx context.Context, name string) (string, bool, error)
}

// State is what DANE says about one MX host (see the package doc's
// decision table).
type State int

const (
	// NoDANE: DNSSEC does not cover the MX RRset, the host's addresses
	// or its TLSA records; DANE does not apply.
	NoDANE State = iota
	// NoTLSA: a secure, authenticated denial of TLSA records; DANE does
	// not apply.
	NoTLSA
	// Unusable: secure TLSA records exist but none is usable for SMTP:
	// TLS is mandatory, without authentication.
	Unusable
	// Authenticate: secure, usable TLSA records: TLS is mandatory and the
	// server must pass Verify; no fallback to weaker TLS or plaintext.
	Authenticate
	// Indeterminate: a lookup that DANE depends on failed (SERVFAIL,
	// as for bogus DNSSEC, timeout, network error): defer the delivery,
	// never downgrade.
	Indeterminate
)

func (s State) String() string {
	switch s {
	case NoDANE:
		return "no-dane"
	case NoTLSA:
		return "no-tlsa"
	case Unusable:
		return "unusable-tlsa"
	case Authenticate:
		return "dane"
	case Indeterminate:
		return "indeterminate"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// RequiresTLS reports whether the state makes TLS mandatory.
func (s State) RequiresTLS() bool { return s == Unusable || s == Authenticate }

// Result is the outcome of LookupHost.
type Result struct {
	State State
	// Records are the usable TLSA records (State Authenticate), or all
	// records found (State Unusable).
	Records []*dns.TLSA
	// Base is the TLSA base domain (no trailing dot): the MX host, or
	// the target of its secure CNAME chain. Send it as SNI.
	Base string
	// Names are the reference identifiers for Verify: Base and the MX
	// host name.
	Names []string
	// Reason says in words why (for logs and `tls explain`).
	Reason string
}

// Lookup returns the DANE state of mxHost (port is the SMTP port, 25) and
// the usable TLSA records. mxSecure says whether the MX RRset that named
// mxHost was DNSSEC-validated (for a domain without MX records: whether
// the implicit MX's address lookup was). err is set with Indeterminate.
func Lookup(ctx context.Context, res Resolver, mxHost string, port int, mxSecure bool) (State, []*dns.TLSA, error) {
	r, err := LookupHost(ctx, res, mxHost, port, mxSecure)
	return r.State, r.Records, err
}

// LookupHost is Lookup with the whole result. It never returns a nil
// Result.
func LookupHost(ctx context.Context, res Resolver, mxHost string, port int, mxSecure bool) (*Result, error) {
	host := strings.ToLower(strings.TrimSuffix(mxHost, "."))
	r := &Result{Base: host, Names: []string{host}}
	if !mxSecure {
		r.Reason = "the MX RRset is not DNSSEC-signed"
		return r, nil
	}
	if host == "" {
		r.State = Indeterminate
		r.Reason = "empty MX host name"
		return r, errors.New("dane: empty MX host name")
	}
	// The host's addresses must be secure too (RFC 7672 section 2.2).
	_, ipSecure, err := res.IP(ctx, host)
	if err != nil && !errors.Is(err, resolver.ErrNotFound) {
		r.State = Indeterminate
		r.Reason = "address lookup failed: " + err.Error()
		return r, fmt.Errorf("dane: address lookup of %s: %w", host, err)
	}
	if !ipSecure {
		r.Reason = "the address records of " + host + " are not DNSSEC-signed"
		return r, nil
	}
	// A secure CNAME chain: the expanded name is the base domain first
	// (RFC 7672 section 2.2.2).
	bases := []string{host}
	target, cnSecure, err := res.CNAME(ctx, host)
	switch {
	case err == nil && cnSecure:
		t := strings.TrimSuffix(target, ".")
		if t != "" && t != host {
			bases = []string{t, host}
			r.Names = []string{t, host}
		}
	case err == nil, errors.Is(err, resolver.ErrNotFound):
		// Not an alias (or an insecure chain: the address answer was
		// secure, so the original name is the only base).
	default:
		r.State = Indeterminate
		r.Reason = "CNAME lookup failed: " + err.Error()
		return r, fmt.Errorf("dane: CNAME lookup of %s: %w", host, err)
	}
	for i, base := range bases {
		name := "_" + strconv.Itoa(port) + "._tcp." + base
		recs, secure, err := res.TLSA(ctx, name)
		switch {
		case err != nil && errors.Is(err, resolver.ErrNotFound):
			if !secure {
				r.Reason = "no TLSA records at " + name + " (insecure denial)"
				r.State = NoDANE
				return r, nil
			}
			if i+1 < len(bases) {
				continue
			}
			r.State = NoTLSA
			r.Reason = "no TLSA records at " + name + " (authenticated denial)"
			return r, nil
		case err != nil:
			r.State = Indeterminate
			r.Reason = "TLSA lookup failed: " + err.Error()
			return r, fmt.Errorf("dane: TLSA lookup of %s: %w", name, err)
		case !secure:
			r.State = NoDANE
			r.Reason = "the TLSA records at " + name + " are not DNSSEC-signed"
			return r, nil
		}
		r.Base = base
		if u := Usable(recs); len(u) > 0 {
			r.State = Authenticate
			r.Records = u
			r.Reason = fmt.Sprintf("%d usable TLSA record(s) at %s", len(u), name)
			return r, nil
		}
		r.State = Unusable
		r.Records = recs
		r.Reason = fmt.Sprintf("TLSA records at %s, none usable for SMTP: TLS mandatory without authentication", name)
		return r, nil
	}
	return r, nil
}
