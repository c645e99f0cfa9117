package remote

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/dane"
	"github.com/posthorn/posthorn/mta/internal/tlspolicy"
)

// Explanation says which TLS policy applies to a destination and why:
// what `posthorn tls explain` prints. It is built by the same code that
// delivery uses (hostPolicyFor, tlspolicy.Compute), so it cannot
// disagree with what delivery does.
type Explanation struct {
	Domain    string
	Route     string           // "mx", "smarthost HOST", "lmtp …", "discard"
	Policy    tlspolicy.Policy // the policy map's entry or default
	MXSecure  bool             // the MX RRset was DNSSEC-validated
	MXError   string           // MX lookup problem, if any
	Hosts     []HostExplanation
	TrustAD   bool
	DANEOn    bool
	Extra     []string // further sources (MTA-STS, secure alias, REQUIRETLS)
	PortMapOn bool
	demands   demands
}

// HostExplanation is one MX host.
type HostExplanation struct {
	Host      string
	Pref      uint16
	Effective tlspolicy.Effective
	DANE      string // DANE state and reason
	Error     string // why the host would be refused
	Probe     string // result of a test connection, with Probe
}

// Explain works out the policy for domain without sending anything; with
// probe it also connects to each MX host that delivery would use (greeting,
// EHLO, STARTTLS with the host's effective policy) and reports the TLS
// result. Hosts the policy refuses are never probed, so an explanation
// for a secure alias never shows a plaintext session.
func (t *Transport) Explain(ctx context.Context, domain, sender string, requireTLS, probe bool) *Explanation {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	r := t.route(domain)
	ex := &Explanation{Domain: domain, Route: r.Kind, Policy: t.policies.Lookup(domain), DANEOn: t.dane, PortMapOn: len(t.portMap) > 0}
	ex.demands.requireTLS = requireTLS
	if requireTLS {
		ex.Extra = append(ex.Extra, "REQUIRETLS: the MX host must be authenticated by MTA-STS or DANE and offer REQUIRETLS")
	}
	if t.aliases != nil && sender != "" {
		if base, l, ok := t.aliases.SecureAlias(sender); ok {
			ex.demands.alias, ex.demands.aliasLevel = sender, l
			ex.Extra = append(ex.Extra, fmt.Sprintf("secure alias: %s (of %s) asks for at least %s; a TLS failure bounces at once", sender, base, l))
		}
	}
	if r.Kind == "smarthost" || r.Kind == "lmtp" {
		ex.Route += " " + r.Host
	}
	if r.TLSLevel != conf.TLSUnset {
		ex.Extra = append(ex.Extra, fmt.Sprintf("transport %s: tls_level %s", r.Domain, r.TLSLevel))
	}
	var cands []candidate
	switch r.Kind {
	case "discard", "lmtp", "maildir":
		return ex
	case "smarthost":
		host, port, _ := net.SplitHostPort(r.Host)
		p, _ := strconv.Atoi(port)
		cands = []candidate{{host: host, port: p, static: true}}
	default:
		c, secure, out := t.mxCandidates(ctx, domain, ex.demands)
		ex.MXSecure = secure
		if out != nil {
			ex.MXError = out.Status + " " + out.Diagnostic
			if o := finalForAlias(ex.demands, *out); o.State != out.State {
				ex.MXError += "; for " + ex.demands.alias + " a bounce at once (" + o.Status + ")"
			}
			return ex
		}
		cands = c
	}
	var sts stsInfo
	if r.Kind == "mx" && t.sts != nil {
		sts = t.stsLookup(ctx, domain)
		ex.Extra = append(ex.Extra, sts.describe())
	}
	for _, c := range cands {
		h := HostExplanation{Host: c.host, Pref: c.pref}
		eff, dr := t.hostPolicyFor(ctx, ex.Policy, r, domain, c.host, ex.MXSecure && r.Kind != "smarthost", sts, ex.demands)
		h.Effective = eff
		if dr != nil {
			h.DANE = fmt.Sprintf("%s: %s", dr.State, dr.Reason)
		} else if t.dane {
			h.DANE = "not applicable (the MX RRset is not DNSSEC-signed)"
		}
		if eff.Refuse != nil {
			aerr := refusalErr(eff.Refuse, dr)
			h.Error = aerr.status + " " + aerr.diag
			if aerr.permanent {
				h.Error += " (bounce)"
			} else if ex.demands.alias != "" && strings.HasPrefix(aerr.status, "4.7") {
				h.Error += " (for the secure alias: a bounce at once)"
			}
		} else if probe {
			var daneRes *dane.Result
			if eff.DANE {
				daneRes = dr
			}
			h.Probe = t.probe(ctx, domain, r, c, eff, daneRes, r.Kind == "smarthost" && r.ImplicitTLS)
		}
		ex.Hosts = append(ex.Hosts, h)
	}
	return ex
}

func (t *Transport) probe(ctx context.Context, domain string, r conf.Transport, c candidate, p tlspolicy.Effective, dr *dane.Result, implicit bool) string {
	ips, err := t.hostAddrs(ctx, c)
	if err != nil || len(ips) == 0 {
		return fmt.Sprintf("cannot resolve: %v", err)
	}
	port := c.port
	if pm, ok := t.portMap[strings.TrimSuffix(c.host, ".")]; ok {
		port = pm
	}
	spec := dialSpec{host: strings.TrimSuffix(c.host, "."), nexthop: domain,
		addr: net.JoinHostPort(ips[0].String(), strconv.Itoa(port)), policy: p, implicit: implicit, dane: dr, source: t.sourceFor(r, ips[0])}
	conn, err := t.dial(ctx, spec)
	if err != nil {
		return "FAILED: " + oneLine(err)
	}
	defer conn.close()
	conn.c.Quit()
	return fmt.Sprintf("ok: %s at %s", conn.tls, spec.addr)
}

// Print writes the explanation for people (posthorn tls explain).
func (ex *Explanation) Print(w io.Writer) {
	fmt.Fprintf(w, "destination:  %s\n", ex.Domain)
	fmt.Fprintf(w, "route:        %s\n", ex.Route)
	fmt.Fprintf(w, "policy:       %s  (from %s)\n", ex.Policy.Level, ex.Policy.Source)
	for _, x := range ex.Extra {
		fmt.Fprintf(w, "              %s\n", x)
	}
	if ex.DANEOn {
		trust := "yes"
		if !ex.TrustAD {
			trust = "no: DNSSEC answers are not trusted ([dns] trust_ad), so DANE never applies"
		}
		fmt.Fprintf(w, "DANE:         on; resolver's AD bit trusted: %s\n", trust)
	}
	if ex.MXError != "" {
		fmt.Fprintf(w, "MX:           %s\n", ex.MXError)
	} else if ex.Route == "mx" {
		fmt.Fprintf(w, "MX RRset:     DNSSEC-validated: %v\n", ex.MXSecure)
	}
	for _, h := range ex.Hosts {
		e := h.Effective
		fmt.Fprintf(w, "host %s (preference %d)\n", h.Host, h.Pref)
		fmt.Fprintf(w, "  effective:  %s\n", describeEffective(e))
		for _, s := range e.Sources {
			fmt.Fprintf(w, "    because   %s\n", s)
		}
		if h.DANE != "" {
			fmt.Fprintf(w, "  DANE:       %s\n", h.DANE)
		}
		if h.Error != "" {
			fmt.Fprintf(w, "  refused:    %s\n", h.Error)
		}
		if h.Probe != "" {
			fmt.Fprintf(w, "  probe:      %s\n", h.Probe)
		}
	}
	if ex.PortMapOn {
		fmt.Fprintln(w, "note: testing.port_map is set; hosts are dialled on test ports")
	}
}

// describeEffective says in one line what a host must satisfy.
func describeEffective(e tlspolicy.Effective) string {
	if e.Refuse != nil {
		return "no delivery to this host"
	}
	var parts []string
	switch {
	case e.RequireTLS:
		parts = append(parts, "TLS required")
	case e.TryTLS:
		parts = append(parts, "TLS if offered, else plaintext")
	default:
		parts = append(parts, "no TLS")
	}
	if e.DANE {
		parts = append(parts, "authenticated by DANE TLSA")
	}
	for _, n := range e.PKIX {
		parts = append(parts, "PKIX-valid for "+strings.Join(n.Names, " or "))
	}
	if len(e.Fingerprints) > 0 {
		parts = append(parts, "pinned certificate")
	}
	if e.ObservePKIX {
		parts = append(parts, "PKIX observed (MTA-STS testing)")
	}
	return fmt.Sprintf("%s: %s", e.Level, strings.Join(parts, ", "))
}
