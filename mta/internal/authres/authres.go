// Package authres runs the inbound sender authentication checks of the MX
// listener and records them in an Authentication-Results header field
// (RFC 8601):
//
//   - SPF (RFC 7208) of the MAIL FROM domain (or the HELO name for the null
//     sender), with blitiri.com.ar/go/spf;
//   - DKIM (RFC 6376, RFC 8463) signatures, with
//     github.com/emersion/go-msgauth/dkim;
//   - DMARC (RFC 7489) for the RFC 5322 From domain: policy lookup at the
//     From domain, else at its organisational domain (found with the
//     public suffix list, golang.org/x/net/publicsuffix), identifier
//     alignment of the SPF domain and the DKIM d= domains in relaxed or
//     strict mode, sp= for subdomains and pct= sampling.
//
// All DNS goes through mta/resolver. DNS failures are results (temperror),
// not errors.
package authres

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/mail"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"golang.org/x/net/publicsuffix"
)

// Results of a method (RFC 8601 section 2.7).
const (
	Pass      = "pass"
	Fail      = "fail"
	SoftFail  = "softfail"
	Neutral   = "neutral"
	None      = "none"
	TempError = "temperror"
	PermError = "permerror"
)

// Options tune a Checker. Zero values give the defaults.
type Options struct {
	// Timeout bounds one Check, all DNS lookups included (default 20s).
	Timeout time.Duration
	// MaxSignatures is the number of DKIM signatures verified per message
	// (default 5); further ones are ignored.
	MaxSignatures int
	// MaxHeaderBytes bounds the message header Check keeps in memory
	// (default 1 MiB); a longer header gives ErrHeaderTooLarge.
	MaxHeaderBytes int
}

// ErrHeaderTooLarge is returned by Check for a header over
// Options.MaxHeaderBytes.
var ErrHeaderTooLarge = errors.New("authres: message header too large")

// Checker runs the checks. It is safe for concurrent use.
type Checker struct {
	res        *resolver.Resolver
	authservID string
	opts       Options
}

// New returns a checker that resolves through res and names itself
// authservID (usually the MX host name) in the header it writes.
func New(res *resolver.Resolver, authservID string, opts Options) *Checker {
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	if opts.MaxSignatures <= 0 {
		opts.MaxSignatures = 5
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 1 << 20
	}
	return &Checker{res: res, authservID: sanitizeID(authservID), opts: opts}
}

// Result is the outcome of Check.
type Result struct {
	SPF   string // pass, fail, softfail, neutral, none, temperror, permerror
	DKIM  string // pass if any signature passed; else temperror, fail, permerror, none
	DMARC string // pass, fail, none, temperror, permerror

	// DMARCPolicy is the policy that applies to the From domain (p=, or
	// sp= when the record was found at the organisational domain):
	// none, quarantine or reject; "" without a DMARC record.
	DMARCPolicy string
	// FromDomain is the RFC 5322 From domain, lower case ("" if the
	// message has no single From address).
	FromDomain string
	// SPFDomain is the domain SPF checked (MAIL FROM domain, or HELO).
	SPFDomain string
	// DKIMDomains are the d= domains of the signatures that passed.
	DKIMDomains []string

	// Header is the whole "Authentication-Results: ...\r\n" field,
	// folded, to prepend to the message.
	Header string
	// Reject is true when DMARC failed and the policy is reject (and the
	// message was selected by pct=): refuse with 550 5.7.1 if enforcing.
	Reject bool
	// Quarantine is true when DMARC failed and the policy is quarantine
	// (or reject downgraded by pct=).
	Quarantine bool
}

// Check authenticates one message: clientIP and helo from the SMTP
// session, mailFrom the envelope sender ("" for the null sender), msg the
// whole message with its header. msg is read once, the header kept in
// memory and the body streamed to the DKIM verifier; msg may not be read
// to its end. The error is non-nil only if msg cannot be read or its header
// is too large; DNS failures show as temperror in the result.
func (c *Checker) Check(ctx context.Context, clientIP net.IP, helo, mailFrom string, msg io.Reader) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()

	br := bufio.NewReaderSize(msg, 32<<10)
	hdr, err := readHeader(br, c.opts.MaxHeaderBytes)
	if err != nil {
		return nil, err
	}

	res := &Result{}
	// SPF runs while the DKIM signatures are verified.
	type spfOut struct {
		result, domain string
	}
	spfDone := make(chan spfOut, 1)
	go func() {
		r, d := c.checkSPF(ctx, clientIP, helo, mailFrom)
		spfDone <- spfOut{r, d}
	}()

	dkimEntries := c.checkDKIM(ctx, res, hdr, br)
	s := <-spfDone
	res.SPF, res.SPFDomain = s.result, s.domain

	fromDomain, fromErr := fromDomain(hdr)
	res.FromDomain = fromDomain
	dmarcEntry := c.checkDMARC(ctx, res, fromErr)

	var entries []string
	spfEntry := "spf=" + res.SPF
	if mailFrom != "" {
		spfEntry += " smtp.mailfrom=" + value(res.SPFDomain)
	} else {
		spfEntry += " smtp.helo=" + value(res.SPFDomain)
	}
	entries = append(entries, spfEntry)
	entries = append(entries, dkimEntries...)
	entries = append(entries, dmarcEntry)
	res.Header = "Authentication-Results: " + c.authservID + ";\r\n\t" + strings.Join(entries, ";\r\n\t") + "\r\n"
	return res, nil
}

func (c *Checker) checkSPF(ctx context.Context, ip net.IP, helo, mailFrom string) (result, domain string) {
	domain = helo
	if i := strings.LastIndexByte(mailFrom, '@'); i >= 0 {
		domain = mailFrom[i+1:]
	} else if mailFrom != "" {
		domain = mailFrom
	}
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" {
		return None, domain
	}
	sender := mailFrom
	if sender == "" {
		// RFC 7208 section 2.4: the null sender is checked as
		// postmaster@HELO.
		sender = "postmaster@" + helo
	}
	r, _ := spf.CheckHostWithSender(ip, helo, sender,
		spf.WithResolver(c.res.SPFResolver()), spf.WithContext(ctx))
	switch r := string(r); r {
	case Pass, Fail, SoftFail, Neutral, None, TempError, PermError:
		return r, domain
	}
	return PermError, domain
}

// checkDKIM verifies the signatures and returns the header entries.
func (c *Checker) checkDKIM(ctx context.Context, res *Result, hdr []byte, body io.Reader) []string {
	r := io.MultiReader(bytes.NewReader(hdr), body)
	verifs, err := msgdkim.VerifyWithOptions(r, &msgdkim.VerifyOptions{
		LookupTXT:        c.res.LookupTXTFuncContext(ctx),
		MaxVerifications: c.opts.MaxSignatures,
	})
	if err != nil && !errors.Is(err, msgdkim.ErrTooManySignatures) {
		res.DKIM = PermError
		return []string{"dkim=permerror reason=" + value(reason(err))}
	}
	if len(verifs) == 0 {
		res.DKIM = None
		return []string{"dkim=none"}
	}
	var entries []string
	rank := map[string]int{Pass: 5, TempError: 4, Fail: 3, PermError: 2, Neutral: 1}
	best := ""
	for _, v := range verifs {
		var r string
		switch {
		case v.Err == nil:
			r = Pass
			d := strings.ToLower(v.Domain)
			if !contains(res.DKIMDomains, d) {
				res.DKIMDomains = append(res.DKIMDomains, d)
			}
		case msgdkim.IsTempFail(v.Err):
			r = TempError
		case msgdkim.IsPermFail(v.Err):
			r = PermError
		default:
			r = Fail
		}
		if rank[r] > rank[best] {
			best = r
		}
		e := "dkim=" + r
		if v.Err != nil {
			e += " reason=" + value(reason(v.Err))
		}
		if v.Domain != "" {
			e += " header.d=" + value(strings.ToLower(v.Domain))
		}
		if v.Identifier != "" {
			e += " header.i=" + value(v.Identifier)
		}
		entries = append(entries, e)
	}
	res.DKIM = best
	return entries
}

func (c *Checker) checkDMARC(ctx context.Context, res *Result, fromErr error) string {
	if fromErr != nil {
		res.DMARC = PermError
		return "dmarc=permerror reason=" + value(fromErr.Error())
	}
	from := res.FromDomain
	lookup := &dmarc.LookupOptions{LookupTXT: c.res.LookupTXTFuncContext(ctx)}
	org := OrganizationalDomain(from)
	rec, err := dmarc.LookupWithOptions(from, lookup)
	atOrg := false
	if errors.Is(err, dmarc.ErrNoPolicy) && org != from {
		rec, err = dmarc.LookupWithOptions(org, lookup)
		atOrg = true
	}
	switch {
	case err == nil:
	case errors.Is(err, dmarc.ErrNoPolicy):
		res.DMARC = None
		return "dmarc=none header.from=" + value(from)
	case dmarc.IsTempFail(err):
		res.DMARC = TempError
		return "dmarc=temperror reason=" + value(reason(err)) + " header.from=" + value(from)
	default:
		res.DMARC = PermError
		return "dmarc=permerror reason=" + value(reason(err)) + " header.from=" + value(from)
	}

	policy := rec.Policy
	if atOrg && rec.SubdomainPolicy != "" {
		policy = rec.SubdomainPolicy
	}
	if policy == "" {
		policy = dmarc.PolicyNone
	}
	res.DMARCPolicy = string(policy)

	spfAligned := res.SPF == Pass && aligned(res.SPFDomain, from, rec.SPFAlignment)
	dkimAligned := false
	for _, d := range res.DKIMDomains {
		if aligned(d, from, rec.DKIMAlignment) {
			dkimAligned = true
			break
		}
	}
	comment := " (p=" + string(rec.Policy)
	if rec.SubdomainPolicy != "" {
		comment += " sp=" + string(rec.SubdomainPolicy)
	}
	switch {
	case spfAligned || dkimAligned:
		res.DMARC = Pass
	case res.SPF == TempError || res.DKIM == TempError:
		// An aligned pass might have come with a working DNS: neither
		// pass nor fail (RFC 7489 section 6.6.2).
		res.DMARC = TempError
	default:
		res.DMARC = Fail
		applied := policy
		if rec.Percent != nil && *rec.Percent < 100 && rand.IntN(100) >= *rec.Percent {
			// Not sampled: the next weaker policy (section 6.6.4).
			switch policy {
			case dmarc.PolicyReject:
				applied = dmarc.PolicyQuarantine
			case dmarc.PolicyQuarantine:
				applied = dmarc.PolicyNone
			}
		}
		res.Reject = applied == dmarc.PolicyReject
		res.Quarantine = applied == dmarc.PolicyQuarantine
		comment += " dis=" + strings.ToUpper(string(applied))
	}
	comment += ")"
	return "dmarc=" + res.DMARC + comment + " header.from=" + value(from)
}

// OrganizationalDomain returns the organisational domain of domain (RFC
// 7489 section 3.2): the public suffix plus one label, per the public
// suffix list. A domain that is itself a public suffix is its own
// organisational domain.
func OrganizationalDomain(domain string) string {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

// aligned reports identifier alignment of domain d with the From domain
// (RFC 7489 section 3.1): strict is equality, relaxed is the same
// organisational domain.
func aligned(d, from string, mode dmarc.AlignmentMode) bool {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if d == "" {
		return false
	}
	if d == from {
		return true
	}
	if mode == dmarc.AlignmentStrict {
		return false
	}
	return OrganizationalDomain(d) == OrganizationalDomain(from)
}

// readHeader reads the header through the empty line that ends it (or to
// EOF for a message without body).
func readHeader(br *bufio.Reader, limit int) ([]byte, error) {
	var hdr []byte
	for {
		line, err := br.ReadSlice('\n')
		if len(hdr)+len(line) > limit {
			return nil, ErrHeaderTooLarge
		}
		hdr = append(hdr, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return hdr, nil
		}
		if err != nil {
			return nil, fmt.Errorf("authres: reading message: %w", err)
		}
		if string(line) == "\r\n" || string(line) == "\n" {
			return hdr, nil
		}
	}
}

// fromDomain returns the domain of the single From address of the header
// (RFC 7489 section 6.6.1: no From, several From fields or addresses in
// different domains cannot be evaluated).
func fromDomain(hdr []byte) (string, error) {
	var froms []string
	in := false
	for _, line := range strings.SplitAfter(string(hdr), "\n") {
		l := strings.TrimRight(line, "\r\n")
		if l == "" {
			in = false
			continue
		}
		if l[0] == ' ' || l[0] == '\t' {
			if in {
				froms[len(froms)-1] += l
			}
			continue
		}
		name, v, ok := strings.Cut(l, ":")
		in = ok && strings.EqualFold(strings.TrimRight(name, " \t"), "From")
		if in {
			froms = append(froms, v)
		}
	}
	switch len(froms) {
	case 0:
		return "", errors.New("no From header field")
	case 1:
	default:
		return "", errors.New("several From header fields")
	}
	addrs, err := mail.ParseAddressList(froms[0])
	if err != nil {
		return "", errors.New("unparsable From header field")
	}
	domain := ""
	for _, a := range addrs {
		i := strings.LastIndexByte(a.Address, '@')
		if i < 0 {
			return "", errors.New("address in From without domain")
		}
		d := strings.ToLower(strings.TrimSuffix(a.Address[i+1:], "."))
		if domain != "" && d != domain {
			return "", errors.New("addresses in From in several domains")
		}
		domain = d
	}
	if domain == "" || strings.HasPrefix(domain, "[") {
		return "", errors.New("address in From without domain name")
	}
	return domain, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// reason shortens an error for a reason= property.
func reason(err error) string {
	s := err.Error()
	for _, p := range []string{"dkim: ", "dmarc: "} {
		s = strings.TrimPrefix(s, p)
	}
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}

// value writes s as an RFC 8601 value: a token if it can be one, else a
// quoted-string; control characters are dropped, so that no input can
// break the header.
func value(s string) string {
	var b strings.Builder
	token := s != ""
	for _, r := range s {
		switch {
		case r < ' ' || r == 0x7f || r == ';' || r == '"' || r == '\\':
			// Dropped: ';' because common parsers split on it even
			// inside quoted strings.
			token = false
			continue
		case r > 0x7e || strings.ContainsRune(" ()<>,;:\\\"/[]?=", r):
			token = false
		}
		b.WriteRune(r)
	}
	if token {
		return s
	}
	return `"` + b.String() + `"`
}

// sanitizeID keeps an authserv-id a plain token.
func sanitizeID(id string) string {
	var b strings.Builder
	for _, r := range id {
		if r > ' ' && r < 0x7f && !strings.ContainsRune("()<>,;:\\\"/[]?=", r) {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "localhost"
	}
	return b.String()
}
