package smtpd

import (
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
// sessions for them.
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
	suspect := ipc != nil || g.pending[addr] > 0 || (attacked && !known)
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
	g.mu.Lock()
	defer g.mu.Unlock()
	if ok {
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
	ipc = g.count(g.ips, addr, now)
	if ipc.n >= g.cfg.MaxFailuresPerIP {
		ipc.blocked = now.Add(g.cfg.BlockTime)
	}
	g.count(g.accts, acct, now)
	g.count(g.pairs, pair, now)
	return authBad, ipc.n
}

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
