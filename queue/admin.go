package queue

import (
	"errors"
	"time"
)

// update applies fn to a copy of a message's envelope, journals the copy
// (fsync) and then makes it current. If writing fails nothing changes.
func (q *Queue) update(id string, fn func(env *Envelope, now time.Time)) error {
	m, unlock, err := q.lockLive(id)
	if err != nil {
		return err
	}
	defer unlock()
	env := cloneEnvelope(m.env)
	fn(env, q.now())
	q.mu.Unlock()
	rec, err := encodeEnvelopeRecord(env)
	if err != nil {
		return err
	}
	if err := q.appendRecord(m, rec); err != nil {
		return err
	}
	q.mu.Lock()
	m.env = env
	q.schedule(m)
	q.mu.Unlock()
	return nil
}

// Hold puts a message on hold (persisted): Lease skips it until Unhold.
// A current lease is not affected.
func (q *Queue) Hold(id string) error {
	return q.update(id, func(env *Envelope, _ time.Time) { env.Held = true })
}

// Unhold takes a message off hold (persisted); its recipients keep their
// schedule (use Flush to make them due now).
func (q *Queue) Unhold(id string) error {
	return q.update(id, func(env *Envelope, _ time.Time) { env.Held = false })
}

// Requeue resets the attempt count of every pending recipient and makes
// it due now (persisted), so the retry schedule starts over.
func (q *Queue) Requeue(id string) error {
	return q.update(id, func(env *Envelope, now time.Time) {
		for _, r := range env.Recipients {
			if r.State == Pending {
				r.Attempts = 0
				r.NextAttempt = now
			}
		}
	})
}

// SetAttr sets an attribute in the message's Attrs (persisted).
func (q *Queue) SetAttr(id, key, value string) error {
	if key == "" {
		return errors.New("queue: empty attribute key")
	}
	return q.update(id, func(env *Envelope, _ time.Time) {
		if env.Attrs == nil {
			env.Attrs = map[string]string{}
		}
		env.Attrs[key] = value
	})
}

// Flush makes every pending recipient of message id (of every message if
// id is "") due now. Attempt counts stay. Held messages stay held. Flush
// is not persisted: it only moves a retry earlier, and after a restart the
// stored schedule applies.
func (q *Queue) Flush(id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	now := q.now()
	flush := func(m *msg) {
		env := cloneEnvelope(m.env)
		for _, r := range env.Recipients {
			if r.State == Pending && r.NextAttempt.After(now) {
				r.NextAttempt = now
			}
		}
		m.env = env
		q.schedule(m)
	}
	if id == "" {
		for _, m := range q.msgs {
			if !m.gone && !m.deleted {
				flush(m)
			}
		}
		return nil
	}
	m := q.msgs[id]
	if m == nil || m.gone || m.deleted {
		return ErrNotFound
	}
	flush(m)
	return nil
}

// Delete removes a message without a bounce. A tombstone record is
// journalled (fsync) first, so the deletion survives a crash. If the
// message is leased it stays on disk until the lease ends (Report or
// Release), and the results of that lease are dropped; Get, List and
// Stats no longer show it.
func (q *Queue) Delete(id string) error {
	m, unlock, err := q.lockLive(id)
	if err != nil {
		return err
	}
	defer unlock()
	q.mu.Unlock()
	if err := q.appendRecord(m, encodeRecord(recDeleted, nil)); err != nil {
		return err
	}
	q.mu.Lock()
	m.deleted = true
	q.schedule(m)
	leased := m.leased
	q.mu.Unlock()
	if !leased {
		q.removeDeleted(m)
	}
	q.log.Info("queue: message deleted", "queue_id", id, "leased", leased)
	return nil
}
