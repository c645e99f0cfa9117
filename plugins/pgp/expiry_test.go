package pgp_test

import (
	"context"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/plugins/pgp"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/testbed/wait"
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
	parked := parkedExpiryWatches()
	if err := p.Configure(context.Background(), sdk.Config{JSON: []byte(`{"discovery":["local"],"expiry_notify":"pki@example.org"}`), DataDir: data, Host: h}); err != nil {
		t.Fatal(err)
	}
	defer p.Configure(context.Background(), sdk.Config{JSON: []byte(`{}`), DataDir: t.TempDir()})
	// The first check has run over every key once it waits for the next
	// tick: whatever it emits has been emitted then.
	wait.For(t, 10*time.Second, "the first expiry check", func() bool { return parkedExpiryWatches() > parked })
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

// parkedExpiryWatches counts expiry watches waiting for their next tick.
func parkedExpiryWatches() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[select") && strings.Contains(g, "pgp.(*expiryWatch).run(") {
			n++
		}
	}
	return n
}
