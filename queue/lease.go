package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// maxWait bounds how long Lease sleeps without looking again, so that a
// clock step cannot strand due work.
const maxWait = 30 * time.Second

// jitterFrac is the ± fraction of random spread on retry delays.
const jitterFrac = 0.15

// Result is the outcome of one delivery attempt for one recipient.
type Result struct {
	Index      int       // index into Envelope.Recipients
	State      RcptState // Delivered, Failed, or Pending (= deferred)
	Status     string    // enhanced status, e.g. "4.4.1"
	Diagnostic string
	RemoteMTA  string
	// DelayWarned records that a delay DSN went out (it is never unset).
	DelayWarned bool
}

// dueHeap orders leasable messages by due time, then by age.
type dueHeap []*msg

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if !h[i].dueAt.Equal(h[j].dueAt) {
		return h[i].dueAt.Before(h[j].dueAt)
	}
	if !h[i].env.Received.Equal(h[j].env.Received) {
		return h[i].env.Received.Before(h[j].env.Received)
	}
	return h[i].id < h[j].id
}
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *dueHeap) Push(x any) {
	m := x.(*msg)
	m.heapIdx = len(*h)
	*h = append(*h, m)
}
func (h *dueHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	m.heapIdx = -1
	return m
}

// schedule puts m into the due heap at its earliest pending NextAttempt,
// or takes it out if it cannot be leased; q.mu must be held. It wakes
// Lease callers when m became due earlier.
func (q *Queue) schedule(m *msg) {
	var due time.Time
	ok := !m.leased && !m.deleted && !m.gone && !m.env.Held
	if ok {
		ok = false
		for _, r := range m.env.Recipients {
			if r.State == Pending && (!ok || r.NextAttempt.Before(due)) {
				due, ok = r.NextAttempt, true
			}
		}
	}
	switch {
	case !ok:
		if m.heapIdx >= 0 {
			heap.Remove(&q.due, m.heapIdx)
		}
	case m.heapIdx < 0:
		m.dueAt = due
		heap.Push(&q.due, m)
		q.signal()
	default:
		earlier := due.Before(m.dueAt)
		m.dueAt = due
		heap.Fix(&q.due, m.heapIdx)
		if earlier {
			q.signal()
		}
	}
}

// Lease waits until a message that is not held and not leased has a
// pending recipient due, marks it leased (in memory only) and returns a
// copy of its envelope. The caller must end the lease with Report or
// Release. Lease returns ctx.Err() when ctx ends and ErrClosed when the
// queue is closed.
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
		wait := maxWait
		if len(q.due) > 0 {
			m := q.due[0]
			d := m.dueAt.Sub(q.now())
			if d <= 0 {
				heap.Pop(&q.due)
				m.leased = true
				c := m.copyEnv()
				q.mu.Unlock()
				return c, nil
			}
			wait = min(wait, d)
		}
		ch := q.changed
		q.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// Backoff returns the delay after a message's attempts-th failed attempt:
// MinBackoff·2^(attempts−1), capped at MaxBackoff, then spread by ±15%
// using Jitter (0.5 gives the exact value).
func (q *Queue) Backoff(attempts int) time.Duration {
	d := q.opts.MinBackoff
	for i := 1; i < attempts && d < q.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, q.opts.MaxBackoff)
	j := q.opts.Jitter()
	if !(j >= 0 && j < 1) {
		j = 0.5
	}
	return time.Duration(float64(d) * (1 + jitterFrac*(2*j-1)))
}

// nextAttempt is now plus the backoff, but no later than the end of the
// message's lifetime (if that is still ahead), so the last attempt and the
// give-up happen on time.
func (q *Queue) nextAttempt(env *Envelope, attempts int, now time.Time) time.Time {
	next := now.Add(q.Backoff(attempts))
	if end := env.Received.Add(q.opts.MaxLifetime); end.After(now) && next.After(end) {
		next = end
	}
	return next
}

// Report records the outcome of a delivery attempt and ends the lease.
//
// Each result counts one attempt for its recipient; deferred (Pending)
// recipients get their next attempt from Backoff. Results for recipients
// that are already Delivered or Failed are ignored. The new state is
// journalled and fsynced before Report returns. When no recipient is left
// Pending, the message file is removed (and the directory fsynced). The
// lease ends even if Report fails; on a write error the new state is
// still used in memory (so nothing is delivered twice by this process)
// and will be written with the next successful update.
//
// After Delete, Report drops the results and removes the message.
func (q *Queue) Report(id string, results []Result) error {
	return q.report(id, results, true)
}

// Settle records outcomes like Report but outside a delivery lease: for
// recipients that something else (a plugin that took them over) decides
// about later. A lease a worker holds on the message stays as it is.
func (q *Queue) Settle(id string, results []Result) error {
	return q.report(id, results, false)
}

func (q *Queue) report(id string, results []Result, release bool) error {
	m, unlock, err := q.lockMsg(id)
	if err != nil {
		return err
	}
	defer unlock()
	if m.deleted {
		q.mu.Unlock()
		q.removeDeleted(m)
		return nil
	}
	if err := checkResults(m.env, results); err != nil {
		if release {
			m.leased = false
		}
		q.schedule(m)
		q.mu.Unlock()
		return fmt.Errorf("queue: report for %s: %w", id, err)
	}
	now := q.now()
	env := cloneEnvelope(m.env)
	done := true
	for _, res := range results {
		r := env.Recipients[res.Index]
		if r.State != Pending {
			continue
		}
		r.Attempts++
		r.LastAttempt = now
		r.State, r.Status, r.Diagnostic, r.RemoteMTA = res.State, res.Status, res.Diagnostic, res.RemoteMTA
		r.DelayWarned = r.DelayWarned || res.DelayWarned
		r.NextAttempt = time.Time{}
		if r.State == Pending {
			r.NextAttempt = q.nextAttempt(env, r.Attempts, now)
		}
	}
	for _, r := range env.Recipients {
		if r.State == Pending {
			done = false
		}
	}
	q.mu.Unlock()

	if done {
		err = q.removeFile(m)
	} else {
		var rec []byte
		if rec, err = encodeEnvelopeRecord(env); err == nil {
			moved := false
			if m.slot {
				// Waiting for a later attempt: not in a slot (see leaveSlot).
				if lerr := q.leaveSlot(m, rec); lerr != nil {
					q.log.Warn("queue: message stays in its slot", "queue_id", id, "err", lerr)
				} else {
					moved = true
				}
			}
			if !moved {
				err = q.appendRecord(m, rec)
			}
		}
	}
	if err != nil {
		q.log.Error("queue: could not record delivery results", "queue_id", id, "err", err)
	}

	q.mu.Lock()
	m.env = env
	if release {
		m.leased = false
	}
	if done {
		m.gone = true
		delete(q.msgs, id)
	}
	q.schedule(m)
	q.mu.Unlock()
	return err
}

func checkResults(env *Envelope, results []Result) error {
	seen := map[int]bool{}
	for _, r := range results {
		if r.Index < 0 || r.Index >= len(env.Recipients) {
			return fmt.Errorf("recipient index %d out of range", r.Index)
		}
		if seen[r.Index] {
			return fmt.Errorf("recipient index %d reported twice", r.Index)
		}
		seen[r.Index] = true
		switch r.State {
		case Pending, Delivered, Failed:
		default:
			return fmt.Errorf("recipient %d: bad state %q", r.Index, r.State)
		}
	}
	return nil
}

// Release ends a lease without results: the recipients stay as they were
// (due now, if they were due). After Delete, it removes the message.
func (q *Queue) Release(id string) {
	q.mu.Lock()
	m := q.msgs[id]
	if m == nil || m.gone || !m.leased {
		q.mu.Unlock()
		return
	}
	m.leased = false
	if m.deleted {
		q.mu.Unlock()
		q.removeDeleted(m)
		return
	}
	q.schedule(m)
	q.mu.Unlock()
}

// lockMsg is the preamble of every write to one message's file. It
// registers the write with begin (so Close waits for it), looks message id
// up, takes the message's io lock and then q.mu (in that order), and
// returns the message with both held; a message that is gone is
// ErrNotFound. The caller checks m.deleted itself (or uses lockLive),
// unlocks q.mu when it no longer needs it, and calls unlock at the end,
// which drops the io lock and ends the write.
func (q *Queue) lockMsg(id string) (m *msg, unlock func(), err error) {
	if err := q.begin(); err != nil {
		return nil, nil, err
	}
	q.mu.Lock()
	m = q.msgs[id]
	q.mu.Unlock()
	if m == nil {
		q.end()
		return nil, nil, ErrNotFound
	}
	m.io.Lock()
	q.mu.Lock()
	if m.gone {
		q.mu.Unlock()
		m.io.Unlock()
		q.end()
		return nil, nil, ErrNotFound
	}
	return m, func() { m.io.Unlock(); q.end() }, nil
}

// lockLive is lockMsg for a change that a deleted message cannot take
// either: such a message is ErrNotFound too.
func (q *Queue) lockLive(id string) (m *msg, unlock func(), err error) {
	m, unlock, err = q.lockMsg(id)
	if err == nil && m.deleted {
		q.mu.Unlock()
		unlock()
		return nil, nil, ErrNotFound
	}
	return m, unlock, err
}

// removeFile takes a finished message's file away from its name and
// fsyncs the directory, so the message cannot come back after a crash
// (a slot is marked free instead: see freeSlot).
// Unless someone is reading the body, the file is not unlinked but
// renamed to a spare name in the same directory, for Enqueue to reuse
// once that rename is durable (see takeSpare).
func (q *Queue) removeFile(m *msg) error {
	if m.slot {
		return q.freeSlot(m)
	}
	q.mu.Lock()
	m.removing = true
	reuse := m.readers == 0 && len(q.spare)+q.spareBusy < maxSpare
	if reuse {
		q.spareBusy++
	}
	q.mu.Unlock()
	spare := ""
	if reuse {
		spare = filepath.Join(q.msgDir, fmt.Sprintf("%s%d", sparePrefix, q.spareSeq.Add(1)))
		if err := rename(m.path, spare); err != nil {
			spare = ""
		}
	}
	var err error
	if spare == "" {
		if err = os.Remove(m.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("queue: %w", err)
		} else {
			err = nil
		}
	}
	if err == nil {
		if err = q.syncDir(); err != nil {
			err = fmt.Errorf("queue: syncing directory: %w", err)
		}
	}
	q.mu.Lock()
	if reuse {
		q.spareBusy--
	}
	if spare != "" && err == nil {
		q.spare = append(q.spare, spare)
	}
	q.mu.Unlock()
	return err
}

// Why the spool reuses finished files (issue 19):
// on ext4 a create allocates an inode and an unlink frees it with its
// blocks; without a journal, inode allocation also skips every inode
// freed in the last seconds, reading its inode block each time, so at a
// few hundred messages a second creating the file cost more CPU than
// writing and fsyncing it. A spare file is a finished message's file
// whose rename away from its queue ID has been fsynced: no name of a
// message refers to it any more, and no reader has it open (Body counts
// readers; a file being read is unlinked as before). Enqueue overwrites
// it from the start, cuts it to the new length, fsyncs it and renames it
// to the new ID, as it would a new file, so what a crash can leave is the
// same: a spare or half-written file under a .tmp- name, which recovery
// removes, never one under a message's name.
//
// takeSpare returns a spare file to overwrite, or "" if there is none.
func (q *Queue) takeSpare() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.spare)
	if n == 0 {
		return ""
	}
	p := q.spare[n-1]
	q.spare = q.spare[:n-1]
	return p
}

// removeDeleted drops a message whose tombstone is already on disk; the
// unlink need not be durable because recovery honours the tombstone.
func (q *Queue) removeDeleted(m *msg) {
	q.mu.Lock()
	if m.gone {
		q.mu.Unlock()
		return
	}
	m.gone = true
	m.leased = false
	delete(q.msgs, m.id)
	q.schedule(m)
	q.mu.Unlock()
	if m.slot {
		if err := q.freeSlot(m); err != nil {
			q.log.Error("queue: could not free deleted message's slot", "queue_id", m.id, "err", err)
		}
		return
	}
	if err := os.Remove(m.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		q.log.Error("queue: could not remove deleted message", "queue_id", m.id, "err", err)
	}
}
