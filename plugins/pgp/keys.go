package pgp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/posthorn/posthorn/plugins/pgp/keystore"
	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
)

// Keys is the plugin's view of its key store: parsing, choosing and
// storing OpenPGP keys.
type Keys struct {
	Store keystore.Store
	Now   func() time.Time
	// Manual lists the sources (keystore.Source* or "webmailbox upload")
	// whose new keys wait for an operator's approval.
	Manual map[string]bool
	// OnPending is called after a key new to the store was stored
	// pending (to tell the operator).
	OnPending func(ctx context.Context, k keystore.Key)

	mu       sync.Mutex
	ring     openpgp.EntityList
	ringTime time.Time
}

// ringTTL bounds how long Keyring's parsed keys are reused; changes made
// through this Keys are seen at once, those of other processes (the CLI,
// other nodes) within ringTTL.
const ringTTL = 30 * time.Second

func (k *Keys) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

// Import parses one or more keys (armored or binary) and stores them.
// Keys with secret parts become own keys. addresses, if given, replace
// the addresses from the user IDs (e.g. a bare domain for a domain key).
func (k *Keys) Import(ctx context.Context, data []byte, source string, verified bool, addresses []string) ([]keystore.Key, error) {
	el, err := pgpmail.ParseKeys(data)
	if err != nil {
		return nil, err
	}
	var out []keystore.Key
	for _, e := range el {
		sk, err := k.put(ctx, e, source, verified, addresses)
		if err != nil {
			return out, err
		}
		out = append(out, sk)
	}
	return out, nil
}

func (k *Keys) put(ctx context.Context, e *openpgp.Entity, source string, verified bool, addresses []string) (keystore.Key, error) {
	own := e.PrivateKey != nil
	armored, err := pgpmail.Armor(e, own)
	if err != nil {
		return keystore.Key{}, err
	}
	addrs := addresses
	if len(addrs) == 0 {
		addrs = pgpmail.Addresses(e)
	}
	if len(addrs) == 0 {
		return keystore.Key{}, fmt.Errorf("key %s has no mail address in its user IDs; name the address or domain", pgpmail.Fingerprint(e))
	}
	fpr := pgpmail.Fingerprint(e)
	if !own {
		// Never let a public key replace a stored secret key.
		if old, err := k.Store.Get(ctx, fpr); err == nil && old.Own {
			return old, nil
		}
	}
	k.invalidate()
	sk := keystore.Key{
		Fingerprint: fpr, Addresses: addrs, Own: own, Source: source, Verified: verified,
		Armored: armored, Created: e.PrimaryKey.CreationTime, Expires: pgpmail.Expiry(e, k.now()), Updated: k.now(),
	}
	fresh := false
	if !own && k.Manual[source] {
		old, err := k.Store.Get(ctx, fpr)
		switch {
		case err == nil:
			sk.Pending = old.Pending // approved once, approved for good
		case errors.Is(err, keystore.ErrNotFound):
			sk.Pending, fresh = true, true
		default:
			return keystore.Key{}, err
		}
	}
	if err := k.Store.Put(ctx, sk); err != nil {
		return sk, err
	}
	if fresh && k.OnPending != nil {
		k.OnPending(ctx, sk)
	}
	return sk, nil
}

// Generate makes and stores a new own key for addr (a mail address). With
// domain set, the key serves every address at addr's domain.
func (k *Keys) Generate(ctx context.Context, addr string, o pgpmail.GenerateOptions, domain bool) (keystore.Key, error) {
	o.Now = k.now()
	e, err := pgpmail.Generate(addr, o)
	if err != nil {
		return keystore.Key{}, err
	}
	var addrs []string
	if domain {
		addrs = []string{domainOf(addr), strings.ToLower(addr)}
	}
	return k.put(ctx, e, keystore.SourceGenerated, true, addrs)
}

func domainOf(addr string) string {
	addr = keystore.NormalizeAddress(addr)
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

// entities parses stored keys, skipping broken ones.
func entities(ks []keystore.Key) openpgp.EntityList {
	var out openpgp.EntityList
	for _, k := range ks {
		el, err := pgpmail.ParseKeys(k.Armored)
		if err == nil {
			out = append(out, el...)
		}
	}
	return out
}

// Own returns the organisation's signing key for addr: one for the
// address, else one for its domain.
func (k *Keys) Own(ctx context.Context, addr string) (*openpgp.Entity, error) {
	for _, a := range []string{addr, domainOf(addr)} {
		ks, err := k.Store.ByAddress(ctx, a)
		if err != nil {
			return nil, err
		}
		for _, sk := range ks {
			if !sk.Own {
				continue
			}
			for _, e := range entities([]keystore.Key{sk}) {
				if pgpmail.CanSign(e, k.now()) == nil {
					return e, nil
				}
			}
		}
	}
	return nil, keystore.ErrNotFound
}

// IsOwnAddress reports whether addr has an own key (address or domain).
func (k *Keys) IsOwnAddress(ctx context.Context, addr string) bool {
	_, err := k.Own(ctx, addr)
	return err == nil
}

// Public returns a usable public key for addr from the store: own keys
// first, then verified ones, then the newest. Only keys whose user IDs
// name addr (or own domain keys) count.
func (k *Keys) Public(ctx context.Context, addr string) (*openpgp.Entity, keystore.Key, error) {
	return k.publicWhere(ctx, addr, func(keystore.Key) bool { return true })
}

func (k *Keys) publicWhere(ctx context.Context, addr string, ok func(keystore.Key) bool) (*openpgp.Entity, keystore.Key, error) {
	ks, err := k.Store.ByAddress(ctx, addr)
	if err != nil {
		return nil, keystore.Key{}, err
	}
	// Domain keys (a partner's gateway key an operator imported for a
	// bare domain, or our own) serve every address at the domain.
	domainKey := map[string]bool{}
	if d := domainOf(addr); d != addr {
		dks, err := k.Store.ByAddress(ctx, d)
		if err != nil {
			return nil, keystore.Key{}, err
		}
		for _, sk := range dks {
			if sk.Own || (sk.Verified && (sk.Source == keystore.SourceImported || sk.Source == keystore.SourceGenerated)) {
				domainKey[sk.Fingerprint] = true
				ks = append(ks, sk)
			}
		}
	}
	var best *openpgp.Entity
	var bestKey keystore.Key
	var why []string
	for _, sk := range ks {
		if !ok(sk) {
			continue
		}
		if sk.Pending {
			why = append(why, fmt.Sprintf("key %s waits for operator approval", short(sk.Fingerprint)))
			continue
		}
		el := entities([]keystore.Key{sk})
		if len(el) == 0 {
			why = append(why, fmt.Sprintf("key %s: unreadable", short(sk.Fingerprint)))
		}
		for _, e := range el {
			if err := pgpmail.CanEncrypt(e, k.now()); err != nil {
				why = append(why, fmt.Sprintf("key %s: %v", short(sk.Fingerprint), err))
				continue
			}
			if !sk.Own && !domainKey[sk.Fingerprint] && !pgpmail.HasAddress(e, addr) {
				why = append(why, fmt.Sprintf("key %s: no user ID for %s", short(sk.Fingerprint), addr))
				continue
			}
			if best == nil || (sk.Verified && !bestKey.Verified) {
				best, bestKey = e, sk
			}
		}
	}
	if best == nil {
		if len(why) > 0 {
			return nil, keystore.Key{}, fmt.Errorf("%w: %s", keystore.ErrNotFound, strings.Join(why, "; "))
		}
		return nil, keystore.Key{}, keystore.ErrNotFound
	}
	return best, bestKey, nil
}

func short(fpr string) string {
	if len(fpr) > 16 {
		return fpr[len(fpr)-16:]
	}
	return fpr
}

// Keyring returns every stored key: own secret keys decrypt, all public
// keys verify signatures.
func (k *Keys) Keyring(ctx context.Context) (openpgp.EntityList, error) {
	k.mu.Lock()
	if k.ring != nil && time.Since(k.ringTime) < ringTTL {
		r := k.ring
		k.mu.Unlock()
		return r, nil
	}
	k.mu.Unlock()
	ks, err := k.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	r := entities(ks)
	k.mu.Lock()
	k.ring, k.ringTime = r, time.Now()
	k.mu.Unlock()
	return r, nil
}

func (k *Keys) invalidate() {
	k.mu.Lock()
	k.ring = nil
	k.mu.Unlock()
}

// Find returns the stored keys matching q: a fingerprint, an address or
// a domain.
func (k *Keys) Find(ctx context.Context, q string) ([]keystore.Key, error) {
	if sk, err := k.Store.Get(ctx, q); err == nil {
		return []keystore.Key{sk}, nil
	} else if !errors.Is(err, keystore.ErrNotFound) {
		return nil, err
	}
	ks, err := k.Store.ByAddress(ctx, q)
	if err != nil {
		return nil, err
	}
	if len(ks) == 0 {
		return nil, keystore.ErrNotFound
	}
	return ks, nil
}
