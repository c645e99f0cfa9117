package pgp_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/plugins/pgp"
	"github.com/posthorn/posthorn/sdk"
)

type eventHost struct {
	mu  sync.Mutex
	evs []sdk.Event
}

func (h *eventHost) Submit(context.Context, string, *sdk.Envelope, io.Reader) (string, error) {
	return "", sdk.ErrNoHost
}
func (h *eventHost) Emit(_ context.Context, ev sdk.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.evs = append(h.evs, ev)
	return nil
}
func (h *eventHost) Confirm(context.Context, sdk.Confirmation) error { return nil }

func (h *eventHost) events() []sdk.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]sdk.Event(nil), h.evs...)
}

func TestKeyExpiringEvent(t *testing.T) {
	data := t.TempDir()
	if _, e, code := cli(t, "", "keys", "generate", "alice@example.org", "--lifetime", "720h", "--data", data); code != 0 {
		t.Fatal(e)
	}
	if _, e, code := cli(t, "", "keys", "generate", "bob@example.org", "--data", data); code != 0 {
		t.Fatal(e)
	}
	h := &eventHost{}
	p := &pgp.Plugin{}
	if err := p.Configure(context.Background(), sdk.Config{JSON: []byte(`{"discovery":["local"],"expiry_notify":"pki@example.org"}`), DataDir: data, Host: h}); err != nil {
		t.Fatal(err)
	}
	defer p.Configure(context.Background(), sdk.Config{JSON: []byte(`{}`), DataDir: t.TempDir()})
	deadline := time.Now().Add(5 * time.Second)
	for len(h.events()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	evs := h.events()
	if len(evs) != 1 {
		t.Fatalf("events %+v", evs)
	}
	ev := evs[0]
	na, err := time.Parse(time.RFC3339, ev.Attributes["not_after"])
	if ev.Type != pgp.EventKeyExpiring || ev.Recipient != "alice@example.org" || err != nil ||
		time.Until(na) > 31*24*time.Hour || ev.Attributes["notify_to"] != "pki@example.org" ||
		ev.Attributes["uid"] != "<alice@example.org>" || len(ev.Attributes["fingerprint"]) != 40 {
		t.Errorf("event %+v", ev)
	}
	if err := ev.ValidateEmitted(); err != nil {
		t.Error(err)
	}
}
