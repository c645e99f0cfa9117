package tlspolicy

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
)

// DANEState is what DANE (RFC 7672) says about one MX host, as an input
// to Effective.
type DANEState int

const (
	// DANENone: DANE is off, does not apply (no DNSSEC, or the route is
	// not MX), or there are no signed TLSA records.
	DANENone DANEState = iota
	// DANEUnusable: signed TLSA records, none usable for SMTP: TLS is
	// mandatory, unauthenticated.
	DANEUnusable
	// DANEUsable: signed, usable TLSA records: TLS is mandatory and the
	// server must match them.
	DANEUsable
	// DANEIndeterminate: a lookup DANE depends on failed (bogus DNSSEC,
	// SERVFAIL, timeout): nothing may be delivered to the host.
	DANEIndeterminate
)

func (s DANEState) String() string {
	return [...]string{"none", "unusable TLSA", "usable TLSA", "indeterminate (lookup failed or DNSSEC-bogus)"}[s]
}

// STSState is what the recipient domain's MTA-STS policy (RFC 8461) says
// about one MX host, as an input to Effective.
type STSState int

const (
	// STSNone: no policy (no TXT record, mode none), or MTA-STS does not
	// apply (off, not an MX route, or the sender's "TLS-Required: No").
	STSNone STSState = iota
	// STSTesting: a policy in testing mode: failures are reported, not
	// enforced (except for REQUIRETLS, RFC 8689 §4.2.1).
	STSTesting
	// STSEnforce: an enforced policy that lists the host.
	STSEnforce
	// STSEnforceNotListed: an enforced policy that does not list the
	// host: never deliver to it.
	STSEnforceNotListed
	// STSFetchFailed: a TXT record announces a policy but it could not be
	// fetched, and none is cached: delivery goes on as without MTA-STS
	// (RFC 8461 §3.3, §5), and the failure is reported
	// (sts-policy-fetch-error).
	STSFetchFailed
)

func (s STSState) String() string {
	return [...]string{"none", "testing", "enforce", "enforce, host not listed", "fetch failed, nothing cached"}[s]
}

// Inputs are everything that has a say in the TLS of one delivery to one
// host. The zero value of each field but Map means "no demand".
type Inputs struct {
	// Map is the policy map's entry for the destination, or the default.
	Map Policy
	// Transport is the transport map's tls_level (conf.TLSUnset: none).
	Transport     Level
	TransportName string
	DANE          DANEState
	STS           STSState
	STSDomain     string
	// Alias is the secure-alias sender's level (conf.TLSUnset: the
	// sender is no secure alias), AliasSender the address.
	Alias       Level
	AliasSender string
	// RequireTLS: the message carries REQUIRETLS (RFC 8689).
	RequireTLS bool
	// Nexthop and Host name the destination domain and the MX host (for
	// the names a certificate must carry).
	Nexthop, Host string
}

// Names is one set of names a PKIX-valid certificate must match (any
// one of them), and who asked.
type Names struct {
	Names  []string
	Source string
}

// Refusal says that a host must not be used at all.
type Refusal struct {
	Status    string // enhanced status code
	Permanent bool   // no retry can help: bounce
	Reason    string
	// Ours: our own side (the sender's alias level, REQUIRETLS, the
	// operator's policy) demands it, not a policy the recipient domain
	// published; TLS-RPT reports to the recipient leave it out.
	Ours bool
	// DNSSEC: the refusal is a failed or bogus DNSSEC lookup.
	DNSSEC bool
}

// Effective is what one delivery to one host must satisfy: the union of
// every input's demands. Every demand must hold; none is ever dropped
// because another input asked for something else.
type Effective struct {
	// Level is the strongest level asked, in words, for logs and explain.
	Level Level
	// TryTLS: say STARTTLS when offered (false only at level none with
	// no other demand).
	TryTLS bool
	// RequireTLS: never deliver in plaintext.
	RequireTLS bool
	// DANE: the server must match the host's usable TLSA records.
	DANE bool
	// PKIX: for each set, the chain must be PKIX-valid and the leaf must
	// carry one of the names.
	PKIX []Names
	// Fingerprints: the leaf's or its key's SHA-256 must be one of them.
	Fingerprints [][]byte
	// ObservePKIX: MTA-STS testing: check PKIX for the host name and
	// report a failure, without enforcing it.
	ObservePKIX bool
	// RecipientTLS: the recipient's own policies (DANE TLSA, enforced
	// MTA-STS) make TLS mandatory; a failure to get it is theirs to
	// hear about (TLS-RPT).
	RecipientTLS bool
	// STSFetchFailed: report sts-policy-fetch-error for this delivery.
	STSFetchFailed bool
	// Refuse, when set, forbids the host.
	Refuse *Refusal
	// Sources says, one line each, which input asked for what.
	Sources []string
}

// Compute returns the effective policy for in: the strongest of every
// input, as one pure function.
//
//   - The policy map entry (or default) and the transport's level ask
//     what their level means: none nothing, may/dane opportunistic TLS,
//     encrypt TLS, dane-only TLS authenticated by usable TLSA records,
//     fingerprint a pinned digest, verify/secure a PKIX-valid chain for
//     the policy's names.
//   - DANE: usable signed TLSA records make TLS mandatory and
//     authenticated by them, at every level; unusable ones make TLS
//     mandatory; an indeterminate or bogus answer forbids the host.
//   - MTA-STS enforce: TLS, PKIX-valid for the MX host name, and only
//     listed hosts; testing: observed; a failed fetch: reported.
//   - A secure alias: encrypt TLS; dane-only usable TLSA; verify a
//     certificate pinned by the operator (the policy map's fingerprints).
//   - REQUIRETLS: TLS, and the host authenticated by DANE or MTA-STS
//     (testing counts, RFC 8689 §4.2.1), else a bounce.
//
// Where several inputs ask for authentication, all of it is demanded
// (DANE and PKIX, say): that deviates from RFC 8461 §2, which lets usable
// DANE replace MTA-STS, because the rule here is that nothing lowers what
// another input raised.
func Compute(in Inputs) Effective {
	e := Effective{Level: None}
	var refusals []*Refusal
	raise := func(l Level) {
		if l.Stronger(e.Level) {
			e.Level = l
		}
	}
	refuse := func(r *Refusal) { refusals = append(refusals, r) }
	src := func(format string, a ...any) { e.Sources = append(e.Sources, fmt.Sprintf(format, a...)) }
	pkix := func(p Policy, source string) {
		e.PKIX = append(e.PKIX, Names{Names: p.MatchNames(in.Nexthop, in.Host), Source: source})
	}

	level := func(l Level, p Policy, source string) {
		raise(l)
		switch l {
		case None:
			src("%s: %s (no TLS asked)", source, l)
		case May, Dane:
			e.TryTLS = true
			src("%s: %s (TLS if offered)", source, l)
		case Encrypt:
			e.TryTLS, e.RequireTLS = true, true
			src("%s: encrypt (TLS required)", source)
		case DaneOnly:
			e.TryTLS, e.RequireTLS = true, true
			src("%s: dane-only (TLS authenticated by DANE TLSA)", source)
			if in.DANE != DANEUsable {
				refuse(&Refusal{Status: "4.7.5", Ours: true, Reason: fmt.Sprintf("dane-only (%s): %s has no usable DNSSEC-signed TLSA records (DANE: %s)", source, in.Host, in.DANE)})
			} else {
				e.DANE = true
			}
		case Fingerprint:
			e.TryTLS, e.RequireTLS = true, true
			src("%s: fingerprint (a pinned certificate)", source)
			if len(p.Fingerprints) == 0 {
				refuse(&Refusal{Status: "4.7.5", Ours: true, Reason: fmt.Sprintf("fingerprint (%s): no fingerprint is pinned", source)})
			}
			e.Fingerprints = appendFingerprints(e.Fingerprints, p.Fingerprints)
		case Verify, Secure:
			e.TryTLS, e.RequireTLS = true, true
			pkix(Policy{Level: l, Match: p.Match}, source)
			src("%s: %s (PKIX-valid for %s)", source, l, strings.Join(e.PKIX[len(e.PKIX)-1].Names, ", "))
		default:
			e.TryTLS, e.RequireTLS = true, true
			refuse(&Refusal{Status: "4.7.5", Ours: true, Reason: fmt.Sprintf("%s: no valid TLS level (%v)", source, l)})
		}
	}

	level(in.Map.Level, in.Map, orDefault(in.Map.Source, "policy map"))
	if in.Transport != 0 {
		level(in.Transport, Policy{Level: in.Transport, Fingerprints: in.Map.Fingerprints}, "transport "+in.TransportName)
	}

	switch in.DANE {
	case DANEUsable:
		raise(DaneOnly)
		e.TryTLS, e.RequireTLS, e.DANE, e.RecipientTLS = true, true, true, true
		src("DANE: usable DNSSEC-signed TLSA records for %s: TLS required, authenticated by them", in.Host)
	case DANEUnusable:
		raise(Encrypt)
		e.TryTLS, e.RequireTLS, e.RecipientTLS = true, true, true
		src("DANE: signed TLSA records for %s, none usable: TLS required", in.Host)
	case DANEIndeterminate:
		e.TryTLS, e.RequireTLS = true, true
		src("DANE: the TLSA lookup for %s failed or is DNSSEC-bogus: not delivering", in.Host)
		refuse(&Refusal{Status: "4.7.5", DNSSEC: true, Reason: fmt.Sprintf("DANE: the TLSA lookup for %s failed or is DNSSEC-bogus; not delivering without a valid answer", in.Host)})
	}

	stsEnforced := in.STS == STSEnforce || in.STS == STSTesting && in.RequireTLS
	switch in.STS {
	case STSTesting:
		e.ObservePKIX, e.TryTLS = true, true
		src("MTA-STS (testing) of %s: PKIX for %s checked and reported, not enforced", in.STSDomain, in.Host)
	case STSEnforceNotListed:
		e.TryTLS, e.RequireTLS, e.RecipientTLS = true, true, true
		src("MTA-STS (enforce) of %s: %s is not a listed MX host", in.STSDomain, in.Host)
		refuse(&Refusal{Status: "4.7.5", Reason: fmt.Sprintf("MTA-STS: %s is not an MX host the enforced policy of %s lists", in.Host, in.STSDomain)})
	case STSFetchFailed:
		e.STSFetchFailed, e.TryTLS = true, true
		src("MTA-STS of %s: a policy is announced but could not be fetched and none is cached: as without MTA-STS (RFC 8461 §3.3), reported as sts-policy-fetch-error", in.STSDomain)
	}
	if stsEnforced {
		raise(Verify)
		e.TryTLS, e.RequireTLS, e.RecipientTLS = true, true, true
		pkix(Policy{Level: Verify, Match: []string{"hostname"}}, "MTA-STS "+in.STSDomain)
		src("MTA-STS (%s) of %s: TLS required, PKIX-valid for %s", map[bool]string{true: "enforce", false: "testing, for REQUIRETLS"}[in.STS == STSEnforce], in.STSDomain, in.Host)
	}

	if in.Alias != 0 || in.AliasSender != "" {
		who := "secure alias " + in.AliasSender
		raise(in.Alias)
		e.TryTLS, e.RequireTLS = true, true
		switch in.Alias {
		case Encrypt:
			src("%s: encrypt (TLS required; a failure bounces)", who)
		case DaneOnly:
			src("%s: dane-only (TLS authenticated by DANE TLSA; a failure bounces)", who)
			if in.DANE != DANEUsable {
				refuse(&Refusal{Status: "5.7.10", Permanent: true, Ours: true, Reason: fmt.Sprintf("%s asks for DANE, and %s has no usable DNSSEC-signed TLSA records (DANE: %s)", who, in.Host, in.DANE)})
			} else {
				e.DANE = true
			}
		case Verify:
			src("%s: verify (only a certificate the operator pinned; a failure bounces)", who)
			if len(in.Map.Fingerprints) == 0 {
				refuse(&Refusal{Status: "5.7.10", Permanent: true, Ours: true, Reason: fmt.Sprintf("%s may only send to destinations whose certificate is pinned, and %s's is not", in.AliasSender, in.Nexthop)})
			}
			e.Fingerprints = appendFingerprints(e.Fingerprints, in.Map.Fingerprints)
		default:
			refuse(&Refusal{Status: "5.7.10", Permanent: true, Ours: true, Reason: fmt.Sprintf("%s: no valid TLS level (%v)", who, in.Alias)})
		}
	}

	if in.RequireTLS {
		e.TryTLS, e.RequireTLS = true, true
		raise(Encrypt)
		src("REQUIRETLS: TLS required, the host authenticated by DANE or MTA-STS, and REQUIRETLS offered")
		switch {
		case in.DANE == DANEUsable || stsEnforced || in.DANE == DANEIndeterminate:
		case in.STS == STSFetchFailed:
			// The policy may be fetched on the next try.
			refuse(&Refusal{Status: "4.7.5", Ours: true, Reason: fmt.Sprintf("REQUIRETLS: the MTA-STS policy of %s could not be fetched, and DANE does not authenticate %s", in.STSDomain, in.Host)})
		default:
			refuse(&Refusal{Status: "5.7.30", Permanent: true, Ours: true, Reason: fmt.Sprintf("REQUIRETLS: neither MTA-STS nor DANE authenticates %s", in.Host)})
		}
	}

	e.Refuse = pickRefusal(refusals)
	return e
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func appendFingerprints(have, add [][]byte) [][]byte {
	for _, f := range add {
		if !slices.ContainsFunc(have, func(h []byte) bool { return bytes.Equal(h, f) }) {
			have = append(have, f)
		}
	}
	return have
}

// pickRefusal: a permanent refusal wins (no retry helps), else the first.
func pickRefusal(rs []*Refusal) *Refusal {
	for _, r := range rs {
		if r.Permanent {
			return r
		}
	}
	if len(rs) > 0 {
		return rs[0]
	}
	return nil
}

// AtLeastAsStrict reports whether every demand of b is also one of a's:
// a refuses whenever b does, requires TLS whenever b does, demands
// DANE, each PKIX name set and each fingerprint that b demands, and its
// level is at least b's. A refusing a is at least as strict as anything.
func AtLeastAsStrict(a, b Effective) bool {
	if a.Refuse != nil {
		return true
	}
	if b.Refuse != nil {
		return false
	}
	if b.TryTLS && !a.TryTLS || b.RequireTLS && !a.RequireTLS || b.DANE && !a.DANE || b.ObservePKIX && !a.ObservePKIX {
		return false
	}
	if !a.Level.AtLeast(b.Level) {
		return false
	}
	for _, n := range b.PKIX {
		if !slices.ContainsFunc(a.PKIX, func(m Names) bool { return slices.Equal(m.Names, n.Names) }) {
			return false
		}
	}
	for _, f := range b.Fingerprints {
		if !slices.ContainsFunc(a.Fingerprints, func(h []byte) bool { return bytes.Equal(h, f) }) {
			return false
		}
	}
	return true
}
