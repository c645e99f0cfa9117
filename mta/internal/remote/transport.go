// Package remote delivers mail to other domains (RFC 5321 §5: MX lookup,
// preference order with random choice among equals, implicit MX, null MX
// per RFC 7505, the next MX on connection or TLS failure), or through a
// smarthost or LMTP as the transport map says. TLS follows the security
// level the policy demands (package tlspolicy); only "may" ever falls back
// to plaintext. It honours the remote's SIZE (RFC 1870), converts 8-bit
// bodies to 7 bit for servers without 8BITMIME (RFC 6152), refuses to
// downgrade SMTPUTF8 (RFC 6531 §3.5), passes DSN parameters on where the
// remote supports them (RFC 3461), reuses connections, and limits
// concurrency overall, per destination and by rate.
package remote

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/time/rate"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/dane"
	"github.com/posthorn/posthorn/mta/internal/delivery"
	"github.com/posthorn/posthorn/mta/internal/envaddr"
	"github.com/posthorn/posthorn/mta/internal/maildir"
	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/mta/internal/tlspolicy"
	"github.com/posthorn/posthorn/mta/internal/tlsrpt"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/sdk/mime7bit"
)

// Resolver is the DNS the transport needs (MX and addresses, and TLSA
// and CNAME for DANE).
type Resolver interface {
	MX(ctx context.Context, domain string) ([]*net.MX, bool, error)
	dane.Resolver
}

// Transport is the remote delivery transport.
type Transport struct {
	res      Resolver
	policies *tlspolicy.Map
	routes   map[string]conf.Transport
	helo     string
	roots    *x509.CertPool
	portMap  map[string]int
	ipv6     bool
	// dane turns "may" into opportunistic DANE (Postfix's "dane") and
	// makes "dane-only" enforce it; off, both act as may/encrypt.
	dane    bool
	sts     *mtasts.Fetcher  // nil: MTA-STS off
	rpt     *tlsrpt.Recorder // nil: no TLS-RPT records
	aliases SecureAliases    // nil: no secure aliases
	log     *slog.Logger

	connectTimeout, commandTimeout, dataTimeout time.Duration
	reuseTime                                   time.Duration
	maxPerConn                                  int

	global  chan struct{}
	perDom  int
	perRate int

	mu       sync.Mutex
	domains  map[string]*domainLimit
	idle     map[string][]*conn
	closed   bool
	stopIdle chan struct{}
}

type domainLimit struct {
	sem     chan struct{}
	limiter *rate.Limiter
}

// New builds the transport from config.
func New(cfg *conf.Config, res Resolver, log *slog.Logger) (*Transport, error) {
	o := cfg.Outbound
	pm, err := tlspolicy.NewMap(o.TLSLevel, cfg.TLSPolicies)
	if err != nil {
		return nil, err
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("outbound.ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("outbound.ca_file %s: no certificates found", o.CAFile)
		}
	}
	helo := o.HeloName
	if helo == "" {
		helo = cfg.Hostname
	}
	t := &Transport{
		res: res, policies: pm, routes: map[string]conf.Transport{}, helo: helo, roots: roots,
		portMap: cfg.Testing.PortMap, ipv6: o.IPv6, log: log, dane: cfg.DANE.Enabled,
		connectTimeout: o.ConnectTimeout.D(), commandTimeout: o.CommandTimeout.D(), dataTimeout: o.DataTimeout.D(),
		reuseTime: o.ConnectionReuseTime.D(), maxPerConn: o.MaxMessagesPerConnection,
		global: make(chan struct{}, o.Concurrency), perDom: o.PerDomainConcurrency, perRate: o.PerDomainRate,
		domains: map[string]*domainLimit{}, idle: map[string][]*conn{}, stopIdle: make(chan struct{}),
	}
	for _, r := range cfg.Transports {
		t.routes[r.Domain] = r
	}
	if len(t.portMap) > 0 {
		log.Warn("testing.port_map is set: MX hosts are dialled on test ports, not 25")
	}
	go t.reapIdle()
	return t, nil
}

var _ delivery.Transport = (*Transport)(nil)

// SetEnforcement gives the transport MTA-STS, TLS-RPT and secure aliases;
// each may be nil.
func (t *Transport) SetEnforcement(sts *mtasts.Fetcher, rpt *tlsrpt.Recorder, aliases SecureAliases) {
	t.sts, t.rpt, t.aliases = sts, rpt, aliases
}

// Name implements delivery.Transport.
func (t *Transport) Name() string { return "remote" }

// Close drops idle connections.
func (t *Transport) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	close(t.stopIdle)
	for k, cs := range t.idle {
		for _, c := range cs {
			c.c.Quit()
			c.close()
		}
		delete(t.idle, k)
	}
}

// route returns the transport entry for a domain: exact, then ".parent",
// then "*", then plain MX.
func (t *Transport) route(domain string) conf.Transport {
	if r, ok := t.routes[domain]; ok {
		return r
	}
	d := domain
	for {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		d = d[i+1:]
		if r, ok := t.routes["."+d]; ok {
			return r
		}
	}
	if r, ok := t.routes["*"]; ok {
		return r
	}
	return conf.Transport{Domain: domain, Kind: "mx"}
}

// Deliver implements delivery.Transport: recipients are grouped by
// domain, and each domain is delivered in its own goroutine.
func (t *Transport) Deliver(ctx context.Context, env *queue.Envelope, idx []int, body delivery.Body) map[int]delivery.Outcome {
	out := map[int]delivery.Outcome{}
	// An address that cannot be written as one RFC 5321 path never goes
	// on the wire (smtpd refuses them; this catches older queue files).
	if _, err := envaddr.Format(env.From); err != nil {
		return all(idx, delivery.Failed("5.1.7", "x-posthorn; the sender address cannot be written in SMTP"))
	}
	byDomain := map[string][]int{}
	var order []string
	for _, i := range idx {
		if _, err := envaddr.Format(env.Recipients[i].Addr); err != nil {
			out[i] = delivery.Failed("5.1.3", "x-posthorn; the recipient address cannot be written in SMTP")
			continue
		}
		_, d := router.Split(env.Recipients[i].Addr)
		if _, ok := byDomain[d]; !ok {
			order = append(order, d)
		}
		byDomain[d] = append(byDomain[d], i)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	dem := t.demandsOf(env, body)
	for _, d := range order {
		wg.Add(1)
		go func(d string, idx []int) {
			defer wg.Done()
			res := t.deliverDomain(ctx, env, d, idx, body, dem)
			for i, o := range res {
				res[i] = finalForAlias(dem, o)
			}
			mu.Lock()
			for i, o := range res {
				out[i] = o
			}
			mu.Unlock()
		}(d, byDomain[d])
	}
	wg.Wait()
	return out
}

func all(idx []int, o delivery.Outcome) map[int]delivery.Outcome {
	m := make(map[int]delivery.Outcome, len(idx))
	for _, i := range idx {
		m[i] = o
	}
	return m
}

// candidate is one host to try.
type candidate struct {
	host string
	port int
	pref uint16
}

func (t *Transport) deliverDomain(ctx context.Context, env *queue.Envelope, domain string, idx []int, body delivery.Body, dem demands) map[int]delivery.Outcome {
	r := t.route(domain)
	switch r.Kind {
	case "discard":
		return all(idx, delivery.Delivered("2.0.0", "x-posthorn; discarded by the transport map"))
	case "lmtp":
		return t.deliverLMTP(ctx, env, r.Host, idx, body)
	case "maildir":
		return t.deliverMaildir(env, r.Host, idx, body)
	}
	if err := t.acquire(ctx, domain); err != nil {
		return all(idx, delivery.Deferred("4.4.5", "x-posthorn; "+oneLine(err)))
	}
	defer t.release(domain)

	policy := t.policies.Lookup(domain)
	if r.TLSLevel != conf.TLSUnset {
		policy = tlspolicy.Stronger(policy, tlspolicy.Policy{Level: r.TLSLevel, Source: "transport " + r.Domain})
	}

	if dem.alias != "" && !dem.aliasLevel.Valid() {
		// The user directory could not say which level the sender chose:
		// neither guess nor bounce, try again later.
		return all(idx, delivery.Deferred("4.3.0", "x-posthorn; the secure-alias TLS level of "+dem.alias+" is unknown for now (user directory unavailable)"))
	}
	if dem.alias != "" {
		switch dem.aliasLevel {
		case tlspolicy.Verify:
			// "verify" for a secure alias: only to destinations whose
			// certificate the operator pinned.
			if len(policy.Fingerprints) == 0 {
				return all(idx, delivery.Failed("5.7.10", fmt.Sprintf("x-posthorn; %s may only send to destinations whose certificate is pinned, and %s's is not", dem.alias, domain)))
			}
		default:
			policy = tlspolicy.Stronger(policy, tlspolicy.Policy{Level: dem.aliasLevel, Source: "secure alias " + dem.alias})
		}
	}
	var sts *mtasts.Policy
	if r.Kind == "mx" && !dem.tlsOptional {
		var stsErr error
		sts, stsErr = t.stsPolicy(ctx, domain)
		if stsErr != nil {
			t.log.Info("MTA-STS policy announced but not usable; delivering as without", "domain", domain, "err", stsErr)
			if t.rpt != nil {
				t.rpt.Record(tlsrpt.Attempt{Time: time.Now(), Domain: domain, PolicyType: tlsrpt.PolicySTS,
					Result: tlsrpt.Classify(stsErr), AdditionalInfo: oneLine(stsErr)})
			}
		}
	}

	var cands []candidate
	mxSecure := false
	var auth sasl.Client
	implicit := false
	if r.Kind == "smarthost" {
		host, port, _ := net.SplitHostPort(r.Host)
		p, _ := strconv.Atoi(port)
		cands = []candidate{{host: host, port: p}}
		implicit = r.ImplicitTLS
		if r.AuthUser != "" {
			pw, err := os.ReadFile(r.AuthPasswordFile)
			if err != nil {
				return all(idx, delivery.Deferred("4.3.5", "x-posthorn; smarthost password file: "+oneLine(err)))
			}
			auth = sasl.NewPlainClient("", r.AuthUser, strings.TrimRight(strings.SplitN(string(pw), "\n", 2)[0], "\r"))
		}
	} else {
		var o *delivery.Outcome
		cands, mxSecure, o = t.mxCandidates(ctx, domain)
		if o != nil {
			return all(idx, *o)
		}
		var aerr *attemptError
		if cands, aerr = applySTS(sts, cands); aerr != nil {
			return all(idx, delivery.Outcome{State: queue.Pending, Status: aerr.status, Diagnostic: "x-posthorn; " + aerr.diag})
		}
	}

	var last *attemptError
	tried := 0
	for _, cand := range cands {
		hostPolicy, daneRes, aerr := t.hostPolicyFor(ctx, policy, cand.host, mxSecure && r.Kind != "smarthost", sts, dem)
		if aerr != nil {
			t.record(domain, cand.host, "", policy, nil, sts, aerr)
			if aerr.permanent && len(cands) == 1 {
				return all(idx, delivery.Failed(aerr.status, "x-posthorn; "+aerr.diag))
			}
			last = aerr
			t.log.Info("MX host skipped", "queue_id", env.ID, "domain", domain, "host", cand.host, "err", aerr.diag)
			continue
		}
		ips, _, err := t.res.IP(ctx, cand.host)
		if err != nil {
			last = tempErr("4.4.3", "cannot resolve %s: %s", cand.host, oneLine(err))
			continue
		}
		for _, ip := range ips {
			if ip.To4() == nil && !t.ipv6 {
				continue
			}
			port := cand.port
			if p, ok := t.portMap[strings.TrimSuffix(cand.host, ".")]; ok {
				port = p
			}
			spec := dialSpec{host: strings.TrimSuffix(cand.host, "."), nexthop: domain,
				addr: net.JoinHostPort(ip.String(), strconv.Itoa(port)), policy: hostPolicy, implicit: implicit, auth: auth, dane: daneRes,
				observe: sts != nil && sts.Mode == mtasts.Testing && daneRes == nil, requireTLS: dem.requireTLS, askRequireTLS: dem.alias != ""}
			tried++
			res, aerr, obs := t.transaction(ctx, env, spec, idx, body)
			if aerr == nil && obs != nil {
				t.record(domain, spec.host, spec.addr, hostPolicy, daneRes, sts, obs)
			} else {
				t.record(domain, spec.host, spec.addr, hostPolicy, daneRes, sts, aerr)
			}
			if aerr == nil {
				return res
			}
			last = aerr
			t.log.Info("delivery attempt failed", "queue_id", env.ID, "domain", domain, "host", spec.host, "addr", spec.addr, "err", aerr.diag)
			if aerr.permanent {
				return all(idx, delivery.Failed(aerr.status, "x-posthorn; "+aerr.diag))
			}
		}
	}
	if last == nil {
		last = tempErr("4.4.4", "no usable address for any MX host of %s", domain)
	}
	if last.permanent {
		return all(idx, delivery.Failed(last.status, "x-posthorn; "+last.diag))
	}
	return all(idx, delivery.Outcome{State: queue.Pending, Status: last.status, Diagnostic: "x-posthorn; " + last.diag})
}

// mxCandidates resolves the MX hosts of domain in the order RFC 5321 §5.1
// asks: by preference, random among equals; no MX means the domain itself
// (implicit MX). A null MX (RFC 7505) or a domain that does not exist
// fails the recipients at once.
func (t *Transport) mxCandidates(ctx context.Context, domain string) ([]candidate, bool, *delivery.Outcome) {
	mxs, secure, err := t.res.MX(ctx, domain)
	switch {
	case err == nil:
	case resolver.IsNXDomain(err):
		o := delivery.Failed("5.1.2", fmt.Sprintf("x-posthorn; domain %s does not exist", domain))
		return nil, false, &o
	case errors.Is(err, resolver.ErrNotFound):
		// Implicit MX; the secure flag is that of the authenticated
		// denial (the address lookup is checked again by DANE).
		mxs = []*net.MX{{Host: domain, Pref: 0}}
	default:
		o := delivery.Deferred("4.4.3", fmt.Sprintf("x-posthorn; MX lookup for %s failed: %s", domain, oneLine(err)))
		return nil, false, &o
	}
	if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
		o := delivery.Failed("5.1.10", fmt.Sprintf("x-posthorn; %s does not accept mail (null MX, RFC 7505)", domain))
		return nil, false, &o
	}
	return OrderMX(mxs, rand.IntN), secure, nil
}

// hostPolicy applies DANE (RFC 7672) to one MX host. At may and dane
// (with DANE on), secure usable TLSA records make TLS mandatory and
// authenticated by them, secure unusable ones make it mandatory; a failed
// lookup the decision depends on skips the host (deferral if no other
// host works), never a downgrade. At dane-only, anything but usable TLSA
// skips the host. Stronger explicit levels (encrypt and up) are the
// operator's choice and stay as they are.
func (t *Transport) hostPolicy(ctx context.Context, p tlspolicy.Policy, host string, mxSecure bool) (tlspolicy.Policy, *dane.Result, *attemptError) {
	if !t.dane || (p.Level != tlspolicy.May && p.Level != tlspolicy.Dane && p.Level != tlspolicy.DaneOnly) {
		return p, nil, nil
	}
	r, err := dane.LookupHost(ctx, t.res, host, 25, mxSecure)
	switch r.State {
	case dane.Indeterminate:
		return p, nil, tempErr("4.7.5", "DANE: TLSA lookup for %s failed (%s); not delivering without the answer", host, oneLine(orErr(err, r.Reason)))
	case dane.Authenticate:
		return tlspolicy.Policy{Level: tlspolicy.DaneOnly, Source: "DANE TLSA " + r.Base}, r, nil
	case dane.Unusable:
		if p.Level == tlspolicy.DaneOnly {
			return p, nil, tempErr("4.7.5", "dane-only: TLSA records of %s are all unusable", host)
		}
		return tlspolicy.Policy{Level: tlspolicy.Encrypt, Source: "DANE (unusable TLSA) " + r.Base}, nil, nil
	}
	if p.Level == tlspolicy.DaneOnly {
		return p, nil, tempErr("4.7.5", "dane-only: %s has no usable DNSSEC-signed TLSA records (%s)", host, r.Reason)
	}
	return p, nil, nil
}

// hostPolicyFor is hostPolicy with the message's demands and the domain's
// MTA-STS policy: DANE, where it authenticates the host, wins over
// MTA-STS (RFC 8461 §2); an enforced (or, for REQUIRETLS, a testing)
// MTA-STS policy asks verify; REQUIRETLS (RFC 8689 §4.2) needs the host
// authenticated by one of the two, else the message cannot go there.
func (t *Transport) hostPolicyFor(ctx context.Context, p tlspolicy.Policy, host string, mxSecure bool, sts *mtasts.Policy, dem demands) (tlspolicy.Policy, *dane.Result, *attemptError) {
	stsApplies := sts != nil && (sts.Mode == mtasts.Enforce || dem.requireTLS)
	daneP := p
	if t.dane && !dem.tlsOptional && (stsApplies || dem.requireTLS) && tlspolicy.Dane.Stronger(daneP.Level) {
		daneP.Level = tlspolicy.Dane
	}
	if dem.tlsOptional && (p.Level == tlspolicy.Dane || p.Level == tlspolicy.DaneOnly) && p.Source == "default (outbound.tls_level)" {
		daneP.Level = tlspolicy.May
	}
	hp, dr, aerr := t.hostPolicy(ctx, daneP, host, mxSecure)
	if aerr != nil || dr != nil {
		return hp, dr, aerr
	}
	if stsApplies {
		hp = tlspolicy.Stronger(hp, stsHostPolicy(sts))
	}
	if dem.requireTLS && !stsApplies {
		return hp, nil, &attemptError{status: "5.7.30", permanent: true,
			diag: fmt.Sprintf("REQUIRETLS: neither MTA-STS nor DANE authenticates %s", host)}
	}
	return hp, nil, nil
}

func orErr(err error, reason string) error {
	if err != nil {
		return err
	}
	return errors.New(reason)
}

// OrderMX sorts MX records by preference and shuffles hosts of equal
// preference with rnd (RFC 5321 §5.1); records for "." are dropped.
func OrderMX(mxs []*net.MX, rnd func(int) int) []candidate {
	var out []candidate
	for _, m := range mxs {
		if m.Host == "." || m.Host == "" {
			continue
		}
		out = append(out, candidate{host: strings.TrimSuffix(m.Host, "."), port: 25, pref: m.Pref})
	}
	for i := len(out) - 1; i > 0; i-- {
		j := rnd(i + 1)
		out[i], out[j] = out[j], out[i]
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].pref < out[j].pref })
	return out
}

func (t *Transport) acquire(ctx context.Context, domain string) error {
	t.mu.Lock()
	dl := t.domains[domain]
	if dl == nil {
		dl = &domainLimit{sem: make(chan struct{}, t.perDom)}
		if t.perRate > 0 {
			dl.limiter = rate.NewLimiter(rate.Every(time.Minute/time.Duration(t.perRate)), 1)
		}
		t.domains[domain] = dl
	}
	t.mu.Unlock()
	select {
	case t.global <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case dl.sem <- struct{}{}:
	case <-ctx.Done():
		<-t.global
		return ctx.Err()
	}
	if dl.limiter != nil {
		if err := dl.limiter.Wait(ctx); err != nil {
			<-dl.sem
			<-t.global
			return fmt.Errorf("rate limit for %s: %w", domain, err)
		}
	}
	return nil
}

func (t *Transport) release(domain string) {
	t.mu.Lock()
	dl := t.domains[domain]
	t.mu.Unlock()
	<-dl.sem
	<-t.global
}

// deliverMaildir writes each recipient's copy into DIR/LOCALPART, a
// Maildir (the "maildir" transport: development, archives).
func (t *Transport) deliverMaildir(env *queue.Envelope, dir string, idx []int, body delivery.Body) map[int]delivery.Outcome {
	out := map[int]delivery.Outcome{}
	for _, i := range idx {
		local, _ := router.Split(env.Recipients[i].Addr)
		box := filepath.Join(dir, strings.ToLower(strings.Map(func(r rune) rune {
			if r == '/' || r == 0 {
				return '_'
			}
			return r
		}, local)))
		uniq := fmt.Sprintf("%s.R%d", env.ID, i)
		if ok, err := maildir.Exists(box, uniq); err == nil && ok {
			out[i] = delivery.Delivered("2.0.0", "x-posthorn; already in "+box)
			continue
		}
		rc, err := body()
		if err != nil {
			out[i] = delivery.Deferred("4.3.0", "x-posthorn; cannot read queued message: "+oneLine(err))
			continue
		}
		_, err = maildir.Deliver(box, uniq, rc, []byte(fmt.Sprintf("Return-Path: <%s>\r\nDelivered-To: %s\r\n", env.From, env.Recipients[i].Addr)))
		rc.Close()
		switch {
		case err == nil:
			out[i] = delivery.Delivered("2.0.0", "x-posthorn; delivered to "+box)
		case maildir.IsTemporary(err):
			out[i] = delivery.Deferred("4.2.0", "x-posthorn; "+oneLine(err))
		default:
			out[i] = delivery.Failed("5.2.0", "x-posthorn; "+oneLine(err))
		}
	}
	return out
}

func (t *Transport) deliverLMTP(ctx context.Context, env *queue.Envelope, target string, idx []int, body delivery.Body) map[int]delivery.Outcome {
	return delivery.DeliverLMTP(ctx, env, target, idx, body, t.helo, t.commandTimeout)
}

// transaction delivers over one connection (reused or new). A nil
// attemptError means the remote took part in a transaction and every
// recipient in idx has an outcome.
func (t *Transport) transaction(ctx context.Context, env *queue.Envelope, spec dialSpec, idx []int, body delivery.Body) (map[int]delivery.Outcome, *attemptError, *attemptError) {
	for attempt := 0; attempt < 2; attempt++ {
		c, reused := t.getIdle(spec.key())
		if c == nil {
			nc, err := t.dial(ctx, spec)
			if err != nil {
				var ae *attemptError
				if errors.As(err, &ae) {
					return nil, ae, nil
				}
				return nil, tempErr("4.4.1", "%s", oneLine(err)), nil
			}
			c = nc
		}
		res, aerr, broken := t.send(env, c, idx, body)
		if broken && reused && attempt == 0 {
			// A cached connection may have been closed by the server
			// while idle: try once more on a fresh one.
			c.close()
			continue
		}
		obs := c.tls.observed
		if aerr != nil || broken {
			c.close()
		} else {
			t.putIdle(c)
		}
		return res, aerr, obs
	}
	return nil, tempErr("4.4.2", "connection to %s lost", spec.addr), nil
}

// send runs MAIL, RCPT and DATA. broken reports that the connection died
// before any reply about this message (safe to retry elsewhere).
func (t *Transport) send(env *queue.Envelope, c *conn, idx []int, body delivery.Body) (map[int]delivery.Outcome, *attemptError, bool) {
	cl := c.c
	remoteMTA := c.host
	if max, ok := cl.MaxMessageSize(); ok && max > 0 && env.Size > int64(max) {
		return nil, &attemptError{status: "5.3.4", permanent: true,
			diag: fmt.Sprintf("message of %d bytes is larger than %s accepts (SIZE %d)", env.Size, c.host, max)}, false
	}
	utf8, _ := cl.Extension("SMTPUTF8")
	if env.SMTPUTF8 && !utf8 {
		return nil, &attemptError{status: "5.6.7", permanent: true,
			diag: fmt.Sprintf("message needs SMTPUTF8, which %s does not support", c.host)}, false
	}
	eightBit, _ := cl.Extension("8BITMIME")
	dsn, _ := cl.Extension("DSN")
	rtls, _ := cl.Extension("REQUIRETLS")
	if c.spec.requireTLS && !rtls {
		return nil, &attemptError{status: "5.7.30", permanent: true,
			diag: fmt.Sprintf("REQUIRETLS: %s does not support REQUIRETLS (RFC 8689)", c.host)}, false
	}
	mopts := &smtp.MailOptions{Size: env.Size, UTF8: env.SMTPUTF8, EnvelopeID: env.EnvID,
		RequireTLS: rtls && (c.spec.requireTLS || c.spec.askRequireTLS)}
	c.ext8bit, c.extDSN = eightBit, dsn
	if pipelining, _ := cl.Extension("PIPELINING"); pipelining {
		mp, rp := transactionParams(env, idx, cl, mopts.RequireTLS)
		return t.pipelined(env, c, idx, body, mp, rp)
	}
	switch env.Ret {
	case "FULL":
		mopts.Return = smtp.DSNReturnFull
	case "HDRS":
		mopts.Return = smtp.DSNReturnHeaders
	}
	if err := cl.Mail(wireAddr(env.From), mopts); err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			return nil, tempErr("4.4.2", "%s[%s]: lost connection at MAIL: %s", c.host, c.addr, oneLine(err)), true
		}
		o := outcomeFromReply(se, remoteMTA, "MAIL")
		cl.Reset()
		return all(idx, o), nil, false
	}
	out := map[int]delivery.Outcome{}
	var accepted []int
	for _, i := range idx {
		r := env.Recipients[i]
		ropts := &smtp.RcptOptions{}
		for _, n := range r.Notify {
			ropts.Notify = append(ropts.Notify, smtp.DSNNotify(n))
		}
		if typ, addr, ok := strings.Cut(r.ORcpt, ";"); ok && strings.EqualFold(typ, "rfc822") {
			ropts.OriginalRecipientType = smtp.DSNAddressTypeRFC822
			ropts.OriginalRecipient = addr
		}
		if err := cl.Rcpt(wireAddr(r.Addr), ropts); err != nil {
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				return nil, tempErr("4.4.2", "%s[%s]: lost connection at RCPT: %s", c.host, c.addr, oneLine(err)), len(accepted) == 0 && len(out) == 0
			}
			out[i] = outcomeFromReply(se, remoteMTA, "RCPT")
			continue
		}
		accepted = append(accepted, i)
	}
	if len(accepted) == 0 {
		cl.Reset()
		return out, nil, false
	}
	rc, err := body()
	if err != nil {
		cl.Reset()
		for _, i := range accepted {
			out[i] = delivery.Deferred("4.3.0", "x-posthorn; cannot read queued message: "+oneLine(err))
		}
		return out, nil, false
	}
	defer rc.Close()
	w, err := cl.Data()
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			return nil, tempErr("4.4.2", "%s[%s]: lost connection at DATA: %s", c.host, c.addr, oneLine(err)), false
		}
		for _, i := range accepted {
			out[i] = outcomeFromReply(se, remoteMTA, "DATA")
		}
		return out, nil, false
	}
	var src io.Reader = rc
	if env.BodyType == "8BITMIME" && !eightBit {
		conv := mime7bit.Reader(rc) // RFC 6152 §3
		defer conv.Close()
		src = conv
	}
	_, werr := io.Copy(w, src)
	resp, cerr := w.CloseWithResponse()
	if werr != nil && cerr == nil {
		cerr = werr
	}
	if cerr != nil {
		var se *smtp.SMTPError
		if !errors.As(cerr, &se) {
			// Connection lost during or after the data: the message may
			// or may not have arrived; the queue retries (a duplicate is
			// better than a loss).
			return nil, tempErr("4.4.2", "%s[%s]: lost connection after DATA: %s", c.host, c.addr, oneLine(cerr)), false
		}
		for _, i := range accepted {
			out[i] = outcomeFromReply(se, remoteMTA, "end of DATA")
		}
		return out, nil, false
	}
	c.msgs++
	text := ""
	if resp != nil {
		text = resp.StatusText
	}
	for _, i := range accepted {
		out[i] = delivery.Outcome{State: queue.Delivered, Status: "2.0.0",
			Diagnostic: fmt.Sprintf("smtp; 250 %s (%s)", oneLine(errors.New(text+" ")), c.tls), RemoteMTA: remoteMTA,
			DSNPassedOn: dsn}
	}
	t.log.Info("delivered", "queue_id", env.ID, "host", c.host, "addr", c.addr, "tls", c.tls.String(), "rcpts", len(accepted))
	return out, nil, false
}

// transactionParams are the MAIL and RCPT parameters for the server's
// extensions, as go-smtp's client would send them.
func transactionParams(env *queue.Envelope, idx []int, cl *smtp.Client, requireTLS bool) (string, []string) {
	has := func(ext string) bool { ok, _ := cl.Extension(ext); return ok }
	var m strings.Builder
	if env.BodyType == "8BITMIME" && has("8BITMIME") {
		m.WriteString(" BODY=8BITMIME")
	}
	if has("SIZE") && env.Size > 0 {
		fmt.Fprintf(&m, " SIZE=%d", env.Size)
	}
	if env.SMTPUTF8 {
		m.WriteString(" SMTPUTF8")
	}
	if requireTLS {
		m.WriteString(" REQUIRETLS")
	}
	dsn := has("DSN")
	if dsn {
		if env.Ret == "FULL" || env.Ret == "HDRS" {
			m.WriteString(" RET=" + env.Ret)
		}
		if env.EnvID != "" {
			m.WriteString(" ENVID=" + xtext(env.EnvID))
		}
	}
	rp := make([]string, len(idx))
	for k, i := range idx {
		r := env.Recipients[i]
		if !dsn {
			continue
		}
		var b strings.Builder
		if len(r.Notify) > 0 {
			b.WriteString(" NOTIFY=" + strings.Join(r.Notify, ","))
		}
		if typ, addr, ok := strings.Cut(r.ORcpt, ";"); ok && strings.EqualFold(typ, "rfc822") {
			b.WriteString(" ORCPT=rfc822;" + xtext(addr))
		}
		rp[k] = b.String()
	}
	return m.String(), rp
}

func outcomeFromReply(se *smtp.SMTPError, remoteMTA, stage string) delivery.Outcome {
	st := enhanced(se)
	diag := fmt.Sprintf("smtp; %d %s %s (at %s)", se.Code, enhancedString(se), oneLine(errors.New(se.Message+" ")), stage)
	state := queue.Failed
	if se.Code < 500 {
		state = queue.Pending
		if st[0] != '4' {
			st = "4" + st[1:]
		}
	} else if st[0] != '5' {
		st = "5" + st[1:]
	}
	return delivery.Outcome{State: state, Status: st, Diagnostic: diag, RemoteMTA: remoteMTA}
}

func (t *Transport) getIdle(key string) (*conn, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := t.idle[key]
	if len(cs) == 0 {
		return nil, false
	}
	c := cs[len(cs)-1]
	t.idle[key] = cs[:len(cs)-1]
	return c, true
}

func (t *Transport) putIdle(c *conn) {
	if t.reuseTime <= 0 || c.msgs >= t.maxPerConn {
		c.c.Quit()
		c.close()
		return
	}
	if err := c.c.Reset(); err != nil {
		c.close()
		return
	}
	c.lastUse = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.close()
		return
	}
	t.idle[c.key] = append(t.idle[c.key], c)
}

func (t *Transport) reapIdle() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-t.stopIdle:
			return
		case <-tick.C:
		}
		t.mu.Lock()
		for k, cs := range t.idle {
			keep := cs[:0]
			for _, c := range cs {
				if time.Since(c.lastUse) > t.reuseTime {
					go func(c *conn) { c.c.Quit(); c.close() }(c)
				} else {
					keep = append(keep, c)
				}
			}
			if len(keep) == 0 {
				delete(t.idle, k)
			} else {
				t.idle[k] = keep
			}
		}
		t.mu.Unlock()
	}
}
