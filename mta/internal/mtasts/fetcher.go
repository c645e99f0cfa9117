package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/mta/internal/resolver"
)

// Resolver looks up TXT records; *resolver.Resolver has it.
type Resolver interface {
	TXT(ctx context.Context, name string) ([]string, bool, error)
}

// Options configure a Fetcher.
type Options struct {
	// Resolver is required.
	Resolver Resolver
	// HTTPClient fetches policies. Nil means a client built from
	// DialContext, RootCAs and Timeout. A given client is used as is,
	// except that redirects are never followed (RFC 8461 section 3.3).
	HTTPClient *http.Client
	// DialContext replaces the dialer of the built client (tests point
	// mta-sts.DOMAIN:443 at a local server with it).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// RootCAs are the trust anchors for policy hosts; nil means the
	// system's.
	RootCAs *x509.CertPool
	// Timeout bounds one policy fetch, connection to last byte; zero
	// means DefaultTimeout.
	Timeout time.Duration
	// MaxBody is the largest policy accepted; zero means DefaultMaxBody.
	MaxBody int64
	// CacheDir keeps policies across restarts, one JSON file per domain;
	// empty means memory only.
	CacheDir string
	// CacheDB, when set, is the PostgreSQL database shared by the nodes
	// of a cluster ([database]): policies are cached there instead of
	// CacheDir, so a policy one node fetched is enforced by every node,
	// also when the policy host cannot be reached from another.
	CacheDB *sql.DB
	// RetryAfter: after a failed fetch for a domain and TXT id, do not
	// fetch again for this long (RFC 8461 section 3.3 allows senders to
	// rate-limit fetches); zero means DefaultRetryAfter.
	RetryAfter time.Duration
	// RefreshInterval is how often RefreshLoop looks for policies that
	// are due for a refresh; zero means DefaultRefreshInterval.
	RefreshInterval time.Duration
	// Logger, nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

const (
	// DefaultTimeout for a policy fetch. RFC 8461 leaves the value to
	// senders (section 3.3 asks for limits on time and size); one minute
	// is the common choice and the bound the RFC's discussion suggests.
	DefaultTimeout = 60 * time.Second
	// DefaultMaxBody: 64 KiB, the policy size limit RFC 8461 section 3.3
	// suggests.
	DefaultMaxBody = 64 << 10
	// DefaultRetryAfter is the pause after a failed fetch.
	DefaultRetryAfter = 5 * time.Minute
	// DefaultRefreshInterval is RefreshLoop's tick.
	DefaultRefreshInterval = time.Hour
)

// PolicyState says where the policy Lookup returned came from.
type PolicyState int

const (
	// NoPolicy: the domain has no MTA-STS policy (no TXT record, none
	// cached). A non-nil error says why discovery failed (DNS failure,
	// invalid TXT record); delivery proceeds as without MTA-STS.
	NoPolicy PolicyState = iota
	// Fetched: the policy was fetched now (new domain, changed id, or
	// the cached one expired).
	Fetched
	// Cached: the cached policy is current (the TXT id is unchanged).
	Cached
	// CachedFallback: the cached, unexpired policy is used although
	// discovery or the fetch of a new one failed, or the TXT record
	// disappeared (RFC 8461 section 5.1: a valid cached policy is never
	// replaced by a failed fetch). The error says what failed.
	CachedFallback
	// FetchFailed: a TXT record announces a policy, but it could not be
	// fetched or was invalid, and nothing is cached: deliver as without
	// MTA-STS (RFC 8461 section 3.3), report the *FetchError (TLS-RPT).
	FetchFailed
)

func (s PolicyState) String() string {
	switch s {
	case NoPolicy:
		return "no-policy"
	case Fetched:
		return "fetched"
	case Cached:
		return "cached"
	case CachedFallback:
		return "cached-fallback"
	case FetchFailed:
		return "fetch-failed"
	}
	return "PolicyState(" + strconv.Itoa(int(s)) + ")"
}

// ErrNoRecord: there is no MTA-STS TXT record.
var ErrNoRecord = errors.New("mtasts: no MTA-STS TXT record")

// TLS-RPT result types of fetch failures (RFC 8460 section 4.3.2.2).
const (
	ResultFetchError  = "sts-policy-fetch-error"
	ResultInvalid     = "sts-policy-invalid"
	ResultWebPKIError = "sts-webpki-invalid"
)

// FetchError is a failed policy fetch.
type FetchError struct {
	Domain string
	// ResultType is the TLS-RPT result type: ResultFetchError,
	// ResultInvalid or ResultWebPKIError.
	ResultType string
	Err        error
}

func (e *FetchError) Error() string {
	return "mtasts: policy of " + e.Domain + ": " + e.Err.Error()
}

func (e *FetchError) Unwrap() error { return e.Err }

// Fetcher discovers, fetches, validates and caches MTA-STS policies. It
// is safe for concurrent use.
type Fetcher struct {
	res        Resolver
	client     *http.Client
	timeout    time.Duration
	maxBody    int64
	retryAfter time.Duration
	refresh    time.Duration
	log        *slog.Logger
	now        func() time.Time
	cache      policyCache

	mu       sync.Mutex
	policies map[string]*Policy
	failures map[string]time.Time // "domain id" -> last failed fetch
	failErr  map[string]error
	inflight map[string]chan struct{}
	// sharedMiss: when a domain was last missing from the cache
	sharedMiss map[string]time.Time
}

// New makes a Fetcher and loads the policies cached in opts.CacheDir
// (expired ones are removed).
func New(opts Options) (*Fetcher, error) {
	if opts.Resolver == nil {
		return nil, errors.New("mtasts: no resolver")
	}
	f := &Fetcher{
		res: opts.Resolver, timeout: opts.Timeout, maxBody: opts.MaxBody, retryAfter: opts.RetryAfter,
		refresh: opts.RefreshInterval, log: opts.Logger, now: opts.Now,
		policies: map[string]*Policy{}, failures: map[string]time.Time{}, failErr: map[string]error{},
		inflight: map[string]chan struct{}{}, sharedMiss: map[string]time.Time{},
	}
	if f.timeout <= 0 {
		f.timeout = DefaultTimeout
	}
	if f.maxBody <= 0 {
		f.maxBody = DefaultMaxBody
	}
	if f.retryAfter <= 0 {
		f.retryAfter = DefaultRetryAfter
	}
	if f.refresh <= 0 {
		f.refresh = DefaultRefreshInterval
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.now == nil {
		f.now = time.Now
	}
	if opts.HTTPClient != nil {
		c := *opts.HTTPClient
		c.CheckRedirect = noRedirect
		if c.Timeout == 0 || c.Timeout > f.timeout {
			c.Timeout = f.timeout
		}
		f.client = &c
	} else {
		dial := opts.DialContext
		if dial == nil {
			dial = (&net.Dialer{Timeout: f.timeout}).DialContext
		}
		f.client = &http.Client{
			Transport: &http.Transport{
				DialContext:            dial,
				TLSClientConfig:        &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12},
				TLSHandshakeTimeout:    f.timeout,
				ResponseHeaderTimeout:  f.timeout,
				MaxResponseHeaderBytes: 32 << 10,
				ForceAttemptHTTP2:      true,
				// Fetches are rare; a fresh connection each time also
				// means a fresh certificate check.
				DisableKeepAlives: true,
			},
			CheckRedirect: noRedirect,
			Timeout:       f.timeout,
		}
	}
	if opts.CacheDir != "" || opts.CacheDB != nil {
		var c policyCache
		var err error
		if opts.CacheDB != nil {
			c, err = openSQLCache(opts.CacheDB)
		} else {
			c, err = openCache(opts.CacheDir)
		}
		if err != nil {
			return nil, err
		}
		f.cache = c
		now := f.now()
		for _, p := range c.loadAll(f.log) {
			if p.Expired(now) {
				c.remove(p.Domain)
				continue
			}
			f.policies[p.Domain] = p
		}
	}
	return f, nil
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Cached returns the cached, unexpired policy of domain, if any, without
// any network traffic (for `posthorn tls explain`).
func (f *Fetcher) Cached(domain string) *Policy {
	d, err := normDomain(domain)
	if err != nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.policies[d]
	if p == nil || p.Expired(f.now()) {
		return nil
	}
	return p
}

func normDomain(domain string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	if err := checkDomain(d); err != nil {
		return "", fmt.Errorf("mtasts: bad domain %q: %v", domain, err)
	}
	return d, nil
}

// Lookup returns the MTA-STS policy of domain (RFC 8461 sections 3 and 5):
// it looks up the _mta-sts TXT record, and fetches the policy over HTTPS
// when nothing valid is cached under the record's id. A cached unexpired
// policy is never replaced by a failed or invalid fetch and stays in use
// when the TXT record is gone or its lookup fails. See PolicyState for
// what the results mean; a policy of Mode None means no policy.
func (f *Fetcher) Lookup(ctx context.Context, domain string) (*Policy, PolicyState, error) {
	d, err := normDomain(domain)
	if err != nil {
		return nil, NoPolicy, err
	}
	release, err := f.acquire(ctx, d)
	if err != nil {
		return f.fallback(d, err)
	}
	defer release()
	return f.lookup(ctx, d, false)
}

// acquire serialises work for one domain, so that concurrent deliveries
// fetch a policy once.
func (f *Fetcher) acquire(ctx context.Context, d string) (func(), error) {
	for {
		f.mu.Lock()
		ch, busy := f.inflight[d]
		if !busy {
			ch = make(chan struct{})
			f.inflight[d] = ch
			f.mu.Unlock()
			return func() {
				f.mu.Lock()
				delete(f.inflight, d)
				f.mu.Unlock()
				close(ch)
			}, nil
		}
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// cached returns the unexpired cached policy of d, dropping an expired
// one.
func (f *Fetcher) cached(d string) *Policy {
	f.mu.Lock()
	p := f.policies[d]
	f.mu.Unlock()
	if p == nil && f.cache != nil && f.askShared(d) {
		// Another node may have fetched it (a shared cache).
		if sp, err := f.cache.lookup(d); err != nil {
			f.log.Warn("MTA-STS cache read failed", "domain", d, "err", err)
		} else if sp != nil {
			p = sp
		} else {
			f.mu.Lock()
			f.sharedMiss[d] = f.now()
			f.mu.Unlock()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur := f.policies[d]; cur != nil {
		p = cur
	} else if p != nil {
		f.policies[d] = p
	}
	if p != nil && p.Expired(f.now()) {
		delete(f.policies, d)
		if f.cache != nil {
			f.cache.remove(d)
		}
		return nil
	}
	return p
}

// sharedMissTTL is how long a domain the shared cache did not have is
// not asked for again (most domains have no policy at all).
const sharedMissTTL = time.Minute

// askShared says whether to look d up in the cache: not when it was
// missing there less than sharedMissTTL ago.
func (f *Fetcher) askShared(d string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.sharedMiss[d]
	if ok && f.now().Sub(t) < sharedMissTTL {
		return false
	}
	if len(f.sharedMiss) > 100000 {
		clear(f.sharedMiss)
	}
	return true
}

// fallback answers with the cached policy when discovery failed.
func (f *Fetcher) fallback(d string, err error) (*Policy, PolicyState, error) {
	if p := f.cached(d); p != nil {
		return p, CachedFallback, err
	}
	return nil, NoPolicy, err
}

func (f *Fetcher) lookup(ctx context.Context, d string, force bool) (*Policy, PolicyState, error) {
	cur := f.cached(d)
	txt, _, err := f.res.TXT(ctx, "_mta-sts."+d)
	var id string
	if err == nil {
		id, err = ParseTXT(txt)
	} else if errors.Is(err, resolver.ErrNotFound) {
		err = ErrNoRecord
	}
	if err != nil {
		if cur != nil {
			return cur, CachedFallback, err
		}
		if errors.Is(err, ErrNoRecord) {
			return nil, NoPolicy, nil
		}
		return nil, NoPolicy, err
	}
	if cur != nil && cur.ID == id && !force {
		return cur, Cached, nil
	}
	key := d + " " + id
	f.mu.Lock()
	last, failed := f.failures[key]
	lastErr := f.failErr[key]
	f.mu.Unlock()
	if failed && f.now().Sub(last) < f.retryAfter {
		if cur != nil {
			return cur, CachedFallback, lastErr
		}
		return nil, FetchFailed, lastErr
	}
	p, ferr := f.fetch(ctx, d)
	if ferr != nil {
		f.mu.Lock()
		f.failures[key] = f.now()
		f.failErr[key] = ferr
		f.mu.Unlock()
		f.log.Info("MTA-STS policy fetch failed", "domain", d, "id", id, "err", ferr, "cached", cur != nil)
		if cur != nil {
			return cur, CachedFallback, ferr
		}
		return nil, FetchFailed, ferr
	}
	p.Domain, p.ID, p.FetchedAt = d, id, f.now()
	f.mu.Lock()
	delete(f.failures, key)
	delete(f.failErr, key)
	f.policies[d] = p
	f.mu.Unlock()
	if f.cache != nil {
		if err := f.cache.store(p); err != nil {
			f.log.Warn("MTA-STS policy cache write failed", "domain", d, "err", err)
		}
	}
	f.log.Info("MTA-STS policy fetched", "domain", d, "id", id, "mode", p.Mode, "max_age", p.MaxAge)
	return p, Fetched, nil
}

// fetch gets and parses https://mta-sts.DOMAIN/.well-known/mta-sts.txt.
func (f *Fetcher) fetch(ctx context.Context, d string) (*Policy, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	url := "https://mta-sts." + d + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, &FetchError{Domain: d, ResultType: ResultFetchError, Err: err}
	}
	req.Header.Set("User-Agent", "posthorn-mta-sts/1")
	resp, err := f.client.Do(req)
	if err != nil {
		rt := ResultFetchError
		var cve *tls.CertificateVerificationError
		var ua x509.UnknownAuthorityError
		var he x509.HostnameError
		var ci x509.CertificateInvalidError
		if errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) {
			rt = ResultWebPKIError
		}
		return nil, &FetchError{Domain: d, ResultType: rt, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		msg := "HTTP status " + resp.Status
		if loc := resp.Header.Get("Location"); loc != "" {
			msg += " (redirect to " + truncate(loc) + " not followed)"
		}
		return nil, &FetchError{Domain: d, ResultType: ResultFetchError, Err: errors.New(msg)}
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "text/plain" {
		return nil, &FetchError{Domain: d, ResultType: ResultInvalid,
			Err: fmt.Errorf("content type %q is not text/plain", truncate(resp.Header.Get("Content-Type")))}
	}
	if resp.ContentLength > f.maxBody {
		return nil, &FetchError{Domain: d, ResultType: ResultInvalid, Err: fmt.Errorf("policy of %d bytes is larger than %d", resp.ContentLength, f.maxBody)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.maxBody+1))
	if err != nil {
		return nil, &FetchError{Domain: d, ResultType: ResultFetchError, Err: fmt.Errorf("reading policy: %w", err)}
	}
	if int64(len(body)) > f.maxBody {
		return nil, &FetchError{Domain: d, ResultType: ResultInvalid, Err: fmt.Errorf("policy larger than %d bytes", f.maxBody)}
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return nil, &FetchError{Domain: d, ResultType: ResultInvalid, Err: err}
	}
	return p, nil
}

// RefreshLoop refreshes cached policies before they expire until ctx is
// done (RFC 8461 section 10.2 suggests proactive refreshing): every
// RefreshInterval it refetches each policy whose age exceeds half its
// max_age or one day, whichever is less. A failed refresh keeps the old
// policy.
func (f *Fetcher) RefreshLoop(ctx context.Context) {
	t := time.NewTicker(f.refresh)
	defer t.Stop()
	for {
		f.RefreshDue(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RefreshDue runs one round of RefreshLoop and returns how many policies
// it refreshed successfully.
func (f *Fetcher) RefreshDue(ctx context.Context) int {
	now := f.now()
	var due []string
	f.mu.Lock()
	for d, p := range f.policies {
		if p.Expired(now) {
			delete(f.policies, d)
			if f.cache != nil {
				f.cache.remove(d)
			}
			continue
		}
		if now.Sub(p.FetchedAt) >= min(p.MaxAge/2, 24*time.Hour) {
			due = append(due, d)
		}
	}
	for k, t := range f.failures {
		if now.Sub(t) >= f.retryAfter {
			delete(f.failures, k)
			delete(f.failErr, k)
		}
	}
	f.mu.Unlock()
	n := 0
	for _, d := range due {
		if ctx.Err() != nil {
			break
		}
		release, err := f.acquire(ctx, d)
		if err != nil {
			break
		}
		_, st, err := f.lookup(ctx, d, true)
		release()
		if st == Fetched {
			n++
		} else if err != nil {
			f.log.Info("MTA-STS policy refresh failed; keeping the cached policy", "domain", d, "err", err)
		}
	}
	return n
}
