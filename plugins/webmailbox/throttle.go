package webmailbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/posthorn/posthorn/sdk/sqldb"
)

// Guessing a password, a reset answer, a PIN or a TAN is slowed down in
// three scopes, so that nobody can lock the real user out at will:
//
//   - per (account, client): after max_failed_logins failures from one
//     client address for one account, that client waits before its next
//     attempt, 30 s doubling with every further failure up to lockout.
//     Other clients (the owner at home) are not affected.
//   - per account, all clients together: a much slower limit (ten times
//     as many failures) against guessing from many addresses; it spares
//     clients that logged in to the account successfully before.
//   - per client, all accounts: at most 20 failures in 10 minutes
//     (trying one password on many addresses).
//
// The state is kept in memory, keyed by the normalised address whether or
// not a mailbox exists, so the answers do not tell which addresses exist.
// A restart forgets it. When the store is the PostgreSQL database several
// nodes share, every scope is also counted there (webmailbox_failures,
// keys hashed), so that spreading the guesses over the nodes gains
// nothing: a client delayed on one node is delayed on all, and a client
// that logged in on one node is known on all. Memory stays the first
// look (a client it already delays is refused without asking the
// database); the per-client scope over all accounts is a fixed window
// there instead of a sliding one. If the database cannot be read, the
// attempt is refused (fail closed): the mailbox could not be opened
// anyway.

// ErrThrottled is wrapped by a *ThrottledError.
var ErrThrottled = errors.New("webmailbox: too many failed attempts")

// ThrottledError says how long the client must wait.
type ThrottledError struct{ Wait time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("webmailbox: too many failed attempts; wait %s", e.Wait.Round(time.Second))
}

func (e *ThrottledError) Unwrap() error { return ErrThrottled }

const (
	pairBaseDelay    = 30 * time.Second
	pairForget       = 24 * time.Hour // failures of a pair are forgotten after a quiet day
	accountFactor    = 10             // the account-wide limit allows this many times more failures
	accountBaseDelay = 10 * time.Second
	accountForget    = time.Hour
	trustedFor       = 30 * 24 * time.Hour // a client that logged in before is spared the account-wide limit
	ipWindow         = 10 * time.Minute
	ipMaxFailures    = 20
)

type failState struct {
	n     int       // failures counted
	last  time.Time // last failure
	until time.Time // no attempt before
}

type pairKey struct{ account, client string }

type throttle struct {
	free    int           // failures per pair before delays start
	maxWait time.Duration // longest delay

	mu      sync.Mutex
	pair    map[pairKey]*failState
	account map[string]*failState
	trusted map[pairKey]time.Time // last successful login
	ip      map[string][]time.Time

	failures  atomic.Int64 // failed attempts
	throttled atomic.Int64 // attempts refused because of a delay
	delays    atomic.Int64 // delays imposed

	// shared counts in the database the nodes share; nil on one machine.
	shared *sqldb.Counters
}

// sharedTimeout bounds each database round trip of the throttle.
const sharedTimeout = 5 * time.Second

// Key prefixes of the scopes in webmailbox_failures.
const (
	keyPair    = "p:"
	keyAccount = "a:"
	keyIP      = "i:"
	keyTrusted = "t:"
)

// sharedKeys are the database keys of (account, client): pair, account,
// client, trusted. Hashed: the table need not name people or addresses.
func sharedKeys(account, client string) (pair, acct, ip, trusted string) {
	h := func(parts ...string) string {
		s := sha256.New()
		for _, p := range parts {
			s.Write([]byte(p))
			s.Write([]byte{0})
		}
		return hex.EncodeToString(s.Sum(nil)[:16])
	}
	ph := h("pair", account, client)
	return keyPair + ph, keyAccount + h("account", account), keyIP + h("client", client), keyTrusted + ph
}

func newThrottle(free int, maxWait time.Duration) *throttle {
	if maxWait <= 0 {
		maxWait = 15 * time.Minute
	}
	return &throttle{free: max(free, 1), maxWait: maxWait, pair: map[pairKey]*failState{}, account: map[string]*failState{},
		trusted: map[pairKey]time.Time{}, ip: map[string][]time.Time{}}
}

// delay is the growing wait after failure number n with free failures
// allowed: base, 2·base, 4·base … up to maxWait.
func (th *throttle) delay(n, free int, base time.Duration) time.Duration {
	if n < free {
		return 0
	}
	d := base
	for i := free; i < n && d < th.maxWait; i++ {
		d *= 2
	}
	return min(d, th.maxWait)
}

// check returns a *ThrottledError when client must wait before trying a
// secret of account again.
func (th *throttle) check(account, client string, now time.Time) error {
	th.mu.Lock()
	k := pairKey{account, client}
	var wait time.Duration
	if s := th.pair[k]; s != nil && now.Before(s.until) {
		wait = s.until.Sub(now)
	}
	trusted := th.isTrusted(k, now)
	if s := th.account[account]; s != nil && now.Before(s.until) && !trusted {
		wait = max(wait, s.until.Sub(now))
	}
	if ts := th.recentIP(client, now); len(ts) >= ipMaxFailures {
		wait = max(wait, ts[0].Add(ipWindow).Sub(now))
	}
	th.mu.Unlock()
	if wait == 0 && th.shared != nil {
		sw, err := th.sharedWait(account, client, now, trusted)
		if err != nil {
			return err
		}
		wait = sw
	}
	if wait > 0 {
		th.throttled.Add(1)
		return &ThrottledError{Wait: wait}
	}
	return nil
}

// sharedWait is check's look at the counts of all nodes.
func (th *throttle) sharedWait(account, client string, now time.Time, trustedHere bool) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	pk, ak, ik, tk := sharedKeys(account, client)
	cs, err := th.shared.Get(ctx, pk, ak, ik, tk)
	if err != nil {
		return 0, fmt.Errorf("webmailbox: guessing limits: %w", err)
	}
	var wait time.Duration
	until := func(c sqldb.Count, free int, base time.Duration) time.Duration {
		d := th.delay(int(c.N), free, base)
		if d == 0 {
			return 0
		}
		return c.Last.Add(d).Sub(now)
	}
	if c, ok := cs[pk]; ok && now.Sub(c.Last) < pairForget {
		wait = max(wait, until(c, th.free, pairBaseDelay))
	}
	t, known := cs[tk]
	if c, ok := cs[ak]; ok && now.Sub(c.Last) < accountForget && !trustedHere && !(known && now.Sub(t.Last) < trustedFor) {
		wait = max(wait, until(c, th.free*accountFactor, accountBaseDelay))
	}
	if c, ok := cs[ik]; ok && now.Sub(c.First) < ipWindow && c.N >= ipMaxFailures {
		wait = max(wait, c.First.Add(ipWindow).Sub(now))
	}
	return max(wait, 0), nil
}

func (th *throttle) isTrusted(k pairKey, now time.Time) bool {
	t, ok := th.trusted[k]
	return ok && now.Sub(t) < trustedFor
}

func (th *throttle) recentIP(client string, now time.Time) []time.Time {
	ts := th.ip[client]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= ipWindow {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(th.ip, client)
	} else {
		th.ip[client] = ts
	}
	return ts
}

// failDelays is what fail imposed: the wait per scope (0: none).
type failDelays struct {
	pairFailures, accountFailures int
	pair, account                 time.Duration
	sharedErr                     error // the failure could not be counted in the database
}

// fail records a failed attempt and returns the delays it started.
func (th *throttle) fail(account, client string, now time.Time) failDelays {
	th.mu.Lock()
	defer th.mu.Unlock()
	th.failures.Add(1)
	th.ip[client] = append(th.recentIP(client, now), now)
	bump := func(s *failState, forget time.Duration, free int, base time.Duration) time.Duration {
		if !s.last.IsZero() && now.Sub(s.last) >= forget {
			s.n = 0
		}
		s.n++
		s.last = now
		d := th.delay(s.n, free, base)
		if d > 0 {
			s.until = now.Add(d)
			th.delays.Add(1)
		}
		return d
	}
	k := pairKey{account, client}
	p := th.pair[k]
	if p == nil {
		p = &failState{}
		th.pair[k] = p
	}
	a := th.account[account]
	if a == nil {
		a = &failState{}
		th.account[account] = a
	}
	var d failDelays
	d.pair = bump(p, pairForget, th.free, pairBaseDelay)
	d.account = bump(a, accountForget, th.free*accountFactor, accountBaseDelay)
	d.pairFailures, d.accountFailures = p.n, a.n
	if th.shared == nil {
		return d
	}
	// Count it where every node sees it; the counts of all nodes decide,
	// and memory learns the longer wait for the fast path.
	th.mu.Unlock()
	pn, an, err := th.sharedFail(account, client, now)
	th.mu.Lock()
	if err != nil {
		d.sharedErr = err
		return d
	}
	adopt := func(s *failState, n int, free int, base time.Duration, dd *time.Duration, nn *int) {
		if n <= s.n {
			return
		}
		s.n, *nn = n, n
		if w := th.delay(n, free, base); w > 0 {
			if s.until.Before(now.Add(w)) {
				s.until = now.Add(w)
			}
			if *dd == 0 {
				th.delays.Add(1)
			}
			*dd = w
		}
	}
	adopt(p, pn, th.free, pairBaseDelay, &d.pair, &d.pairFailures)
	adopt(a, an, th.free*accountFactor, accountBaseDelay, &d.account, &d.accountFailures)
	return d
}

// sharedFail counts a failure in the database in the three scopes and
// returns the pair's and the account's counts over all nodes.
func (th *throttle) sharedFail(account, client string, now time.Time) (pair, acct int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	pk, ak, ik, _ := sharedKeys(account, client)
	pc, err := th.shared.Add(ctx, pk, now, time.Time{}, now.Add(-pairForget))
	if err != nil {
		return 0, 0, err
	}
	ac, err := th.shared.Add(ctx, ak, now, time.Time{}, now.Add(-accountForget))
	if err != nil {
		return 0, 0, err
	}
	if _, err := th.shared.Add(ctx, ik, now, now.Add(-ipWindow), time.Time{}); err != nil {
		return 0, 0, err
	}
	return int(pc.N), int(ac.N), nil
}

// success forgets the pair's failures and remembers the client as one
// that knows the account's secret.
func (th *throttle) success(account, client string, now time.Time) {
	th.mu.Lock()
	defer th.mu.Unlock()
	k := pairKey{account, client}
	delete(th.pair, k)
	th.trusted[k] = now
	if th.shared == nil {
		return
	}
	th.mu.Unlock()
	defer th.mu.Lock()
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	pk, _, _, tk := sharedKeys(account, client)
	// Errors are left: at worst the client stays delayed a while longer
	// or is not yet known on the other nodes.
	th.shared.Delete(ctx, pk)
	th.shared.Add(ctx, tk, now, time.Time{}, time.Time{})
}

// pruneShared removes the database's counts that no longer matter (run
// by the housekeeping, on one node).
func (th *throttle) pruneShared(ctx context.Context, now time.Time) error {
	if th.shared == nil {
		return nil
	}
	for _, p := range []struct {
		prefix string
		keep   time.Duration
	}{{keyPair, pairForget + th.maxWait}, {keyAccount, accountForget + th.maxWait}, {keyIP, 2 * ipWindow}, {keyTrusted, trustedFor}} {
		if _, err := th.shared.Prune(ctx, p.prefix, now.Add(-p.keep)); err != nil {
			return err
		}
	}
	return nil
}

// prune drops state that no longer matters.
func (th *throttle) prune(now time.Time) {
	th.mu.Lock()
	defer th.mu.Unlock()
	for k, s := range th.pair {
		if now.After(s.until) && now.Sub(s.last) >= pairForget {
			delete(th.pair, k)
		}
	}
	for k, s := range th.account {
		if now.After(s.until) && now.Sub(s.last) >= accountForget {
			delete(th.account, k)
		}
	}
	for k, t := range th.trusted {
		if now.Sub(t) >= trustedFor {
			delete(th.trusted, k)
		}
	}
	for c := range th.ip {
		th.recentIP(c, now)
	}
}

// ThrottleStats are the counters since the start.
type ThrottleStats struct {
	Failures  int64 // failed attempts (passwords, answers, PINs, TANs)
	Throttled int64 // attempts refused because the client had to wait
	Delays    int64 // delays imposed
}

// ThrottleStats returns the guessing counters.
func (sv *Service) ThrottleStats() ThrottleStats {
	return ThrottleStats{Failures: sv.th.failures.Load(), Throttled: sv.th.throttled.Load(), Delays: sv.th.delays.Load()}
}

// attempt checks the throttle before a secret of account is tried.
func (sv *Service) attempt(kind, account, client string) error {
	if err := sv.th.check(account, client, sv.Now()); err != nil {
		var te *ThrottledError
		if !errors.As(err, &te) {
			sv.log.Error("attempt refused: the guessing limits cannot be read", "kind", kind, "mailbox", account, "client", client, "error", err)
			return err
		}
		st := sv.ThrottleStats()
		sv.log.Warn("attempt refused: client must wait", "kind", kind, "mailbox", account, "client", client,
			"wait", te.Wait.Round(time.Second).String(), "throttled_total", st.Throttled)
		return err
	}
	return nil
}

// failed records a wrong secret and logs it.
func (sv *Service) failed(kind, account, client string) {
	d := sv.th.fail(account, client, sv.Now())
	if d.sharedErr != nil {
		sv.log.Error("failed attempt not counted in the shared database", "kind", kind, "mailbox", account, "client", client, "error", d.sharedErr)
	}
	st := sv.ThrottleStats()
	sv.log.Info("failed attempt", "kind", kind, "mailbox", account, "client", client,
		"client_failures", d.pairFailures, "account_failures", d.accountFailures, "failures_total", st.Failures)
	if d.pair > 0 {
		sv.log.Warn("client delayed after failed attempts", "kind", kind, "mailbox", account, "client", client,
			"failures", d.pairFailures, "wait", d.pair.String(), "delays_total", st.Delays)
	}
	if d.account > 0 {
		sv.log.Warn("account-wide delay after failed attempts from several clients", "kind", kind, "mailbox", account,
			"failures", d.accountFailures, "wait", d.account.String(), "delays_total", st.Delays)
	}
}
