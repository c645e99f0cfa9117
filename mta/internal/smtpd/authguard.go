package smtpd

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/mta/internal/metrics"
)

// GuardConfig sets the AUTH limits (conf [auth]).
type GuardConfig struct {
	// MaxConcurrent bounds the password hashes computed at once (each
	// argon2id check takes 19 MiB); >= 1.
	MaxConcurrent int
	// MaxFailuresPerIP failures from one address within Window block
	// that address from AUTH for BlockTime.
	MaxFailuresPerIP int
	// MaxFailuresPerAccount failures for one account within Window (from
	// any address) put the account under attack: then an address that
	// has already failed for it within Window gets no further check until
	// the window passes, while any other address still gets a real one.
	MaxFailuresPerAccount int
	Window, BlockTime     time.Duration
}

// Verdicts of AuthGuard.Check.
const (
	authOK          = iota // password right
	authBad                // password (or user) wrong
	authThrottled          // not checked: too many failures
	authUnavailable        // could not be checked: the password store is down
)

// AuthGuard bounds what password guessing can cost and slows it down, like
// Postfix's anvil but for AUTH: at most MaxConcurrent argon2id checks run
// at once, and suspect clients — with recent failures, with another check
// already pending, or guessing at an account under attack — share all but
// one of those slots, so that a client with a clean record, the real user
// on another address, is never queued behind a flood. Failures are counted per address and per account in a fixed
// window; an address over its limit is blocked for BlockTime; an account
// over its limit refuses only the addresses that already failed for it, so
// an attacker cannot lock the real user out. Addresses that logged in
// successfully are remembered for a day; the listener keeps its reserved
// sessions for them. With a GuardStore (SetStore) the counts are shared by
// the nodes of a cluster.
type AuthGuard struct {
	cfg     GuardConfig
	slots   chan struct{} // every check holds one
	suspect chan struct{} // checks for suspect clients also hold one of these
	now     func() time.Time

	mu    sync.Mutex
	ips   map[string]*failCount // by address
	accts map[string]*failCount // by account
	pairs map[string]*failCount // by account + "\x00" + address
	good  map[string]time.Time  // addresses and account+address pairs that logged in
	// pending counts checks waiting or running per address: a second
	// one from the same address goes into the suspect lane.
	pending map[string]int

	store GuardStore // counts shared with the other nodes; nil: none
}

// GuardStore shares the guard's counts with the other nodes of a cluster
// (the database they share), so that guessing spread over the nodes is
// limited as on one: failures counted on any node block an address or
// put an account under attack on every node, and an address that logged
// in on one node is known on all. Keys are the guard's ("ip", "acct",
// "pair" and "good" scopes); the store may hash them.
type GuardStore interface {
	// Counts returns the stored counts of keys; absent keys are missing.
	Counts(ctx context.Context, keys ...string) (map[string]GuardCount, error)
	// AddFailure counts one failure for each key at now; a count whose
	// window (started at Since) is older than window starts again. It
	// returns the counts after the addition, in the order of keys.
	AddFailure(ctx context.Context, now time.Time, window time.Duration, keys ...string) ([]GuardCount, error)
	// LoggedIn records a successful login under key at now.
	LoggedIn(ctx context.Context, now time.Time, key string) error
}

// GuardCount is one shared count: N failures since Since, the last at
// Last (for "good" keys: Last is the last login).
type GuardCount struct {
	N           int
	Since, Last time.Time
}

// guardStoreTimeout bounds one round trip to the GuardStore.
const guardStoreTimeout = 5 * time.Second

// SetStore makes g count in s as well as in memory (memory stays the
// first look: an address it blocks is refused without asking s). When s
// cannot be read, AUTH is refused as unavailable (454) rather than
// checked with the limits of this node alone. Call it before the guard
// is used.
func (g *AuthGuard) SetStore(s GuardStore) { g.store = s }

// Keys of the scopes in the GuardStore.
func guardKeys(addr, acct string) (ip, account, pair, good string) {
	p := acct + "\x00" + addr
	return "ip\x00" + addr, "acct\x00" + acct, "pair\x00" + p, "good\x00" + p
}

// sharedCheck is Check's look at the counts of all nodes. It reports
// whether to refuse (throttled, with the address's count) and whether the
// client is suspect; ok is false when the store could not be read.
func (g *AuthGuard) sharedCheck(addr, acct string, known bool, now time.Time) (throttled, suspect bool, n int, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), guardStoreTimeout)
	defer cancel()
	ik, ak, pk, gk := guardKeys(addr, acct)
	cs, err := g.store.Counts(ctx, ik, ak, pk, gk)
	if err != nil {
		return false, false, 0, false
	}
	fresh := func(c GuardCount) bool { return c.N > 0 && now.Sub(c.Since) < g.cfg.Window }
	ipc := cs[ik]
	if ipc.N >= g.cfg.MaxFailuresPerIP && now.Before(ipc.Last.Add(g.cfg.BlockTime)) {
		// Blocked by failures on any node: remember it here.
		g.mu.Lock()
		fc := g.ips[addr]
		if fc == nil {
			fc = &failCount{since: ipc.Since}
			g.ips[addr] = fc
		}
		fc.n = max(fc.n, ipc.N)
		if b := ipc.Last.Add(g.cfg.BlockTime); fc.blocked.Before(b) {
			fc.blocked = b
		}
		g.mu.Unlock()
		return true, true, ipc.N, true
	}
	if gc, ok := cs[gk]; ok && now.Sub(gc.Last) < goodFor {
		known = true
	}
	attacked := fresh(cs[ak]) && cs[ak].N >= g.cfg.MaxFailuresPerAccount
	if attacked && !known && fresh(cs[pk]) {
		return true, true, ipc.N, true
	}
	return false, fresh(ipc) || (attacked && !known), ipc.N, true
}

// sharedFailure counts a failure in the store and takes the counts of
// all nodes into memory; it returns the address's count (0: the store
// failed, memory alone counted it).
func (g *AuthGuard) sharedFailure(addr, acct string, now time.Time) int {
	ctx, cancel := context.WithTimeout(context.Background(), guardStoreTimeout)
	defer cancel()
	ik, ak, pk, _ := guardKeys(addr, acct)
	cs, err := g.store.AddFailure(ctx, now, g.cfg.Window, ik, ak, pk)
	if err != nil || len(cs) != 3 {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, m := range []map[string]*failCount{g.ips, g.accts, g.pairs} {
		key := []string{addr, acct, acct + "\x00" + addr}[i]
		if fc := m[key]; fc != nil && cs[i].N > fc.n {
			fc.n = cs[i].N
		}
	}
	if fc := g.ips[addr]; fc != nil && fc.n >= g.cfg.MaxFailuresPerIP && fc.blocked.Before(now.Add(g.cfg.BlockTime)) {
		fc.blocked = now.Add(g.cfg.BlockTime)
	}
	return cs[0].N
}

type failCount struct {
	n       int
	since   time.Time
	blocked time.Time // until
}

const (
	goodFor      = 24 * time.Hour
	maxGuardKeys = 100000 // entries per map before old ones are swept
)

// NewAuthGuard makes a guard; zero fields of cfg get defaults.
func NewAuthGuard(cfg GuardConfig) *AuthGuard {
	if cfg.MaxConcurrent < 1 {
		cfg.MaxConcurrent = 2
	}
	if cfg.MaxFailuresPerIP < 1 {
		cfg.MaxFailuresPerIP = 10
	}
	if cfg.MaxFailuresPerAccount < 1 {
		cfg.MaxFailuresPerAccount = 30
	}
	if cfg.Window <= 0 {
		cfg.Window = 15 * time.Minute
	}
	if cfg.BlockTime <= 0 {
		cfg.BlockTime = 15 * time.Minute
	}
	g := &AuthGuard{cfg: cfg, slots: make(chan struct{}, cfg.MaxConcurrent),
		suspect: make(chan struct{}, max(1, cfg.MaxConcurrent-1)), now: time.Now,
		ips: map[string]*failCount{}, accts: map[string]*failCount{}, pairs: map[string]*failCount{},
		good: map[string]time.Time{}, pending: map[string]int{}}
	return g
}

// current returns m[key] with its window restarted if it has passed;
// nil if there is none. g.mu is held.
func (g *AuthGuard) current(m map[string]*failCount, key string, now time.Time) *failCount {
	fc := m[key]
	if fc == nil {
		return nil
	}
	if now.Sub(fc.since) >= g.cfg.Window && !now.Before(fc.blocked) {
		delete(m, key)
		return nil
	}
	return fc
}

func (g *AuthGuard) count(m map[string]*failCount, key string, now time.Time) *failCount {
	fc := g.current(m, key, now)
	if fc == nil {
		if len(m) >= maxGuardKeys {
			for k := range m {
				g.current(m, k, now)
			}
			if len(m) >= maxGuardKeys {
				clear(m)
			}
		}
		fc = &failCount{since: now}
		m[key] = fc
	}
	fc.n++
	return fc
}

// Check decides whether to check user's password from ip, checks it with
// verify within the concurrency bound, and records the outcome. It
// returns the verdict and the address's failure count in the window.
func (g *AuthGuard) Check(ip net.IP, user string, verify func() (bool, error)) (int, int) {
	addr := ip.String()
	acct := strings.ToLower(user)
	pair := acct + "\x00" + addr
	now := g.now()

	g.mu.Lock()
	ipc := g.current(g.ips, addr, now)
	if ipc != nil && now.Before(ipc.blocked) {
		n := ipc.n
		g.mu.Unlock()
		return authThrottled, n
	}
	_, known := g.good[pair]
	ac := g.current(g.accts, acct, now)
	attacked := ac != nil && ac.n >= g.cfg.MaxFailuresPerAccount
	if pc := g.current(g.pairs, pair, now); attacked && !known && pc != nil {
		n := 0
		if ipc != nil {
			n = ipc.n
		}
		g.mu.Unlock()
		return authThrottled, n
	}
	suspect := ipc != nil || (attacked && !known)
	if g.store != nil {
		g.mu.Unlock()
		throttled, sus, n, ok := g.sharedCheck(addr, acct, known, now)
		switch {
		case !ok:
			return authUnavailable, 0
		case throttled:
			return authThrottled, n
		}
		suspect = suspect || sus
		g.mu.Lock()
	}
	suspect = suspect || g.pending[addr] > 0
	g.pending[addr]++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		if g.pending[addr]--; g.pending[addr] <= 0 {
			delete(g.pending, addr)
		}
		g.mu.Unlock()
	}()

	if suspect {
		g.suspect <- struct{}{}
	}
	g.slots <- struct{}{}
	if suspect && g.Blocked(ip) {
		// Blocked while it waited for a slot: no hash.
		<-g.slots
		<-g.suspect
		g.mu.Lock()
		n := 0
		if ipc := g.current(g.ips, addr, g.now()); ipc != nil {
			n = ipc.n
		}
		g.mu.Unlock()
		return authThrottled, n
	}
	metrics.AuthChecksInFlight.Inc()
	ok, err := verify()
	metrics.AuthChecksInFlight.Dec()
	<-g.slots
	if suspect {
		<-g.suspect
	}
	if err != nil {
		return authUnavailable, 0 // no failure to count: nothing was checked
	}

	now = g.now()
	if g.store != nil {
		_, _, _, gk := guardKeys(addr, acct)
		if ok {
			ctx, cancel := context.WithTimeout(context.Background(), guardStoreTimeout)
			g.store.LoggedIn(ctx, now, gk) // at worst the address is not known elsewhere yet
			cancel()
		} else {
			// Counted here first (the fast path of the next check),
			// then where every node sees it.
			v, n := g.failure(addr, acct, pair, now)
			return v, max(n, g.sharedFailure(addr, acct, now))
		}
	}
	if !ok {
		return g.failure(addr, acct, pair, now)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.good) >= maxGuardKeys {
		for k, t := range g.good {
			if now.Sub(t) >= goodFor {
				delete(g.good, k)
			}
		}
	}
	g.good[pair] = now
	g.good[addr] = now
	n := 0
	if ipc := g.current(g.ips, addr, now); ipc != nil {
		n = ipc.n
	}
	return authOK, n
}

// failure counts a wrong password in memory.
func (g *AuthGuard) failure(addr, acct, pair string, now time.Time) (int, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ipc := g.count(g.ips, addr, now)
	if ipc.n >= g.cfg.MaxFailuresPerIP {
		ipc.blocked = now.Add(g.cfg.BlockTime)
	}
	g.count(g.accts, acct, now)
	g.count(g.pairs, pair, now)
	return authBad, ipc.n
}

// ErrGuardUnavailable says AUTH was not checked because the counts the
// nodes share could not be read (GuardStore).
var ErrGuardUnavailable = errors.New("the shared AUTH failure counts cannot be read")

// Blocked reports whether ip is blocked from AUTH now.
func (g *AuthGuard) Blocked(ip net.IP) bool {
	if g == nil || ip == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	ipc := g.current(g.ips, ip.String(), now)
	return ipc != nil && now.Before(ipc.blocked)
}

// Privileged reports whether ip logged in successfully within the last day.
func (g *AuthGuard) Privileged(ip net.IP) bool {
	if g == nil || ip == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.good[ip.String()]
	return ok && g.now().Sub(t) < goodFor
}
