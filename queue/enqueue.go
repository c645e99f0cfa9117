package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ReadError wraps an error returned by the body reader given to Enqueue, so
// callers can tell a broken client stream from a broken spool. It unwraps
// to the reader's error.
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return "queue: reading message: " + e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// errReader remembers whether an error came from the reader.
type errReader struct {
	r   io.Reader
	err error
}

func (r *errReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// Enqueue stores a message durably and returns its ID. It uses env.ID if
// set (see NewID), else assigns one; sets env.Received if zero, env.Size,
// and makes every recipient Pending and due now (env is updated in place;
// the queue keeps its own copy). The body is streamed to disk. Enqueue
// returns only after body, envelope and their directory entries are on
// stable storage. If reading body fails, nothing is left behind and the
// error wraps the reader's error (as a *ReadError).
func (q *Queue) Enqueue(env *Envelope, body io.Reader) (id string, err error) {
	if env == nil || len(env.Recipients) == 0 {
		return "", errors.New("queue: message without recipients")
	}
	for _, r := range env.Recipients {
		if r == nil {
			return "", errors.New("queue: nil recipient")
		}
	}
	if env.ID == "" {
		env.ID = q.NewID()
	}
	id = env.ID
	if !validID(id) {
		return "", fmt.Errorf("queue: invalid message ID %q", id)
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return "", ErrClosed
	}
	if q.msgs[id] != nil || q.reserved[id] {
		q.mu.Unlock()
		return "", fmt.Errorf("queue: message ID %s already in use", id)
	}
	q.reserved[id] = true
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.reserved, id)
		q.mu.Unlock()
	}()

	tmpBody := filepath.Join(q.tmpDir, id+".body")
	tmpEnv := filepath.Join(q.tmpDir, id+".env")
	var placed []string // files renamed into msg/
	defer func() {
		if err != nil {
			os.Remove(tmpBody)
			os.Remove(tmpEnv)
			for _, p := range placed {
				os.Remove(p)
			}
		}
	}()

	// 1. Body: temp file, streamed, fsynced.
	size, err := q.writeBody(tmpBody, body)
	if err != nil {
		return "", err
	}

	// 2. Envelope journal: temp file with one snapshot, fsynced.
	now := q.now()
	if env.Received.IsZero() {
		env.Received = now
	}
	env.Size = size
	for _, r := range env.Recipients {
		*r = Recipient{Addr: r.Addr, ORcpt: r.ORcpt, Notify: r.Notify, State: Pending, NextAttempt: now}
	}
	stored := copyEnvelope(env)
	stored.Recovered = false
	data, err := encodeJournal(stored)
	if err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	if err := writeFileSync(tmpEnv, data); err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}

	// 3. Rename into place: body first, so a journal never points at a
	// missing body. 4. fsync msg/ (shared with concurrent callers).
	if err := os.Rename(tmpBody, q.bodyPath(id)); err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	placed = append(placed, q.bodyPath(id))
	if err := os.Rename(tmpEnv, q.envPath(id)); err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	placed = append(placed, q.envPath(id))
	if err := q.syncer.sync(); err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}

	e := &entry{env: stored, nrec: 1, hidx: -1}
	q.mu.Lock()
	q.msgs[id] = e
	q.schedule(e)
	q.mu.Unlock()
	return id, nil
}

// writeBody streams r into a new file and fsyncs it.
func (q *Queue) writeBody(name string, r io.Reader) (int64, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("queue: %w", err)
	}
	er := &errReader{r: r}
	buf := make([]byte, 64<<10)
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, er, buf)
	if err != nil {
		f.Close()
		if er.err != nil {
			return 0, &ReadError{Err: er.err}
		}
		return 0, fmt.Errorf("queue: writing message: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, fmt.Errorf("queue: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("queue: %w", err)
	}
	return n, nil
}
