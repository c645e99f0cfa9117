package remote

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/textproto"
	"strings"
	"time"

	"github.com/posthorn/posthorn/mta/internal/dane"
	"github.com/posthorn/posthorn/mta/internal/delivery"
	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/tlspolicy"
	"github.com/posthorn/posthorn/mta/internal/tlsrpt"
	"github.com/posthorn/posthorn/queue"
)

// SecureAliases tells whether an envelope sender is a secure alias and
// which TLS level its owner asked for (encrypt, dane-only, verify).
type SecureAliases interface {
	SecureAlias(addr string) (base string, level tlspolicy.Level, ok bool)
}

// demands are what one message asks of its delivery beyond the policy
// map: a secure alias sender's level, REQUIRETLS (RFC 8689), or the
// sender's "TLS-Required: No".
type demands struct {
	alias       string // the secure alias sender, if any
	aliasLevel  tlspolicy.Level
	requireTLS  bool
	tlsOptional bool
}

func (t *Transport) demandsOf(env *queue.Envelope, body delivery.Body) demands {
	var d demands
	if t.aliases != nil && env.From != "" {
		if _, level, ok := t.aliases.SecureAlias(env.From); ok {
			d.alias, d.aliasLevel = env.From, level
		}
	}
	d.requireTLS = env.RequireTLS
	if !d.requireTLS && d.alias == "" && (t.sts != nil || t.dane) {
		d.tlsOptional = tlsRequiredNo(body)
	}
	return d
}

// tlsRequiredNo reports a "TLS-Required: No" header (RFC 8689 §5): the
// sender asks that the recipient domain's TLS policies (MTA-STS, DANE)
// not stop the delivery.
func tlsRequiredNo(body delivery.Body) bool {
	rc, err := body()
	if err != nil {
		return false
	}
	defer rc.Close()
	h, _ := textproto.NewReader(bufio.NewReader(io.LimitReader(rc, 256<<10))).ReadMIMEHeader()
	return strings.EqualFold(strings.TrimSpace(h.Get("TLS-Required")), "no")
}

// stsPolicy looks up the MTA-STS policy of domain (RFC 8461).
func (t *Transport) stsPolicy(ctx context.Context, domain string) (*mtasts.Policy, error) {
	if t.sts == nil {
		return nil, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p, state, err := t.sts.Lookup(cctx, domain)
	switch {
	case p == nil || state == mtasts.NoPolicy:
		return nil, nil
	case state == mtasts.FetchFailed:
		return nil, err
	case p.Mode == mtasts.None:
		return nil, nil
	}
	return p, nil
}

// applySTS narrows MX hosts to those an enforced MTA-STS policy names and
// demands verify (PKIX, the MX host name) for them (RFC 8461 §4, §5).
// In testing mode nothing changes; failures are only reported.
func applySTS(p *mtasts.Policy, cands []candidate) ([]candidate, *attemptError) {
	if p == nil || p.Mode != mtasts.Enforce {
		return cands, nil
	}
	var keep []candidate
	for _, c := range cands {
		if p.Matches(c.host) {
			keep = append(keep, c)
		}
	}
	if len(keep) == 0 {
		return nil, tempErr("4.7.5", "MTA-STS: no MX host matches the enforced policy of %s (mx: %s)", p.Domain, strings.Join(p.MX, ", "))
	}
	return keep, nil
}

// stsHostPolicy is the level MTA-STS asks of a host.
func stsHostPolicy(p *mtasts.Policy) tlspolicy.Policy {
	return tlspolicy.Policy{Level: tlspolicy.Verify, Match: []string{"hostname"}, Source: "MTA-STS policy (" + string(p.Mode) + ") of " + p.Domain}
}

// record notes an attempt for TLS-RPT.
func (t *Transport) record(domain, mxHost, addr string, p tlspolicy.Policy, dr *dane.Result, sts *mtasts.Policy, aerr *attemptError) {
	if t.rpt == nil {
		return
	}
	a := tlsrpt.Attempt{Time: time.Now(), Domain: domain, PolicyType: tlsrpt.PolicyNone, ReceivingMXHostname: mxHost, Success: aerr == nil}
	if host, _, ok := strings.Cut(addr, ":"); ok {
		a.ReceivingIP = host
	}
	switch {
	case dr != nil:
		a.PolicyType, a.PolicyDomain = tlsrpt.PolicyTLSA, dr.Base
		for _, r := range dr.Records {
			a.PolicyString = append(a.PolicyString, strings.TrimSpace(strings.Join(strings.Fields(r.String())[4:], " ")))
		}
	case sts != nil:
		a.PolicyType, a.PolicyString, a.MXHost = tlsrpt.PolicySTS, sts.Strings(), sts.MX
	}
	if aerr != nil {
		switch {
		case aerr.status == "4.7.4":
			a.Result = tlsrpt.StartTLSNotSupported
		case aerr.cause != nil:
			a.Result = tlsrpt.Classify(aerr.cause)
		default:
			a.Result = tlsrpt.ValidationFailure
		}
		a.AdditionalInfo = aerr.diag
		if !strings.HasPrefix(aerr.status, "4.7") && !strings.HasPrefix(aerr.status, "5.7") {
			return // not a TLS matter (refused connection, 4xx greeting)
		}
	}
	if err := t.rpt.Record(a); err != nil {
		t.log.Warn("TLS-RPT: could not record the attempt", "err", err)
	}
}

// finalForAlias turns a TLS failure of a secure-alias sender's mail into a
// bounce at once: secure aliases promise TLS or a quick bounce, not
// retries (mailbox.org's secure alias).
func finalForAlias(d demands, o delivery.Outcome) delivery.Outcome {
	if d.alias == "" || o.State != queue.Pending || !strings.HasPrefix(o.Status, "4.7") {
		return o
	}
	return delivery.Outcome{State: queue.Failed, Status: "5.7.10", RemoteMTA: o.RemoteMTA,
		Diagnostic: fmt.Sprintf("x-posthorn; the receiving server could not be reached over an encrypted connection, which %s requires (%s)", d.alias, strings.TrimPrefix(o.Diagnostic, "x-posthorn; "))}
}
