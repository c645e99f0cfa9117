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
	// Addrs returns the addresses to connect to: A, and AAAA when v6
	// (a failed AAAA lookup does not hide the A answer).
	Addrs(ctx context.Context, host string, v6 bool) ([]net.IP, error)
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
	source   []string // [outbound] source_address
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
		portMap: cfg.Testing.PortMap, ipv6: o.IPv6, source: o.SourceAddress, log: log, dane: cfg.DANE.Enabled,
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

// Kind is the kind of route mail to addr takes: mx, smarthost, lmtp,
// maildir or discard (for the delivery metrics).
func (t *Transport) Kind(addr string) string {
	d := addr[strings.LastIndexByte(addr, '@')+1:]
	return t.route(strings.ToLower(strings.TrimSuffix(d, "."))).Kind
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
	dem := t.demandsOf(env, body)
	if len(order) == 1 {
		// One domain (the common case): no goroutine to hand it to.
		for i, o := range t.deliverDomain(ctx, env, order[0], byDomain[order[0]], body, dem) {
			out[i] = finalForAlias(dem, o)
		}
		return out
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
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
	// static: a host the operator named (smarthost): an IP literal,
	// localhost or a name from /etc/hosts needs no DNS.
	static bool
}

func (t *Transport) deliverDomain(ctx context.Context, env *queue.Envelope, domain string, idx []int, body delivery.Body, dem demands) map[int]delivery.Outcome {
	r := t.route(domain)
	switch r.Kind {
	case "discard":
		return all(idx, delivery.Delivered("2.0.0", "x-posthorn; discarded by the transport map"))
	case "lmtp":
		return t.deliverLMTP(ctx, env, r, idx, body)
	case "maildir":
		return t.deliverMaildir(env, r.Host, idx, body)
	}
	if err := t.acquire(ctx, domain); err != nil {
		return all(idx, delivery.Deferred("4.4.5", "x-posthorn; "+oneLine(err)))
	}
	defer t.release(domain)

	if dem.alias != "" && !dem.aliasLevel.Valid() {
		// The user directory could not say which level the sender chose:
		// neither guess nor bounce, try again later.
		return all(idx, delivery.Deferred("4.3.0", "x-posthorn; the secure-alias TLS level of "+dem.alias+" is unknown for now (user directory unavailable)"))
	}
	base := t.policies.Lookup(domain)
	var sts stsInfo
	if r.Kind == "mx" && t.sts != nil && !dem.optional() {
		sts = t.stsLookup(ctx, domain)
		if sts.err != nil {
			t.log.Info("MTA-STS: "+sts.state.String(), "domain", domain, "err", sts.err)
		}
	}

	var cands []candidate
	mxSecure := false
	var auth sasl.Client
	implicit := false
	if r.Kind == "smarthost" {
		host, port, _ := net.SplitHostPort(r.Host)
		p, _ := strconv.Atoi(port)
		cands = []candidate{{host: host, port: p, static: true}}
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
		cands, mxSecure, o = t.mxCandidates(ctx, domain, dem)
		if o != nil {
			return all(idx, *o)
		}
	}

	var last *attemptError
	for _, cand := range cands {
		eff, daneRes := t.hostPolicyFor(ctx, base, r, domain, cand.host, mxSecure && r.Kind != "smarthost", sts, dem)
		info := attemptInfo{dane: daneRes, sts: sts, localIP: t.sourceFor(r, nil)}
		if eff.Refuse != nil {
			aerr := refusalErr(eff.Refuse, daneRes)
			t.record(domain, cand.host, info, aerr)
			if aerr.permanent && len(cands) == 1 {
				return all(idx, delivery.Failed(aerr.status, "x-posthorn; "+aerr.diag))
			}
			if last == nil || !last.permanent {
				last = aerr
			}
			t.log.Info("MX host skipped", "queue_id", env.ID, "domain", domain, "host", cand.host, "err", aerr.diag)
			continue
		}
		ips, err := t.hostAddrs(ctx, cand)
		if err != nil {
			if last == nil || !last.permanent {
				last = tempErr("4.4.3", "cannot resolve %s: %s", cand.host, oneLine(err))
			}
			continue
		}
		for _, ip := range ips {
			port := cand.port
			if p, ok := t.portMap[strings.TrimSuffix(cand.host, ".")]; ok {
				port = p
			}
			var dr *dane.Result
			if eff.DANE {
				dr = daneRes
			}
			spec := dialSpec{host: strings.TrimSuffix(cand.host, "."), nexthop: domain,
				addr: net.JoinHostPort(ip.String(), strconv.Itoa(port)), policy: eff, implicit: implicit, auth: auth, dane: dr,
				requireTLS: dem.requireTLS, askRequireTLS: dem.alias != "", source: t.sourceFor(r, ip)}
			res, aerr, obs, local := t.transaction(ctx, env, spec, idx, body)
			info.addr, info.localIP = spec.addr, local
			if aerr == nil && obs != nil {
				t.record(domain, spec.host, info, obs)
			} else {
				t.record(domain, spec.host, info, aerr)
			}
			if aerr == nil {
				return res
			}
			if last == nil || !last.permanent {
				last = aerr
			}
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

// refusalErr turns a refusal of the effective policy into the attempt
// error the delivery reports.
func refusalErr(r *tlspolicy.Refusal, dr *dane.Result) *attemptError {
	diag := r.Reason
	if r.DNSSEC && dr != nil && dr.Reason != "" {
		diag += " (" + dr.Reason + ")"
	}
	return &attemptError{status: r.Status, diag: diag, permanent: r.Permanent, ours: r.Ours, dnssec: r.DNSSEC}
}

// mxCandidates resolves the MX hosts of domain in the order RFC 5321 §5.1
// asks: by preference, random among equals; no MX means the domain itself
// (implicit MX). A null MX (RFC 7505) or a domain that does not exist
// fails the recipients at once.
func (t *Transport) mxCandidates(ctx context.Context, domain string, dem demands) ([]candidate, bool, *delivery.Outcome) {
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
	case errors.Is(err, resolver.ErrBogus) && dem.alias != "":
		// SERVFAIL, as a validating resolver answers for DNSSEC-bogus
		// data: a secure alias's mail cannot be sent securely; it
		// bounces at once (finalForAlias) instead of waiting for days.
		o := delivery.Deferred("4.7.5", fmt.Sprintf("x-posthorn; the MX lookup for %s failed DNSSEC validation or the server failed (%s), so no secure connection can be had", domain, oneLine(err)))
		return nil, false, &o
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

// hostPolicyFor gathers every input for one MX host (the policy map, the
// transport's level, DANE, the domain's MTA-STS, the sender's secure
// alias level and REQUIRETLS) and returns the effective policy
// (tlspolicy.Compute: the strongest of them) with the host's DANE result.
// DANE is looked up at every level when it is on and the MX RRset is
// signed: usable TLSA records are never ignored.
func (t *Transport) hostPolicyFor(ctx context.Context, base tlspolicy.Policy, r conf.Transport, nexthop, host string, mxSecure bool, sts stsInfo, dem demands) (tlspolicy.Effective, *dane.Result) {
	in := tlspolicy.Inputs{Map: base, Transport: r.TLSLevel, TransportName: r.Domain, Nexthop: nexthop,
		Host: strings.TrimSuffix(host, "."), RequireTLS: dem.requireTLS, Alias: dem.aliasLevel, AliasSender: dem.alias,
		STS: sts.hostState(host), STSDomain: nexthop}
	var dr *dane.Result
	if t.dane && mxSecure {
		dr, _ = dane.LookupHost(ctx, t.res, host, 25, true)
		switch dr.State {
		case dane.Authenticate:
			in.DANE = tlspolicy.DANEUsable
		case dane.Unusable:
			in.DANE = tlspolicy.DANEUnusable
		case dane.Indeterminate:
			in.DANE = tlspolicy.DANEIndeterminate
		}
	}
	return tlspolicy.Compute(in), dr
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

// deliverLMTP hands the recipients to an LMTP server; a TCP server's
// host name is resolved like a smarthost's (IP literal, localhost,
// /etc/hosts, else the configured resolver), and the connection comes
// from the transport's source address.
func (t *Transport) deliverLMTP(ctx context.Context, env *queue.Envelope, r conf.Transport, idx []int, body delivery.Body) map[int]delivery.Outcome {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if network != "tcp" {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := t.hostAddrs(ctx, candidate{host: host, static: true})
		if err != nil {
			return nil, err
		}
		var errs []error
		for _, ip := range ips {
			c, err := dialerFrom(t.sourceFor(r, ip)).DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
	return delivery.DeliverLMTP(ctx, env, r.Host, idx, body, t.helo, t.commandTimeout, dial)
}

// transaction delivers over one connection (reused or new). A nil
// attemptError means the remote took part in a transaction and every
// recipient in idx has an outcome. It also returns what an MTA-STS
// policy in testing mode would have refused, and the local address the
// connection came from.
func (t *Transport) transaction(ctx context.Context, env *queue.Envelope, spec dialSpec, idx []int, body delivery.Body) (map[int]delivery.Outcome, *attemptError, *attemptError, string) {
	for attempt := 0; attempt < 2; attempt++ {
		c, reused := t.getIdle(spec.key())
		if c == nil {
			nc, err := t.dial(ctx, spec)
			if err != nil {
				var ae *attemptError
				if errors.As(err, &ae) {
					return nil, ae, nil, ae.localIP
				}
				return nil, tempErr("4.4.1", "%s", oneLine(err)), nil, ""
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
		if aerr != nil || broken || c.unusable {
			c.close()
		} else {
			t.putIdle(c)
		}
		return res, aerr, obs, c.localIP
	}
	return nil, tempErr("4.4.2", "connection to %s lost", spec.addr), nil, ""
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
	if pipelining, _ := c.c.Extension("PIPELINING"); !pipelining {
		// go-smtp's client spoke the transaction (send): reset it there.
		if err := c.c.Reset(); err != nil {
			c.close()
			return
		}
	}
	// A pipelined transaction needs no RSET after its end of data; one
	// left unfinished gets it in front of the next MAIL (txnOpen).
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
