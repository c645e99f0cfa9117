package remote

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/dane"
	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/tlspolicy"
)

// Explanation says which TLS policy applies to a destination and why:
// what `posthorn tls explain` prints. It is built by the same code that
// delivery uses, so it cannot disagree with what delivery does.
type Explanation struct {
	Domain    string
	Route     string // "mx", "smarthost HOST", "lmtp …", "discard"
	Policy    tlspolicy.Policy
	MXSecure  bool   // the MX RRset was DNSSEC-validated
	MXError   string // MX lookup problem, if any
	Hosts     []HostExplanation
	TrustAD   bool
	DANEOn    bool
	Extra     []string // further sources (MTA-STS, secure alias, REQUIRETLS)
	PortMapOn bool
	demands   demands
}

// HostExplanation is one MX host.
type HostExplanation struct {
	Host   string
	Pref   uint16
	Policy tlspolicy.Policy
	DANE   string // DANE state and reason
	Error  string // why the host would be skipped
	Probe  string // result of a test connection, with Probe
}

// Explain works out the policy for domain without sending anything; with
// probe it also connects to each MX host (greeting, EHLO, STARTTLS at the
// host's level) and reports the TLS result.
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
			if l == tlspolicy.Verify {
				if len(ex.Policy.Fingerprints) == 0 {
					ex.Extra = append(ex.Extra, "  level verify: this destination's certificate is not pinned, so mail from the alias bounces")
				}
			} else {
				ex.Policy = tlspolicy.Stronger(ex.Policy, tlspolicy.Policy{Level: l, Source: "secure alias " + sender})
			}
		}
	}
	if r.Kind == "smarthost" || r.Kind == "lmtp" {
		ex.Route += " " + r.Host
	}
	if r.TLSLevel != conf.TLSUnset {
		ex.Policy = tlspolicy.Stronger(ex.Policy, tlspolicy.Policy{Level: r.TLSLevel, Source: "transport " + r.Domain})
	}
	var cands []candidate
	switch r.Kind {
	case "discard", "lmtp":
		return ex
	case "smarthost":
		host, port, _ := net.SplitHostPort(r.Host)
		p, _ := strconv.Atoi(port)
		cands = []candidate{{host: host, port: p}}
	default:
		c, secure, out := t.mxCandidates(ctx, domain)
		ex.MXSecure = secure
		if out != nil {
			ex.MXError = out.Status + " " + out.Diagnostic
			return ex
		}
		cands = c
	}
	var sts *mtasts.Policy
	if r.Kind == "mx" && t.sts != nil {
		p, err := t.stsPolicy(ctx, domain)
		switch {
		case err != nil:
			ex.Extra = append(ex.Extra, "MTA-STS: a policy is announced but could not be used: "+oneLine(err))
		case p == nil:
			ex.Extra = append(ex.Extra, "MTA-STS: no policy")
		default:
			sts = p
			ex.Extra = append(ex.Extra, fmt.Sprintf("MTA-STS: mode %s, mx %s, id %s, fetched %s ago, expires in %s",
				p.Mode, strings.Join(p.MX, " "), p.ID, p.Age().Round(time.Second), time.Until(p.Expires()).Round(time.Second)))
			if keep, aerr := applySTS(p, cands); aerr != nil {
				ex.MXError = aerr.diag
			} else {
				cands = keep
			}
		}
	}
	for _, c := range cands {
		h := HostExplanation{Host: c.host, Pref: c.pref}
		p, dr, aerr := t.hostPolicyFor(ctx, ex.Policy, c.host, ex.MXSecure && r.Kind != "smarthost", sts, ex.demands)
		h.Policy = p
		switch {
		case aerr != nil:
			h.Error = aerr.diag
		case dr != nil:
			h.DANE = fmt.Sprintf("%s: %d usable TLSA record(s) at _25._tcp.%s", dr.State, len(dr.Records), dr.Base)
		case t.dane && (ex.Policy.Level == tlspolicy.May || ex.Policy.Level == tlspolicy.Dane):
			h.DANE = "not applicable (no DNSSEC-signed TLSA records for this host)"
		}
		if probe && aerr == nil {
			h.Probe = t.probe(ctx, domain, c, p, dr, r.Kind == "smarthost" && r.ImplicitTLS)
		}
		ex.Hosts = append(ex.Hosts, h)
	}
	return ex
}

func (t *Transport) probe(ctx context.Context, domain string, c candidate, p tlspolicy.Policy, dr *dane.Result, implicit bool) string {
	ips, _, err := t.res.IP(ctx, c.host)
	if err != nil || len(ips) == 0 {
		return fmt.Sprintf("cannot resolve: %v", err)
	}
	port := c.port
	if pm, ok := t.portMap[strings.TrimSuffix(c.host, ".")]; ok {
		port = pm
	}
	spec := dialSpec{host: strings.TrimSuffix(c.host, "."), nexthop: domain,
		addr: net.JoinHostPort(ips[0].String(), strconv.Itoa(port)), policy: p, implicit: implicit, dane: dr}
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
		fmt.Fprintf(w, "host %s (preference %d)\n", h.Host, h.Pref)
		fmt.Fprintf(w, "  level:      %s  (from %s)\n", h.Policy.Level, h.Policy.Source)
		if h.DANE != "" {
			fmt.Fprintf(w, "  DANE:       %s\n", h.DANE)
		}
		if h.Error != "" {
			fmt.Fprintf(w, "  skipped:    %s\n", h.Error)
		}
		if h.Probe != "" {
			fmt.Fprintf(w, "  probe:      %s\n", h.Probe)
		}
	}
	if ex.PortMapOn {
		fmt.Fprintln(w, "note: testing.port_map is set; hosts are dialled on test ports")
	}
}
