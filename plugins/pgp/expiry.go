package pgp

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/posthorn/posthorn/plugins/pgp/keystore"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

// EventKeyExpiring is emitted for an own key that expires within
// expiry_warning; the notify plugin mails it (template pgp.key_expiring).
const EventKeyExpiring = "pgp.key_expiring"

// expiryWatch emits EventKeyExpiring for own keys, once per key and
// expiry date per process, at start and every interval.
type expiryWatch struct {
	keys     *Keys
	host     sdk.Host
	warn     time.Duration
	notifyTo string

	mu   sync.Mutex
	sent map[string]bool
}

func (w *expiryWatch) run(ctx context.Context, interval time.Duration) {
	defer func() {
		if r := recover(); r != nil {
			sdk.Logger().Error("key expiry check panicked", "panic", fmt.Sprint(r))
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		w.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check looks at every own key once.
func (w *expiryWatch) check(ctx context.Context) {
	ks, err := w.keys.Store.List(ctx)
	if err != nil {
		return
	}
	now := w.keys.now()
	for _, k := range ks {
		if !k.Own || k.Expires.IsZero() || k.Expires.Sub(now) > w.warn {
			continue
		}
		id := k.Fingerprint + "@" + k.Expires.UTC().Format(time.RFC3339)
		w.mu.Lock()
		done := w.sent[id]
		w.mu.Unlock()
		if done {
			continue
		}
		ev := sdk.Event{
			Type:      EventKeyExpiring,
			Recipient: mailAddress(k),
			Time:      now,
			Attributes: map[string]string{
				"not_after":   k.Expires.UTC().Format(time.RFC3339),
				"fingerprint": k.Fingerprint,
			},
		}
		for _, e := range entities([]keystore.Key{k}) {
			if _, id := e.PrimaryIdentity(now, nil); id != nil {
				ev.Attributes["uid"] = id.Name
			}
		}
		if w.notifyTo != "" {
			ev.Attributes["notify_to"] = w.notifyTo
		}
		emit := func(ctx context.Context) error { return w.host.Emit(ctx, ev) }
		var err error
		if r, ok := w.keys.Store.(sqldb.OnceRunner); ok {
			// Once for every node sharing the key store (the record
			// outlives restarts too).
			_, err = r.RunOnce(ctx, "pgp.key_expiring "+id, 100*365*24*time.Hour, now, emit)
		} else {
			err = emit(ctx)
		}
		if err != nil {
			if err != sdk.ErrNoHost {
				sdk.Logger().Warn("cannot emit key expiry event", "fingerprint", k.Fingerprint, "error", err)
			}
			continue
		}
		w.mu.Lock()
		w.sent[id] = true
		w.mu.Unlock()
	}
}

func mailAddress(k keystore.Key) string {
	for _, a := range k.Addresses {
		if _, _, err := splitAddr(a); err == nil {
			return a
		}
	}
	return ""
}

func splitAddr(a string) (string, string, error) {
	for i := len(a) - 1; i > 0; i-- {
		if a[i] == '@' && i < len(a)-1 {
			return a[:i], a[i+1:], nil
		}
	}
	return "", "", fmt.Errorf("%q is not an address", a)
}
