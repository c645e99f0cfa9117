package pgp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/posthorn/posthorn/plugins/pgp/keystore"
	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
	"github.com/posthorn/posthorn/plugins/pgp/wkd"
)

// Discovery steps.
const (
	StepLocal     = "local"     // keys imported or generated here
	StepWKD       = "wkd"       // Web Key Directory
	StepKeyserver = "keyserver" // VKS or HKP keyserver
	StepAutocrypt = "autocrypt" // keys harvested from inbound mail (unverified)
)

// Discovery finds a recipient's key: each step in order, network results
// stored with their source and reused for TTL; misses are remembered for
// TTL too, so a busy queue does not hammer other people's servers. With a
// shared key store both are shared by the nodes: keys as stored keys,
// misses through Misses.
type Discovery struct {
	Keys      *Keys
	Order     []string
	TTL       time.Duration
	MissTTL   time.Duration // how long a miss is remembered; 0: TTL
	Timeout   time.Duration // per network lookup
	WKD       *wkd.Client
	Keyserver *Keyserver // nil: step skipped
	// Misses shares the misses with the other nodes (the shared key
	// store); nil: remembered in memory only.
	Misses MissStore

	mu      sync.Mutex
	misses  map[string]time.Time // step + " " + addr → until
	flights map[string]*flight   // lookups under way
}

// flight is one network lookup, shared by everyone who asks meanwhile. It
// runs to its own timeout even when the asking hook gives up, so a slow
// server's key is there for the next attempt.
type flight struct {
	done chan struct{}
	f    Found
	err  error
}

// Found is a discovered key.
type Found struct {
	Entity *openpgp.Entity
	Key    keystore.Key
}

func sourceStep(src string) string {
	switch src {
	case keystore.SourceWKD:
		return StepWKD
	case keystore.SourceKeyserver:
		return StepKeyserver
	case keystore.SourceAutocrypt, keystore.SourceAttached:
		return StepAutocrypt
	}
	return StepLocal
}

// Find returns a usable key for addr or keystore.ErrNotFound.
func (d *Discovery) Find(ctx context.Context, addr string) (Found, error) {
	addr = keystore.NormalizeAddress(addr)
	now := d.Keys.now()
	var errs []string
	for _, step := range d.Order {
		if err := ctx.Err(); err != nil {
			return Found{}, err
		}
		// What the store has from this step.
		e, sk, err := d.Keys.publicWhere(ctx, addr, func(k keystore.Key) bool { return k.Own || sourceStep(k.Source) == step })
		if err != nil && !errors.Is(err, keystore.ErrNotFound) {
			return Found{}, err
		}
		if err != nil && err != keystore.ErrNotFound {
			errs = append(errs, step+": "+strings.TrimPrefix(err.Error(), keystore.ErrNotFound.Error()+": "))
		}
		fresh := e != nil && (step == StepLocal || step == StepAutocrypt || now.Sub(sk.Updated) < d.TTL)
		if fresh {
			return Found{e, sk}, nil
		}
		if step == StepLocal || step == StepAutocrypt {
			continue
		}
		if d.missed(step, addr, now) {
			if e != nil {
				return Found{e, sk}, nil // stale, but the refresh failed recently
			}
			continue
		}
		f, ferr := d.shared(ctx, step, addr)
		if ferr == nil {
			return f, nil
		}
		if ctx.Err() != nil {
			return Found{}, ctx.Err() // the caller gave up; the lookup goes on
		}
		errs = append(errs, step+": "+ferr.Error())
		if e != nil {
			return Found{e, sk}, nil
		}
	}
	if len(errs) > 0 {
		return Found{}, fmt.Errorf("%w for %s (%s)", keystore.ErrNotFound, addr, strings.Join(errs, "; "))
	}
	return Found{}, fmt.Errorf("%w for %s", keystore.ErrNotFound, addr)
}

// MissStore keeps discovery misses where every node sees them, so that a
// cluster asks other people's servers no more often than one node.
type MissStore interface {
	// MissedUntil returns until when the miss key is remembered (zero:
	// not at all).
	MissedUntil(ctx context.Context, key string, now time.Time) (time.Time, error)
	// RememberMiss remembers the miss key until until.
	RememberMiss(ctx context.Context, key string, until, now time.Time) error
}

// missStoreTimeout bounds a look into the MissStore; it is only a cache:
// when it does not answer, the lookup is made.
const missStoreTimeout = 2 * time.Second

func (d *Discovery) missed(step, addr string, now time.Time) bool {
	key := step + " " + addr
	d.mu.Lock()
	until, ok := d.misses[key]
	d.mu.Unlock()
	if ok && now.Before(until) || d.Misses == nil {
		return ok && now.Before(until)
	}
	ctx, cancel := context.WithTimeout(context.Background(), missStoreTimeout)
	defer cancel()
	until, err := d.Misses.MissedUntil(ctx, key, now)
	if err != nil || !now.Before(until) {
		return false
	}
	d.remember(key, until)
	return true
}

func (d *Discovery) miss(step, addr string, now time.Time) {
	ttl := d.MissTTL
	if ttl <= 0 {
		ttl = d.TTL
	}
	key := step + " " + addr
	d.remember(key, now.Add(ttl))
	if d.Misses != nil {
		ctx, cancel := context.WithTimeout(context.Background(), missStoreTimeout)
		defer cancel()
		d.Misses.RememberMiss(ctx, key, now.Add(ttl), now) // at worst another node asks again
	}
}

// remember keeps a miss in memory.
func (d *Discovery) remember(key string, until time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.misses == nil {
		d.misses = map[string]time.Time{}
	}
	if len(d.misses) > 100000 {
		d.misses = map[string]time.Time{}
	}
	d.misses[key] = until
}

// shared runs (or joins) the lookup of addr in step.
func (d *Discovery) shared(ctx context.Context, step, addr string) (Found, error) {
	key := step + " " + addr
	d.mu.Lock()
	fl := d.flights[key]
	if fl == nil {
		if d.flights == nil {
			d.flights = map[string]*flight{}
		}
		fl = &flight{done: make(chan struct{})}
		d.flights[key] = fl
		go func() {
			defer func() {
				if r := recover(); r != nil {
					fl.err = fmt.Errorf("lookup failed: %v", r)
				}
				if fl.err != nil {
					d.miss(step, addr, d.Keys.now())
				}
				d.mu.Lock()
				delete(d.flights, key)
				d.mu.Unlock()
				close(fl.done)
			}()
			fl.f, fl.err = d.fetch(context.Background(), step, addr)
		}()
	}
	d.mu.Unlock()
	select {
	case <-fl.done:
		return fl.f, fl.err
	case <-ctx.Done():
		return Found{}, ctx.Err()
	}
}

func (d *Discovery) fetch(ctx context.Context, step, addr string) (Found, error) {
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	var data []byte
	var err error
	var src string
	switch step {
	case StepWKD:
		if d.WKD == nil {
			return Found{}, errors.New("not configured")
		}
		data, _, err = d.WKD.Lookup(ctx, addr)
		src = keystore.SourceWKD
	case StepKeyserver:
		if d.Keyserver == nil {
			return Found{}, errors.New("not configured")
		}
		data, err = d.Keyserver.Lookup(ctx, addr)
		src = keystore.SourceKeyserver
	default:
		return Found{}, fmt.Errorf("unknown step %q", step)
	}
	if err != nil {
		return Found{}, err
	}
	el, err := pgpmail.ParseKeys(data)
	if err != nil {
		return Found{}, err
	}
	var best *Found
	for _, e := range el {
		// Only keys for this address, never secret parts.
		if !pgpmail.HasAddress(e, addr) || pgpmail.CanEncrypt(e, d.Keys.now()) != nil {
			continue
		}
		pub, err := pgpmail.PublicOnly(e)
		if err != nil {
			continue
		}
		sk, err := d.Keys.put(ctx, pub, src, true, []string{addr})
		if err != nil {
			return Found{}, err
		}
		if best == nil {
			best = &Found{pub, sk}
		}
	}
	if best == nil {
		return Found{}, errors.New("no usable key with a user ID for the address")
	}
	return *best, nil
}

// Keyserver looks keys up by mail address on a VKS server
// (keys.openpgp.org: /vks/v1/by-email/ADDR) or an HKP server
// (/pks/lookup?op=get&options=mr&search=ADDR).
type Keyserver struct {
	URL     string // https://keys.openpgp.org, hkps://keyserver.example
	HKP     bool   // use HKP instead of VKS
	HTTP    *http.Client
	MaxSize int64
}

// Lookup fetches the key block for addr.
func (k *Keyserver) Lookup(ctx context.Context, addr string) ([]byte, error) {
	base := strings.TrimRight(k.URL, "/")
	base = strings.Replace(base, "hkps://", "https://", 1)
	base = strings.Replace(base, "hkp://", "http://", 1)
	var u string
	if k.HKP {
		u = base + "/pks/lookup?op=get&options=mr&search=" + url.QueryEscape(addr)
	} else {
		u = base + "/vks/v1/by-email/" + url.PathEscape(addr)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	hc := k.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, errors.New("no key on the keyserver")
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("keyserver: HTTP %d", resp.StatusCode)
	}
	max := k.MaxSize
	if max <= 0 {
		max = 256 << 10
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("keyserver: key larger than %d bytes", max)
	}
	if !bytes.Contains(b, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
		return nil, errors.New("keyserver: answer is not an armored key")
	}
	return b, nil
}
