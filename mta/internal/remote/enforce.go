package remote

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
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
	alias      string // the secure alias sender, if any
	aliasLevel tlspolicy.Level
	requireTLS bool
	// tlsOptional reports a "TLS-Required: No" header; nil when no
	// policy could be waived. It reads the message's header at the
	// first call only, and only an MX route with MTA-STS asks (a
	// smarthost route never does: a file open and read saved per
	// message, issue 19).
	tlsOptional func() bool
}

// optional reports "TLS-Required: No" (see demands.tlsOptional).
func (d demands) optional() bool { return d.tlsOptional != nil && d.tlsOptional() }

func (t *Transport) demandsOf(env *queue.Envelope, body delivery.Body) demands {
	var d demands
	if t.aliases != nil && env.From != "" {
		if _, level, ok := t.aliases.SecureAlias(env.From); ok {
			d.alias, d.aliasLevel = env.From, level
		}
	}
	d.requireTLS = env.RequireTLS
	if !d.requireTLS && d.alias == "" && (t.sts != nil || t.dane) {
		d.tlsOptional = sync.OnceValue(func() bool { return tlsRequiredNo(body) })
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
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(io.LimitReader(rc, 256<<10))
	h, _ := textproto.NewReader(br).ReadMIMEHeader()
	br.Reset(nil)
	headerReaders.Put(br)
	return strings.EqualFold(strings.TrimSpace(h.Get("TLS-Required")), "no")
}

// headerReaders are tlsRequiredNo's readers (a fresh 4 KiB one per
// delivery was an item of the relay's allocation profile, issue 19).
var headerReaders = sync.Pool{New: func() any { return bufio.NewReader(nil) }}

// stsInfo is what the recipient domain's MTA-STS says, for one delivery.
type stsInfo struct {
	policy *mtasts.Policy     // the policy in use (fetched or cached), nil if none
	state  mtasts.PolicyState // where it came from
	err    error              // a failed discovery or fetch
	domain string
}

// hostState is the MTA-STS input for one MX host.
func (s stsInfo) hostState(host string) tlspolicy.STSState {
	switch {
	case s.policy != nil && s.policy.Mode == mtasts.Enforce:
		if s.policy.Matches(host) {
			return tlspolicy.STSEnforce
		}
		return tlspolicy.STSEnforceNotListed
	case s.policy != nil && s.policy.Mode == mtasts.Testing:
		return tlspolicy.STSTesting
	case s.policy == nil && s.state == mtasts.FetchFailed:
		return tlspolicy.STSFetchFailed
	}
	return tlspolicy.STSNone
}

// describe says in words what MTA-STS gives (for explain and logs).
func (s stsInfo) describe() string {
	p := s.policy
	switch {
	case p != nil:
		from := "fetched"
		if s.state == mtasts.Cached {
			from = "cached"
		}
		line := fmt.Sprintf("MTA-STS: mode %s, mx %s, id %s (%s %s ago, expires in %s)",
			p.Mode, strings.Join(p.MX, " "), p.ID, from, p.Age().Round(time.Second), time.Until(p.Expires()).Round(time.Second))
		if s.state == mtasts.CachedFallback {
			line += "; the cached policy is used because discovery or a refetch failed (RFC 8461 §5.1): " + oneLine(s.err)
		}
		return line
	case s.state == mtasts.FetchFailed:
		return "MTA-STS: a policy is announced (_mta-sts TXT record) but could not be fetched, and none is cached: " + oneLine(s.err) +
			"; delivering as without MTA-STS (RFC 8461 §3.3), reported to TLS-RPT as sts-policy-fetch-error"
	case s.err != nil:
		return "MTA-STS: no policy (discovery failed: " + oneLine(s.err) + ")"
	}
	return "MTA-STS: no policy (no _mta-sts TXT record)"
}

// stsLookup looks up the MTA-STS policy of domain (RFC 8461): a policy of
// mode none counts as none; a fetch failure with nothing cached is
// kept apart from "no policy" (§3.3, §5).
func (t *Transport) stsLookup(ctx context.Context, domain string) stsInfo {
	info := stsInfo{domain: domain}
	if t.sts == nil {
		return info
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p, state, err := t.sts.Lookup(cctx, domain)
	info.state, info.err = state, err
	if p != nil && p.Mode != mtasts.None && (state == mtasts.Fetched || state == mtasts.Cached || state == mtasts.CachedFallback) {
		info.policy = p
	}
	return info
}

// record notes an attempt for TLS-RPT (RFC 8460). Failures that only our
// own side demanded (a secure alias's level, the operator's policy map,
// REQUIRETLS) are not the recipient's to hear about and are left out; a
// failed MTA-STS fetch is always a failure (sts-policy-fetch-error); a
// failed or bogus DANE lookup is dnssec-invalid under the tlsa policy.
func (t *Transport) record(domain, mxHost string, a attemptInfo, aerr *attemptError) {
	if t.rpt == nil {
		return
	}
	at := tlsrpt.Attempt{Time: time.Now(), Domain: domain, PolicyType: tlsrpt.PolicyNone, ReceivingMXHostname: mxHost,
		Success: aerr == nil, SendingMTAIP: a.localIP}
	if host, _, err := net.SplitHostPort(a.addr); err == nil {
		at.ReceivingIP = host
	}
	dr, sts := a.dane, a.sts
	switch {
	case dr != nil && dr.State == dane.Authenticate, dr != nil && dr.State == dane.Unusable, dr != nil && dr.State == dane.Indeterminate:
		at.PolicyType, at.PolicyDomain = tlsrpt.PolicyTLSA, dr.Base
		for _, r := range dr.Records {
			at.PolicyString = append(at.PolicyString, strings.TrimSpace(strings.Join(strings.Fields(r.String())[4:], " ")))
		}
	case sts.policy != nil || sts.state == mtasts.FetchFailed:
		at.PolicyType = tlsrpt.PolicySTS
		if sts.policy != nil {
			at.PolicyString, at.MXHost = sts.policy.Strings(), sts.policy.MX
		}
	}
	if aerr != nil {
		if aerr.ours {
			return // our own demand, not the recipient's policy
		}
		switch {
		case aerr.dnssec:
			at.Result = tlsrpt.DNSSECInvalid
		case aerr.status == "4.7.4":
			at.Result = tlsrpt.StartTLSNotSupported
		case aerr.cause != nil:
			at.Result = tlsrpt.Classify(aerr.cause)
		default:
			at.Result = tlsrpt.ValidationFailure
		}
		at.AdditionalInfo = aerr.diag
		if !strings.HasPrefix(aerr.status, "4.7") && !strings.HasPrefix(aerr.status, "5.7") {
			return // not a TLS matter (refused connection, 4xx greeting)
		}
	}
	if at.PolicyType == tlsrpt.PolicySTS && sts.policy == nil && sts.state == mtasts.FetchFailed {
		at.Success, at.Result = false, tlsrpt.Classify(sts.err)
		if at.Result == tlsrpt.ValidationFailure || at.Result == "" {
			at.Result = tlsrpt.STSPolicyFetchError
		}
		at.AdditionalInfo = oneLine(sts.err)
	}
	if err := t.rpt.Record(at); err != nil {
		t.log.Warn("TLS-RPT: could not record the attempt", "err", err)
	}
}

// attemptInfo is what TLS-RPT needs to know of one attempt.
type attemptInfo struct {
	addr, localIP string
	dane          *dane.Result
	sts           stsInfo
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
