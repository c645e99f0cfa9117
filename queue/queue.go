package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"
)

// Options configure a Queue. Zero values take the documented defaults.
type Options struct {
	Dir         string
	MinBackoff  time.Duration    // first retry delay, default 5m
	MaxBackoff  time.Duration    // cap, default 4000s
	MaxLifetime time.Duration    // default 5d
	Now         func() time.Time // injectable clock; default time.Now
	Jitter      func() float64   // [0,1); default math/rand
	Logger      *slog.Logger     // default slog.Default()

	// noGroupCommit makes every caller fsync the spool directory itself
	// (for benchmarks and tests comparing with group commit).
	noGroupCommit bool
}

const (
	defaultMinBackoff  = 5 * time.Minute
	defaultMaxBackoff  = 4000 * time.Second
	defaultMaxLifetime = 5 * 24 * time.Hour

	// compactAfter is the number of journal records after which a journal
	// is rewritten as one snapshot.
	compactAfter = 64
	// maxLeaseWait bounds one sleep in Lease, so that a stepped clock is
	// noticed eventually; wake-ups are otherwise event- and timer-driven.
	maxLeaseWait = 30 * time.Second
)

var (
	// ErrNotFound is returned for IDs that are not (or no longer) queued.
	ErrNotFound = errors.New("queue: message not found")
	// ErrClosed is returned by operations on a closed Queue.
	ErrClosed = errors.New("queue: closed")
)

// Result is the outcome of one delivery attempt for one recipient.
type Result struct {
	Index       int       // into Envelope.Recipients
	State       RcptState // Delivered, Failed, or Pending (= deferred)
	Status      string
	Diagnostic  string
	RemoteMTA   string
	DelayWarned bool
}

// Stats counts what is in the queue. Active = pending recipients with no
// attempt yet of non-held messages; Deferred = pending recipients with at
// least one attempt of non-held messages; Held = pending recipients of held
// messages.
type Stats struct {
	Messages, Active, Deferred, Held, Leased int
}

// Queue is a durable spool of messages. All methods are safe for
// concurrent use.
type Queue struct {
	opts   Options
	log    *slog.Logger
	msgDir string
	tmpDir string
	qDir   string
	ids    idClock
	syncer *dirSyncer

	mu       sync.Mutex
	msgs     map[string]*entry
	reserved map[string]bool // IDs with an Enqueue in progress
	sched    schedHeap       // leasable messages by due time
	wake     chan struct{}   // closed and replaced whenever sched changes
	closed   bool
}

// entry is one message in memory. env is the authoritative current state
// and is replaced (never mutated) under Queue.mu.
type entry struct {
	wmu sync.Mutex // serialises journal writes for this message

	env     *Envelope
	nrec    int  // records in the journal file
	leased  bool // handed out by Lease, not yet Reported/Released
	deleted bool // Delete was called while leased; remove at lease end
	gone    bool // files removed; no longer in Queue.msgs
	due     time.Time
	hidx    int // index in sched, -1 if not there
}

// Open opens (creating if needed) the spool at opts.Dir and recovers every
// message on disk. Entries that cannot be read are moved to Dir/quarantine.
func Open(opts Options) (*Queue, error) {
	if opts.Dir == "" {
		return nil, errors.New("queue: no directory")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = defaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = defaultMaxBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.MaxLifetime <= 0 {
		opts.MaxLifetime = defaultMaxLifetime
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Jitter == nil {
		opts.Jitter = rand.Float64
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	q := &Queue{
		opts:     opts,
		log:      opts.Logger,
		msgDir:   filepath.Join(opts.Dir, "msg"),
		tmpDir:   filepath.Join(opts.Dir, "tmp"),
		qDir:     filepath.Join(opts.Dir, "quarantine"),
		msgs:     map[string]*entry{},
		reserved: map[string]bool{},
		wake:     make(chan struct{}),
	}
	for _, d := range []string{opts.Dir, q.msgDir, q.tmpDir, q.qDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	if err := syncDir(opts.Dir); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := q.recover(); err != nil {
		return nil, err
	}
	s, err := newDirSyncer(q.msgDir, !opts.noGroupCommit)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	q.syncer = s
	return q, nil
}

// Close stops the queue. Blocked Lease calls return ErrClosed. Close does
// not wait for deliveries: leases simply end (they are memory-only).
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.broadcast()
	q.mu.Unlock()
	return q.syncer.close()
}

// NewID returns a fresh unique ID: 16 characters of [0-9A-Za-z] that sort
// by creation time.
func (q *Queue) NewID() string { return q.ids.newID() }

func (q *Queue) now() time.Time { return q.opts.Now() }

func (q *Queue) envPath(id string) string  { return filepath.Join(q.msgDir, id+".env") }
func (q *Queue) bodyPath(id string) string { return filepath.Join(q.msgDir, id+".body") }

// Body returns the message bytes exactly as enqueued. Each call opens its
// own reader; it stays readable even if the message is removed meanwhile.
func (q *Queue) Body(id string) (io.ReadCloser, error) {
	q.mu.Lock()
	e := q.msgs[id]
	q.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	f, err := os.Open(q.bodyPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return f, nil
}

// Get returns a copy of one message's envelope.
func (q *Queue) Get(id string) (*Envelope, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.msgs[id]
	if e == nil || e.deleted {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return copyEnvelope(e.env), nil
}

// List returns copies of all envelopes, oldest first.
func (q *Queue) List() []*Envelope {
	q.mu.Lock()
	out := make([]*Envelope, 0, len(q.msgs))
	for _, e := range q.msgs {
		if !e.deleted {
			out = append(out, copyEnvelope(e.env))
		}
	}
	q.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Received.Equal(out[j].Received) {
			return out[i].Received.Before(out[j].Received)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Stats counts messages and recipients.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	var s Stats
	for _, e := range q.msgs {
		if e.deleted {
			continue
		}
		s.Messages++
		if e.leased {
			s.Leased++
		}
		for _, r := range e.env.Recipients {
			switch {
			case r.State != Pending:
			case e.env.Held:
				s.Held++
			case r.Attempts == 0:
				s.Active++
			default:
				s.Deferred++
			}
		}
	}
	return s
}

// Expired reports whether env has been queued longer than MaxLifetime.
func (q *Queue) Expired(env *Envelope) bool {
	return env.Received.Add(q.opts.MaxLifetime).Before(q.now())
}

// Lease blocks until a message that is not held and not leased has a
// pending recipient that is due, marks it leased and returns a copy. The
// lease lives in memory only; it ends with Report, Release or Close.
func (q *Queue) Lease(ctx context.Context) (*Envelope, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, ErrClosed
		}
		now := q.now()
		wait := maxLeaseWait
		if len(q.sched) > 0 {
			e := q.sched[0]
			if !e.due.After(now) {
				heap.Pop(&q.sched)
				e.leased = true
				c := copyEnvelope(e.env)
				q.mu.Unlock()
				return c, nil
			}
			wait = min(e.due.Sub(now), maxLeaseWait)
		}
		w := q.wake
		q.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-w:
		case <-t.C:
		}
		t.Stop()
	}
}

// Wake makes blocked Lease calls look at the schedule again (after an
// injected clock was moved forward, say).
func (q *Queue) Wake() {
	q.mu.Lock()
	q.broadcast()
	q.mu.Unlock()
}

// broadcast wakes every Lease waiting; q.mu must be held.
func (q *Queue) broadcast() {
	close(q.wake)
	q.wake = make(chan struct{})
}

// schedule puts e into or takes it out of the lease heap according to its
// state; q.mu must be held.
func (q *Queue) schedule(e *entry) {
	var due time.Time
	ok := !e.leased && !e.deleted && !e.gone && !e.env.Held
	if ok {
		ok = false
		for _, r := range e.env.Recipients {
			if r.State == Pending && (!ok || r.NextAttempt.Before(due)) {
				due, ok = r.NextAttempt, true
			}
		}
	}
	switch {
	case !ok && e.hidx >= 0:
		heap.Remove(&q.sched, e.hidx)
	case ok && e.hidx >= 0:
		e.due = due
		heap.Fix(&q.sched, e.hidx)
	case ok:
		e.due = due
		heap.Push(&q.sched, e)
	}
	if ok {
		q.broadcast()
	}
}

// Backoff is the delay before retry number attempts (1 = the first retry):
// MinBackoff doubled per earlier attempt, capped at MaxBackoff, then
// spread by ±10% with Jitter.
func (q *Queue) Backoff(attempts int) time.Duration {
	d := q.opts.MinBackoff
	for i := 1; i < attempts && d < q.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, q.opts.MaxBackoff)
	j := q.opts.Jitter()
	if j < 0 || j >= 1 {
		j = 0.5
	}
	return time.Duration(float64(d) * (0.9 + 0.2*j))
}

// Report records the outcome of an attempt for some recipients of a leased
// message, durably, and ends the lease. Deferred recipients (State Pending)
// are due again after Backoff. When no recipient is pending any more the
// message is removed.
func (q *Queue) Report(id string, results []Result) error {
	q.mu.Lock()
	e := q.msgs[id]
	q.mu.Unlock()
	if e == nil {
		return fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()

	q.mu.Lock()
	if e.gone {
		q.mu.Unlock()
		return fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if e.deleted {
		q.mu.Unlock()
		return q.remove(e)
	}
	now := q.now()
	next := copyEnvelope(e.env)
	for _, r := range results {
		if r.Index < 0 || r.Index >= len(next.Recipients) {
			q.mu.Unlock()
			return fmt.Errorf("queue: %s: recipient index %d out of range", id, r.Index)
		}
		if err := checkState(r.State); err != nil {
			q.mu.Unlock()
			return fmt.Errorf("queue: %s: %v", id, err)
		}
		rc := next.Recipients[r.Index]
		rc.State = r.State
		rc.Attempts++
		rc.LastAttempt = now
		rc.Status, rc.Diagnostic, rc.RemoteMTA = r.Status, r.Diagnostic, r.RemoteMTA
		rc.DelayWarned = rc.DelayWarned || r.DelayWarned
		if r.State == Pending {
			rc.NextAttempt = now.Add(q.Backoff(rc.Attempts))
		} else {
			rc.NextAttempt = time.Time{}
		}
	}
	done := true
	for _, r := range next.Recipients {
		if r.State == Pending {
			done = false
		}
	}
	old := e.env
	q.mu.Unlock()

	if done {
		return q.remove(e)
	}
	err := q.persist(e, old, next)
	q.mu.Lock()
	defer q.mu.Unlock()
	e.leased = false
	if err == nil {
		e.env = next
	}
	q.schedule(e)
	return err
}

// Release ends a lease without results; the message stays as it was.
func (q *Queue) Release(id string) {
	q.mu.Lock()
	e := q.msgs[id]
	if e == nil || !e.leased {
		q.mu.Unlock()
		return
	}
	e.leased = false
	if !e.deleted {
		q.schedule(e)
		q.mu.Unlock()
		return
	}
	q.mu.Unlock()
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if err := q.remove(e); err != nil {
		q.log.Error("removing deleted message", "queue_id", id, "err", err)
	}
}

// Hold keeps a message from being leased until Unhold. Persisted.
func (q *Queue) Hold(id string) error {
	return q.update(id, true, func(env *Envelope, _ time.Time) { env.Held = true })
}

// Unhold undoes Hold. Persisted.
func (q *Queue) Unhold(id string) error {
	return q.update(id, true, func(env *Envelope, _ time.Time) { env.Held = false })
}

// Flush makes every pending recipient of message id (of all messages if
// id is "") due now. It does not release held messages. Flush only changes
// the schedule in memory: after a crash the old retry times apply.
func (q *Queue) Flush(id string) error {
	fn := func(env *Envelope, now time.Time) {
		for _, r := range env.Recipients {
			if r.State == Pending && r.NextAttempt.After(now) {
				r.NextAttempt = now
			}
		}
	}
	if id != "" {
		return q.update(id, false, fn)
	}
	q.mu.Lock()
	ids := slices.Collect(maps.Keys(q.msgs))
	q.mu.Unlock()
	for _, id := range ids {
		if err := q.update(id, false, fn); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

// Requeue resets the attempt count and backoff of every pending recipient
// of message id and makes them due now. Persisted.
func (q *Queue) Requeue(id string) error {
	return q.update(id, true, func(env *Envelope, now time.Time) {
		for _, r := range env.Recipients {
			if r.State == Pending {
				r.Attempts = 0
				r.NextAttempt = now
			}
		}
	})
}

// SetAttr sets (value "" removes) one attribute of a message. Persisted.
// A worker holding a lease keeps its own copy and does not see the change.
func (q *Queue) SetAttr(id, key, value string) error {
	if key == "" {
		return errors.New("queue: empty attribute key")
	}
	return q.update(id, true, func(env *Envelope, _ time.Time) {
		if value == "" {
			delete(env.Attrs, key)
			return
		}
		if env.Attrs == nil {
			env.Attrs = map[string]string{}
		}
		env.Attrs[key] = value
	})
}

// Delete removes a message without a bounce. A leased message disappears
// from Get, List and Stats at once; its files go when the lease ends, and
// the deletion is journaled so that neither a later Report nor a restart
// brings it back.
func (q *Queue) Delete(id string) error {
	q.mu.Lock()
	e := q.msgs[id]
	q.mu.Unlock()
	if e == nil {
		return fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	q.mu.Lock()
	if e.gone || e.deleted {
		q.mu.Unlock()
		return fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	leased := e.leased
	q.mu.Unlock()
	if !leased {
		return q.remove(e)
	}
	if err := q.appendRecord(e, &patch{Deleted: true}, nil); err != nil {
		return err
	}
	q.mu.Lock()
	if e.leased {
		e.deleted = true
		q.schedule(e)
		q.mu.Unlock()
		return nil
	}
	q.mu.Unlock()
	// Released while we wrote; nobody else will remove it.
	return q.remove(e)
}

// update applies fn to a copy of the envelope, persists the difference if
// persist is set, and installs the copy.
func (q *Queue) update(id string, persist bool, fn func(env *Envelope, now time.Time)) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	e := q.msgs[id]
	q.mu.Unlock()
	if e == nil {
		return fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	q.mu.Lock()
	if e.gone || e.deleted {
		q.mu.Unlock()
		return fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	old := e.env
	next := copyEnvelope(old)
	fn(next, q.now())
	q.mu.Unlock()
	if persist {
		if err := q.persist(e, old, next); err != nil {
			return err
		}
	}
	q.mu.Lock()
	e.env = next
	q.schedule(e)
	q.mu.Unlock()
	return nil
}

// persist journals the difference between old and next; e.wmu must be held.
func (q *Queue) persist(e *entry, old, next *Envelope) error {
	p := diff(old, next)
	if p == nil {
		return nil
	}
	return q.appendRecord(e, p, next)
}

// diff is the patch that turns old into next, nil if they are the same.
func diff(old, next *Envelope) *patch {
	p := &patch{}
	empty := true
	for i, r := range next.Recipients {
		if !rcptEqual(old.Recipients[i], r) {
			if p.Rcpts == nil {
				p.Rcpts = map[int]*Recipient{}
			}
			p.Rcpts[i] = r
			empty = false
		}
	}
	if old.Held != next.Held {
		h := next.Held
		p.Held, empty = &h, false
	}
	for k, v := range next.Attrs {
		if ov, ok := old.Attrs[k]; !ok || ov != v {
			if p.Attrs == nil {
				p.Attrs = map[string]string{}
			}
			p.Attrs[k], empty = v, false
		}
	}
	for k := range old.Attrs {
		if _, ok := next.Attrs[k]; !ok {
			if p.Attrs == nil {
				p.Attrs = map[string]string{}
			}
			p.Attrs[k], empty = "", false
		}
	}
	if empty {
		return nil
	}
	return p
}

func rcptEqual(a, b *Recipient) bool {
	return a.Addr == b.Addr && a.ORcpt == b.ORcpt && slices.Equal(a.Notify, b.Notify) &&
		a.State == b.State && a.Attempts == b.Attempts &&
		a.LastAttempt.Equal(b.LastAttempt) && a.NextAttempt.Equal(b.NextAttempt) &&
		a.Status == b.Status && a.Diagnostic == b.Diagnostic && a.RemoteMTA == b.RemoteMTA &&
		a.DelayWarned == b.DelayWarned
}

// appendRecord appends one patch to e's journal and fsyncs it. When the
// journal grows long and snap (the state after the patch) is given, the
// journal is compacted into one snapshot instead. e.wmu must be held.
func (q *Queue) appendRecord(e *entry, p *patch, snap *Envelope) error {
	if snap != nil && e.nrec+1 >= compactAfter {
		return q.compact(e, snap)
	}
	rec, err := encodeRecord(kindPatch, p)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	f, err := os.OpenFile(q.envPath(e.env.ID), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	_, err = f.Write(rec)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("queue: journal %s: %w", e.env.ID, err)
	}
	e.nrec++
	return nil
}

// compact replaces e's journal by a single snapshot of snap: temp file,
// fsync, rename over the journal, fsync the directory.
func (q *Queue) compact(e *entry, snap *Envelope) error {
	data, err := encodeJournal(snap)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	tmp := filepath.Join(q.tmpDir, snap.ID+".env.compact")
	if err := writeFileSync(tmp, data); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("queue: %w", err)
	}
	if err := os.Rename(tmp, q.envPath(snap.ID)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("queue: %w", err)
	}
	if err := q.syncer.sync(); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	e.nrec = 1
	return nil
}

// remove deletes a message's files (journal first, so that a crash in
// between leaves an orphan body, which recovery discards) and makes the
// removal durable. e.wmu must be held.
func (q *Queue) remove(e *entry) error {
	id := e.env.ID
	q.mu.Lock()
	e.gone = true
	e.leased = false
	q.schedule(e)
	if q.msgs[id] == e {
		delete(q.msgs, id)
	}
	q.mu.Unlock()
	if err := os.Remove(q.envPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("queue: %w", err)
	}
	if err := os.Remove(q.bodyPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		q.log.Warn("removing message body", "queue_id", id, "err", err)
	}
	if err := q.syncer.sync(); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// writeFileSync creates name (which must not exist), writes data and fsyncs.
func writeFileSync(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// schedHeap orders leasable entries by due time, then age, then ID.
type schedHeap []*entry

func (h schedHeap) Len() int { return len(h) }
func (h schedHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if !a.due.Equal(b.due) {
		return a.due.Before(b.due)
	}
	if !a.env.Received.Equal(b.env.Received) {
		return a.env.Received.Before(b.env.Received)
	}
	return a.env.ID < b.env.ID
}
func (h schedHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx = i
	h[j].hidx = j
}
func (h *schedHeap) Push(x any) {
	e := x.(*entry)
	e.hidx = len(*h)
	*h = append(*h, e)
}
func (h *schedHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.hidx = -1
	return e
}
