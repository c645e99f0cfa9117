package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/posthorn/posthorn/mta/internal/auth"
)

// Options tune a Directory.
type Options struct {
	// Delimiter separates an address extension (user+tag@); "" = none.
	Delimiter string
	// CacheSize bounds the cached address lookups; 0 = no cache.
	CacheSize int
	// CacheTTL is how long a cached lookup is fresh (default 1 minute).
	CacheTTL time.Duration
	// Timeout bounds one backend lookup (default 5 seconds).
	Timeout time.Duration
	// Userdb, when set, is asked about addresses the backend lacks.
	Userdb Userdb
	Logger *slog.Logger
	Now    func() time.Time
}

// Directory is the cached front of a backend that the router, the SMTP
// server, the admin API and the self-service page use.
type Directory struct {
	b       Backend
	opt     Options
	cache   *lru
	domains atomic.Pointer[map[string]Domain]
	log     *slog.Logger

	dummyOnce sync.Once
	dummy     string

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New loads the domains of b and returns its front. It fails when the
// backend cannot list its domains: without them no address can be judged.
func New(ctx context.Context, b Backend, opt Options) (*Directory, error) {
	if opt.CacheTTL <= 0 {
		opt.CacheTTL = time.Minute
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 5 * time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	size := opt.CacheSize
	if _, static := b.(*Static); static {
		size = 0 // in memory already; the password file changes under us
	}
	d := &Directory{b: b, opt: opt, cache: newLRU(size, opt.CacheTTL, opt.Now), log: opt.Logger}
	if err := d.loadDomains(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// Start runs the background work: change notices from the backend (if it
// sends them) and a periodic reload of the domain list. Close stops it.
func (d *Directory) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	if n, ok := d.b.(Notifier); ok {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.watch(ctx, n)
		}()
	}
	if _, static := d.b.(*Static); !static {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			t := time.NewTicker(d.opt.CacheTTL)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := d.loadDomains(ctx); err != nil && ctx.Err() == nil {
						d.log.Warn("directory: reloading domains", "err", err)
					}
				}
			}
		}()
	}
}

// watch follows the backend's change notices, reconnecting with a pause
// after an error; every (re)connect drops the whole cache, since notices
// may have been missed meanwhile.
func (d *Directory) watch(ctx context.Context, n Notifier) {
	for ctx.Err() == nil {
		err := n.Watch(ctx, d.Invalidate)
		if ctx.Err() != nil {
			return
		}
		d.log.Warn("directory: change notices interrupted", "err", err)
		d.Invalidate("")
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// Close stops the background work and closes the backend.
func (d *Directory) Close() error {
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	return d.b.Close()
}

// Backend is the store behind the directory.
func (d *Directory) Backend() Backend { return d.b }

// Delimiter is the recipient delimiter ("" = none).
func (d *Directory) Delimiter() string { return d.opt.Delimiter }

func (d *Directory) loadDomains(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.opt.Timeout)
	defer cancel()
	list, err := d.b.Domains(ctx)
	if err != nil {
		return fmt.Errorf("%w: listing domains: %v", ErrUnavailable, err)
	}
	m := make(map[string]Domain, len(list))
	for _, dm := range list {
		m[strings.ToLower(dm.Name)] = dm
	}
	d.domains.Store(&m)
	return nil
}

// Domain returns the local domain name (any case), if it is one.
func (d *Directory) Domain(name string) (Domain, bool) {
	dm, ok := (*d.domains.Load())[strings.ToLower(strings.TrimSuffix(name, "."))]
	return dm, ok
}

// Domains lists the local domains.
func (d *Directory) Domains() []Domain {
	m := *d.domains.Load()
	out := make([]Domain, 0, len(m))
	for _, dm := range m {
		out = append(out, dm)
	}
	return out
}

// Invalidate drops a cached lookup: key "a:ADDRESS" drops one address,
// "d:DOMAIN" reloads the domain list and drops every address (a domain's
// catch-all or existence changed); "" (anything may have changed) reloads
// the domains and marks every address stale, to be looked up again but
// still answered from the cache while the backend is down.
func (d *Directory) Invalidate(key string) {
	if strings.HasPrefix(key, "a:") {
		d.cache.remove(Normalize(key))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.opt.Timeout)
	if err := d.loadDomains(ctx); err != nil {
		d.log.Warn("directory: reloading domains", "err", err)
	}
	cancel()
	if key == "" {
		d.cache.expireAll()
	} else {
		d.cache.clear()
	}
}

// Address looks addr up (exactly: the router applies delimiter and
// catch-all). It returns ErrNotFound for an unknown address; any other
// error means the directory could not answer (a 4xx at RCPT).
func (d *Directory) Address(ctx context.Context, addr string) (*Address, error) {
	addr = Normalize(addr)
	key := "a:" + addr
	e, fresh := d.cache.get(key)
	if fresh {
		return found(e.addr)
	}
	ctx, cancel := context.WithTimeout(ctx, d.opt.Timeout)
	defer cancel()
	a, err := d.b.Address(ctx, addr)
	if errors.Is(err, ErrNotFound) && d.opt.Userdb != nil {
		if _, local := d.Domain(domainOf(addr)); local {
			var ok bool
			ok, err = d.opt.Userdb.UserExists(ctx, addr)
			switch {
			case err != nil:
			case ok:
				a, err = &Address{Addr: addr, Mailbox: true}, nil
			default:
				err = ErrNotFound
			}
		}
	}
	switch {
	case err == nil:
		d.cache.put(key, a)
		return a, nil
	case errors.Is(err, ErrNotFound):
		d.cache.put(key, nil)
		return nil, ErrNotFound
	}
	if e != nil {
		d.log.Warn("directory: lookup failed, using the cached answer", "addr", addr, "err", err)
		return found(e.addr)
	}
	return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, addr, err)
}

func found(a *Address) (*Address, error) {
	if a == nil {
		return nil, ErrNotFound
	}
	return a, nil
}

func domainOf(addr string) string {
	_, d := Split(addr)
	return d
}

// Authenticate checks an SMTP AUTH password against the user's argon2id
// hash. Unknown users cost as much time as known ones. An error means the
// directory could not answer (454 at AUTH).
func (d *Directory) Authenticate(ctx context.Context, user, password string) (bool, error) {
	a, err := d.Address(ctx, user)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	if a == nil || !a.Mailbox || a.PasswordHash == "" {
		d.dummyOnce.Do(func() { d.dummy, _ = auth.Hash("posthorn-timing-dummy") })
		auth.Verify(d.dummy, password)
		return false, nil
	}
	ok, err := auth.Verify(a.PasswordHash, password)
	return ok && err == nil, nil
}

// Writer returns the backend's writer, which drops the cache entries each
// change touches; ok is false for a read-only backend.
func (d *Directory) Writer() (Writer, bool) {
	w, ok := d.b.(Writer)
	if !ok {
		return nil, false
	}
	return &invalidating{w: w, d: d}, true
}

// invalidating drops cache entries after each write, before the write's
// caller sees success: the next lookup on this node reads the new state.
type invalidating struct {
	w Writer
	d *Directory
}

func (i *invalidating) PutDomain(ctx context.Context, dm Domain) error {
	return i.after(i.w.PutDomain(ctx, dm), "d:"+dm.Name)
}
func (i *invalidating) DeleteDomain(ctx context.Context, name string) error {
	return i.after(i.w.DeleteDomain(ctx, name), "d:"+name)
}
func (i *invalidating) PutMailbox(ctx context.Context, addr, hash string) error {
	return i.after(i.w.PutMailbox(ctx, addr, hash), "a:"+addr)
}
func (i *invalidating) PutAlias(ctx context.Context, addr string, targets []string) error {
	return i.after(i.w.PutAlias(ctx, addr, targets), "a:"+addr)
}
func (i *invalidating) DeleteAddress(ctx context.Context, addr string) error {
	return i.after(i.w.DeleteAddress(ctx, addr), "a:"+addr)
}
func (i *invalidating) SetSecureAlias(ctx context.Context, addr string, on bool, level string) error {
	return i.after(i.w.SetSecureAlias(ctx, addr, on, level), "a:"+addr)
}
func (i *invalidating) ListAddresses(ctx context.Context, domain, after string, limit int) ([]Address, error) {
	return i.w.ListAddresses(ctx, domain, after, limit)
}

func (i *invalidating) after(err error, key string) error {
	i.d.Invalidate(key)
	return err
}
