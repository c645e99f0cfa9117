package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/testbed/wait"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var quiet = slog.New(slog.DiscardHandler)

// open opens a queue in dir with a fake clock and jitter 0.5 (no spread).
func open(t testing.TB, dir string, c *clock, mod ...func(*Options)) *Queue {
	t.Helper()
	o := Options{Dir: dir, Logger: quiet, Jitter: func() float64 { return 0.5 }}
	if c != nil {
		o.Now = c.Now
	}
	for _, f := range mod {
		f(&o)
	}
	q, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func enqueue(t testing.TB, q *Queue, body string, rcpts ...string) *Envelope {
	t.Helper()
	env := &Envelope{From: "sender@example.org"}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, &Recipient{Addr: r})
	}
	if _, err := q.Enqueue(env, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	return env
}

func body(t testing.TB, q *Queue, id string) string {
	t.Helper()
	rc, err := q.Body(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lease(t testing.TB, q *Queue) *Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	env, err := q.Lease(ctx)
	if err != nil {
		t.Fatal("Lease:", err)
	}
	return env
}

// noLease asserts that nothing can be leased right now.
func noLease(t testing.TB, q *Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if env, err := q.Lease(ctx); err == nil {
		t.Fatalf("leased %s, want nothing due", env.ID)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
}

func TestEnqueueLeaseReportRoundTrip(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	q := open(t, dir, c, noSlots)
	const msg = "Subject: hi\r\n\r\nhello\r\n"
	env := enqueue(t, q, msg, "a@example.com", "b@example.net")

	if len(env.ID) != 16 || !validID(env.ID) {
		t.Errorf("ID %q", env.ID)
	}
	if env.Size != int64(len(msg)) || !env.Received.Equal(c.Now()) {
		t.Errorf("Size %d Received %v", env.Size, env.Received)
	}
	for _, r := range env.Recipients {
		if r.State != Pending || r.Attempts != 0 || !r.NextAttempt.Equal(c.Now()) {
			t.Errorf("recipient after Enqueue: %+v", r)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "msg", env.ID)); err != nil {
		t.Fatal(err)
	}

	got := lease(t, q)
	if got.ID != env.ID || got.From != env.From || len(got.Recipients) != 2 || got.Recovered {
		t.Fatalf("leased %+v", got)
	}
	got.Recipients[0].Addr = "changed@example.com" // a copy: must not leak back
	noLease(t, q)                                  // already leased
	if b := body(t, q, env.ID); b != msg {
		t.Fatalf("body %q", b)
	}
	if b := body(t, q, env.ID); b != msg { // re-readable
		t.Fatalf("second body %q", b)
	}
	if e, _ := q.Get(env.ID); e.Recipients[0].Addr != "a@example.com" {
		t.Fatal("Lease handed out shared state")
	}
	if s := q.Stats(); s.Messages != 1 || s.Leased != 1 || s.Active != 2 || s.Pending != 2 {
		t.Errorf("stats %+v", s)
	}

	if err := q.Report(env.ID, []Result{{Index: 0, State: Delivered, Status: "2.0.0"}, {Index: 1, State: Delivered}}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(env.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after delivery: %v", err)
	}
	if _, err := q.Body(env.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Body after delivery: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "msg", env.ID)); !os.IsNotExist(err) {
		t.Fatalf("file still there: %v", err)
	}
	if s := q.Stats(); s != (Stats{}) {
		t.Errorf("stats %+v", s)
	}
}

func TestPartialDelivery(t *testing.T) {
	c := newClock()
	q := open(t, t.TempDir(), c)
	env := enqueue(t, q, "x", "a@x", "b@x", "c@x")
	lease(t, q)
	err := q.Report(env.ID, []Result{
		{Index: 0, State: Delivered, Status: "2.0.0", RemoteMTA: "mx.x"},
		{Index: 1, State: Failed, Status: "5.1.1", Diagnostic: "smtp; 550 5.1.1 no such user"},
		{Index: 2, State: Pending, Status: "4.4.1", Diagnostic: "connection refused", DelayWarned: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := q.Get(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	r := got.Recipients
	if r[0].State != Delivered || r[0].RemoteMTA != "mx.x" || r[0].Attempts != 1 || !r[0].NextAttempt.IsZero() {
		t.Errorf("rcpt 0: %+v", r[0])
	}
	if r[1].State != Failed || r[1].Status != "5.1.1" || r[1].Attempts != 1 {
		t.Errorf("rcpt 1: %+v", r[1])
	}
	if r[2].State != Pending || r[2].Attempts != 1 || !r[2].DelayWarned || !r[2].LastAttempt.Equal(c.Now()) ||
		!r[2].NextAttempt.Equal(c.Now().Add(5*time.Minute)) {
		t.Errorf("rcpt 2: %+v", r[2])
	}
	if s := q.Stats(); s.Delivered != 1 || s.Failed != 1 || s.Deferred != 1 || s.Leased != 0 {
		t.Errorf("stats %+v", s)
	}
	noLease(t, q)
	c.Add(5 * time.Minute)
	got = lease(t, q)
	// A result for an already finished recipient is ignored.
	if err := q.Report(got.ID, []Result{{Index: 1, State: Delivered}, {Index: 2, State: Delivered}}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(env.ID); !errors.Is(err, ErrNotFound) {
		t.Fatal("message should be gone:", err)
	}
}

func TestReportBadResults(t *testing.T) {
	q := open(t, t.TempDir(), newClock())
	env := enqueue(t, q, "x", "a@x")
	for _, res := range [][]Result{
		{{Index: 1, State: Delivered}},
		{{Index: -1, State: Delivered}},
		{{Index: 0, State: "bogus"}},
		{{Index: 0, State: Pending}, {Index: 0, State: Delivered}},
	} {
		lease(t, q)
		if err := q.Report(env.ID, res); err == nil {
			t.Errorf("Report(%v) succeeded", res)
		}
		// The lease ended anyway, nothing was applied.
		if e, _ := q.Get(env.ID); e.Recipients[0].Attempts != 0 {
			t.Errorf("applied: %+v", e.Recipients[0])
		}
	}
	if err := q.Report("nosuchid", nil); !errors.Is(err, ErrNotFound) {
		t.Error(err)
	}
}

func TestBackoffSchedule(t *testing.T) {
	q := open(t, t.TempDir(), newClock())
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, 5 * time.Minute},
		{2, 10 * time.Minute},
		{3, 20 * time.Minute},
		{4, 40 * time.Minute},
		{5, 4000 * time.Second}, // 80m capped
		{6, 4000 * time.Second},
		{60, 4000 * time.Second},
		{1000, 4000 * time.Second},
	} {
		if got := q.Backoff(tc.n); got != tc.want {
			t.Errorf("Backoff(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}

	// Jitter spreads ±15%.
	for _, tc := range []struct {
		j    float64
		n    int
		want time.Duration
	}{
		{0, 1, 255 * time.Second},
		{0.75, 1, 300 * time.Second * 1075 / 1000},
		{0.999999, 5, 4599 * time.Second},
		{0, 5, 3400 * time.Second},
	} {
		jq := open(t, t.TempDir(), newClock(), func(o *Options) { o.Jitter = func() float64 { return tc.j } })
		got := jq.Backoff(tc.n)
		if d := got - tc.want; d < -time.Second || d > time.Second {
			t.Errorf("jitter %v: Backoff(%d) = %v, want %v", tc.j, tc.n, got, tc.want)
		}
	}

	// Through Report: attempt n is due Backoff(n) after it.
	c := newClock()
	q = open(t, t.TempDir(), c, func(o *Options) {
		o.MinBackoff, o.MaxBackoff = time.Minute, 10*time.Minute
	})
	env := enqueue(t, q, "x", "a@x")
	for n, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute} {
		got := lease(t, q)
		if err := q.Report(got.ID, []Result{{Index: 0, State: Pending}}); err != nil {
			t.Fatal(err)
		}
		e, _ := q.Get(env.ID)
		if r := e.Recipients[0]; r.Attempts != n+1 || r.NextAttempt.Sub(c.Now()) != want {
			t.Fatalf("attempt %d: next in %v, want %v", r.Attempts, r.NextAttempt.Sub(c.Now()), want)
		}
		c.Add(want)
	}
}

func TestNextAttemptNotPastLifetime(t *testing.T) {
	c := newClock()
	q := open(t, t.TempDir(), c, func(o *Options) { o.MaxLifetime = time.Hour })
	env := enqueue(t, q, "x", "a@x")
	c.Add(58 * time.Minute)
	lease(t, q)
	if err := q.Report(env.ID, []Result{{Index: 0, State: Pending}}); err != nil {
		t.Fatal(err)
	}
	e, _ := q.Get(env.ID)
	if want := env.Received.Add(time.Hour); !e.Recipients[0].NextAttempt.Equal(want) {
		t.Fatalf("next attempt %v, want end of lifetime %v", e.Recipients[0].NextAttempt, want)
	}
}

func TestExpired(t *testing.T) {
	c := newClock()
	q := open(t, t.TempDir(), c, func(o *Options) { o.MaxLifetime = 24 * time.Hour })
	env := enqueue(t, q, "x", "a@x")
	if q.Expired(env) {
		t.Fatal("expired at once")
	}
	c.Add(24 * time.Hour)
	if q.Expired(env) {
		t.Fatal("expired exactly at the lifetime")
	}
	c.Add(time.Second)
	if !q.Expired(env) {
		t.Fatal("not expired after the lifetime")
	}
	q5 := open(t, t.TempDir(), c)
	if q5.Expired(&Envelope{Received: c.Now().Add(-5*24*time.Hour + time.Minute)}) ||
		!q5.Expired(&Envelope{Received: c.Now().Add(-5*24*time.Hour - time.Minute)}) {
		t.Fatal("default lifetime is not 5 days")
	}
}

func TestHoldUnholdFlushRequeue(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	q := open(t, dir, c)
	env := enqueue(t, q, "x", "a@x", "b@x")
	id := env.ID

	if err := q.Hold(id); err != nil {
		t.Fatal(err)
	}
	noLease(t, q)
	if s := q.Stats(); s.Held != 1 {
		t.Errorf("stats %+v", s)
	}
	if err := q.Unhold(id); err != nil {
		t.Fatal(err)
	}
	lease(t, q)
	if err := q.Report(id, []Result{{Index: 0, State: Pending}, {Index: 1, State: Delivered}}); err != nil {
		t.Fatal(err)
	}
	noLease(t, q)

	// Flush: due now, attempts kept.
	if err := q.Flush(id); err != nil {
		t.Fatal(err)
	}
	got := lease(t, q)
	if r := got.Recipients[0]; r.Attempts != 1 || !r.NextAttempt.Equal(c.Now()) {
		t.Errorf("after Flush: %+v", r)
	}
	if err := q.Report(id, []Result{{Index: 0, State: Pending}}); err != nil {
		t.Fatal(err)
	}
	if e, _ := q.Get(id); e.Recipients[0].Attempts != 2 || !e.Recipients[0].NextAttempt.Equal(c.Now().Add(10*time.Minute)) {
		t.Errorf("second deferral: %+v", e.Recipients[0])
	}
	// Flush("") covers all messages; held ones stay held.
	other := enqueue(t, q, "y", "c@x")
	lease(t, q)
	q.Report(other.ID, []Result{{Index: 0, State: Pending}})
	if err := q.Hold(other.ID); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(""); err != nil {
		t.Fatal(err)
	}
	if got := lease(t, q); got.ID != id {
		t.Fatalf("leased %s", got.ID)
	}
	noLease(t, q)
	q.Release(id)

	// Requeue: attempts reset, due now, persisted.
	c.Add(time.Minute)
	if err := q.Requeue(id); err != nil {
		t.Fatal(err)
	}
	if err := q.SetAttr(id, "policy.encrypt", "smime"); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = open(t, dir, c)
	e, err := q.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.Recipients[0]; r.Attempts != 0 || !r.NextAttempt.Equal(c.Now()) || r.State != Pending {
		t.Errorf("after Requeue and reopen: %+v", r)
	}
	if e.Recipients[1].State != Delivered || e.Attrs["policy.encrypt"] != "smime" {
		t.Errorf("after reopen: %+v attrs %v", e.Recipients[1], e.Attrs)
	}
	if o, _ := q.Get(other.ID); !o.Held {
		t.Error("hold not persisted")
	}

	for _, f := range []func(string) error{q.Hold, q.Unhold, q.Flush, q.Requeue, q.Delete,
		func(id string) error { return q.SetAttr(id, "k", "v") }} {
		if err := f("AAAAAAAAAAAAAAAA"); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown ID: %v", err)
		}
	}
}

func TestDelete(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	q := open(t, dir, c)

	// Not leased: gone at once.
	a := enqueue(t, q, "a", "a@x")
	if err := q.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "msg", a.ID)); !os.IsNotExist(err) {
		t.Fatal("file left behind")
	}
	noLease(t, q)

	// Leased, then Report: results dropped, never resurrected.
	b := enqueue(t, q, "b", "a@x", "b@x")
	lease(t, q)
	if err := q.Delete(b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatal("Get after Delete:", err)
	}
	if len(q.List()) != 0 || q.Stats().Messages != 0 {
		t.Fatal("deleted message still listed")
	}
	if body(t, q, b.ID) != "b" { // the delivery under way can still read it
		t.Fatal("body")
	}
	if err := q.Delete(b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatal("second Delete:", err)
	}
	if err := q.Report(b.ID, []Result{{Index: 0, State: Pending}, {Index: 1, State: Delivered}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "msg", b.ID)); !os.IsNotExist(err) {
		t.Fatal("file left behind after Report")
	}
	c.Add(time.Hour)
	noLease(t, q)

	// Leased, then Release.
	d := enqueue(t, q, "d", "a@x")
	lease(t, q)
	q.Delete(d.ID)
	q.Release(d.ID)
	if _, err := os.Stat(filepath.Join(dir, "msg", d.ID)); !os.IsNotExist(err) {
		t.Fatal("file left behind after Release")
	}

	// Leased, Delete, crash (no lease end): the tombstone keeps it deleted.
	e := enqueue(t, q, "e", "a@x")
	lease(t, q)
	q.Delete(e.ID)
	q.Close()
	q = open(t, dir, c)
	if len(q.List()) != 0 {
		t.Fatalf("resurrected: %v", q.List())
	}
	if _, err := os.Stat(filepath.Join(dir, "msg", e.ID)); !os.IsNotExist(err) {
		t.Fatal("tombstoned file not removed at recovery")
	}
}

func TestReleaseKeepsDue(t *testing.T) {
	q := open(t, t.TempDir(), newClock())
	env := enqueue(t, q, "x", "a@x")
	lease(t, q)
	q.Release(env.ID)
	if got := lease(t, q); got.ID != env.ID || got.Recipients[0].Attempts != 0 {
		t.Fatalf("%+v", got)
	}
}

func TestRecovery(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	q := open(t, dir, c)
	a := enqueue(t, q, "body a", "a1@x", "a2@x")
	b := enqueue(t, q, "body b", "b@x")
	c.Add(time.Second)
	done := enqueue(t, q, "body done", "d@x")
	q.Hold(b.ID)
	q.SetAttr(b.ID, "k", "v")
	for range 2 {
		e := lease(t, q)
		switch e.ID {
		case a.ID:
			q.Report(e.ID, []Result{{Index: 0, State: Delivered}, {Index: 1, State: Pending, Status: "4.4.1"}})
		case done.ID:
			q.Report(e.ID, []Result{{Index: 0, State: Failed}})
		default:
			t.Fatal("leased held message")
		}
	}
	before := q.List()
	q.Close()

	q = open(t, dir, c)
	after := q.List()
	if len(after) != 2 {
		t.Fatalf("recovered %d messages, want 2", len(after))
	}
	for i := range after {
		if !after[i].Recovered {
			t.Errorf("%s: Recovered not set", after[i].ID)
		}
		after[i].Recovered = false
		if fmt.Sprint(after[i]) == "" || !sameEnvelope(before[i], after[i]) {
			t.Errorf("state changed across reopen:\n%+v\n%+v", before[i], after[i])
		}
	}
	if body(t, q, a.ID) != "body a" || body(t, q, b.ID) != "body b" {
		t.Error("bodies")
	}
	if err := q.Verify(a.ID); err != nil {
		t.Error(err)
	}
	c.Add(5 * time.Minute)
	if got := lease(t, q); got.ID != a.ID || !got.Recovered {
		t.Fatalf("leased %+v", got)
	}
	noLease(t, q) // b is held
	n := enqueue(t, q, "new", "n@x")
	if g, _ := q.Get(n.ID); g.Recovered {
		t.Error("new message marked Recovered")
	}
	// Reopening while open is refused.
	if _, err := Open(Options{Dir: dir, Logger: quiet}); err == nil {
		t.Error("second Open of the same spool succeeded")
	}
}

func sameEnvelope(a, b *Envelope) bool {
	x, _ := encodeEnvelopeRecord(a)
	y, _ := encodeEnvelopeRecord(b)
	return bytes.Equal(x, y)
}

// syncBuf is a log sink for tests.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestQuarantine(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	q := open(t, dir, c, noSlots)
	good := enqueue(t, q, "good", "g@x")
	corrupt := enqueue(t, q, "corrupt envelope", "c@x")
	nobody := enqueue(t, q, strings.Repeat("long body ", 100), "n@x")
	badname := enqueue(t, q, "bad json", "j@x")
	q.Close()
	msgDir := filepath.Join(dir, "msg")

	// Flip a byte inside the envelope record: checksum mismatch.
	p := filepath.Join(msgDir, corrupt.ID)
	raw, _ := os.ReadFile(p)
	raw[headerSize+len("corrupt envelope")+20] ^= 0x55
	os.WriteFile(p, raw, 0o600)
	// Cut the file in the middle of the body.
	os.Truncate(filepath.Join(msgDir, nobody.ID), headerSize+100)
	// An intact file under another message's name: ID mismatch.
	os.Rename(filepath.Join(msgDir, badname.ID), filepath.Join(msgDir, "Zzzzzzzzzzzzzzzz"))
	os.WriteFile(filepath.Join(msgDir, "not-an-id.txt"), []byte("junk"), 0o600)
	os.WriteFile(filepath.Join(msgDir, ".tmp-ABC"), []byte("half written"), 0o600)
	os.WriteFile(filepath.Join(msgDir, "Empty"), nil, 0o600)

	var logs syncBuf
	q = open(t, dir, c, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	l := q.List()
	if len(l) != 1 || l[0].ID != good.ID || body(t, q, good.ID) != "good" {
		t.Fatalf("recovered %v", l)
	}
	for _, name := range []string{corrupt.ID, nobody.ID, "Zzzzzzzzzzzzzzzz", "not-an-id.txt", "Empty"} {
		if _, err := os.Stat(filepath.Join(dir, "quarantine", name)); err != nil {
			t.Errorf("%s not quarantined: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(msgDir, name)); !os.IsNotExist(err) {
			t.Errorf("%s still in msg/", name)
		}
		if !strings.Contains(logs.String(), name) {
			t.Errorf("no log line names %s", name)
		}
	}
	if _, err := os.Stat(filepath.Join(msgDir, ".tmp-ABC")); !os.IsNotExist(err) {
		t.Error("temp file not removed")
	}
	if !strings.Contains(logs.String(), "quarantine") || !strings.Contains(logs.String(), "truncated") {
		t.Errorf("logs:\n%s", logs.String())
	}
	// Quarantining the same name again does not clobber the first copy.
	os.WriteFile(filepath.Join(msgDir, "Empty"), nil, 0o600)
	q.Close()
	open(t, dir, c).Close()
	if ents, _ := os.ReadDir(filepath.Join(dir, "quarantine")); len(ents) != 6 {
		t.Errorf("quarantine holds %d entries, want 6", len(ents))
	}
}

func TestTornRecordIgnored(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	q := open(t, dir, c, noSlots)
	env := enqueue(t, q, "torn", "a@x")
	if err := q.Hold(env.ID); err != nil {
		t.Fatal(err)
	}
	q.Close()
	p := filepath.Join(dir, "msg", env.ID)
	fi, _ := os.Stat(p)
	size := fi.Size()

	// Half of a record that would release the hold.
	e := *env
	e.Held = false
	rec, _ := encodeEnvelopeRecord(&e)
	for _, cut := range []int{3, recHeaderSize + 1, len(rec) - 1} {
		f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		f.Write(rec[:cut])
		f.Close()
		q = open(t, dir, c)
		got, err := q.Get(env.ID)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if !got.Held {
			t.Fatalf("cut %d: torn record applied", cut)
		}
		q.Close()
		if fi, _ := os.Stat(p); fi.Size() != size {
			t.Fatalf("cut %d: torn tail not truncated (%d != %d)", cut, fi.Size(), size)
		}
	}
	// The journal goes on after the truncation.
	q = open(t, dir, c)
	if err := q.Unhold(env.ID); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = open(t, dir, c)
	if got, _ := q.Get(env.ID); got.Held {
		t.Fatal("Unhold after repair lost")
	}
}

func TestCompaction(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	q := open(t, dir, c, func(o *Options) { o.compactMin = 4 << 10 }, noSlots)
	big := strings.Repeat("0123456789abcdef", 4096)
	env := enqueue(t, q, big, "a@x")
	p := filepath.Join(dir, "msg", env.ID)
	var max int64
	for i := range 200 {
		if err := q.SetAttr(env.ID, "n", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(p)
		max = maxInt(max, fi.Size())
	}
	if max > int64(len(big))+12<<10 {
		t.Errorf("file grew to %d bytes", max)
	}
	rc, _ := q.Body(env.ID) // a reader opened before a rewrite stays valid
	for i := 200; i < 260; i++ {
		q.SetAttr(env.ID, "n", fmt.Sprint(i))
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != big {
		t.Error("old reader broken by compaction")
	}
	q.Close()
	q = open(t, dir, c)
	got, err := q.Get(env.ID)
	if err != nil || got.Attrs["n"] != "259" || body(t, q, env.ID) != big || q.Verify(env.ID) != nil {
		t.Fatalf("after compaction: %v %v", err, got)
	}
}

func maxInt(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func TestIDs(t *testing.T) {
	q := open(t, t.TempDir(), nil)
	prev := ""
	seen := map[string]bool{}
	for range 10000 {
		id := q.NewID()
		if len(id) != 16 || !validID(id) || seen[id] || id[:9] < prev {
			t.Fatalf("bad or repeated ID %q after %q", id, prev)
		}
		seen[id] = true
		prev = id[:9]
	}
	// A reserved ID is kept; a used or invalid one is refused.
	id := q.NewID()
	env := &Envelope{ID: id, Recipients: []*Recipient{{Addr: "a@x"}}}
	if got, err := q.Enqueue(env, strings.NewReader("x")); err != nil || got != id {
		t.Fatal(got, err)
	}
	env = &Envelope{ID: id, Recipients: []*Recipient{{Addr: "a@x"}}}
	if _, err := q.Enqueue(env, strings.NewReader("x")); err == nil {
		t.Fatal("duplicate ID accepted")
	}
	for _, bad := range []string{"../etc", "a b", ".tmp-x", strings.Repeat("a", 65)} {
		env = &Envelope{ID: bad, Recipients: []*Recipient{{Addr: "a@x"}}}
		if _, err := q.Enqueue(env, strings.NewReader("x")); err == nil {
			t.Errorf("ID %q accepted", bad)
		}
	}
	if _, err := q.Enqueue(&Envelope{}, strings.NewReader("x")); err == nil {
		t.Error("no recipients accepted")
	}
}

// errReader fails after some bytes, like an SMTP session that drops.
type errReader struct{ n int }

func (r *errReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("connection reset")
	}
	n := min(len(p), r.n)
	r.n -= n
	return n, nil
}

func TestEnqueueBodyErrorLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil)
	env := &Envelope{Recipients: []*Recipient{{Addr: "a@x"}}}
	if _, err := q.Enqueue(env, &errReader{n: 300 << 10}); err == nil {
		t.Fatal("Enqueue succeeded")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "msg")); len(ents) != 0 || len(q.List()) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// waitLeaseBlocked waits until n goroutines are blocked in Lease (parked
// in its select), so that what the test does next reaches a waiting Lease.
func waitLeaseBlocked(t *testing.T, n int) {
	t.Helper()
	wait.For(t, 10*time.Second, fmt.Sprintf("%d blocked Lease call(s)", n), func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		blocked := 0
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "[select") && strings.Contains(g, "queue.(*Queue).Lease(") {
				blocked++
			}
		}
		return blocked >= n
	})
}

func TestLeaseWakes(t *testing.T) {
	q := open(t, t.TempDir(), nil, func(o *Options) { o.MinBackoff = 80 * time.Millisecond })
	got := make(chan *Envelope)
	go func() {
		env, _ := q.Lease(context.Background())
		got <- env
	}()
	waitLeaseBlocked(t, 1)
	start := time.Now()
	env := enqueue(t, q, "x", "a@x")
	if e := <-got; e.ID != env.ID || time.Since(start) > time.Second {
		t.Fatal("Lease did not wake on Enqueue")
	}
	// The timer: deferred for 80ms.
	start = time.Now()
	q.Report(env.ID, []Result{{Index: 0, State: Pending}})
	e := lease(t, q)
	if el := time.Since(start); e.ID != env.ID || el < 60*time.Millisecond || el > 2*time.Second {
		t.Fatalf("deferred lease came after %v", el)
	}
	// Cancel and Close end a waiting Lease.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { _, err := q.Lease(ctx); errc <- err }()
	waitLeaseBlocked(t, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	go func() { _, err := q.Lease(context.Background()); errc <- err }()
	waitLeaseBlocked(t, 1)
	q.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(&Envelope{Recipients: []*Recipient{{Addr: "a@x"}}}, strings.NewReader("")); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
}

// noSlots turns slot files off: for tests of the ID-named files' layout.
func noSlots(o *Options) { o.maxSlots = -1 }
