// Package bodyfile passes message bodies between host and plugin as sealed
// memory files instead of streaming them through gRPC (protocol minor 5).
//
// The host creates a unix SOCK_SEQPACKET socket pair for each plugin
// process and hands the plugin one end as an inherited file descriptor
// (named by EnvFD). A body travels as a memory file (memfd_create) that
// its writer fills and then seals against writing, growing and shrinking
// (F_SEAL_WRITE, F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_SEAL): the receiver can
// rely on its size and bytes not changing under it. The file descriptor
// goes over the socket pair (SCM_RIGHTS) with a random token; the gRPC
// message that announces the body carries the token and the size, and the
// receiver takes the file by token (Channel.Take).
//
// Nothing but the two processes can reach the channel: it has no name in
// the file system, unlike go-plugin's own socket. Each side checks what it
// receives (Check): a regular, sealed file of exactly the announced size,
// within its limit. Anything else fails the call. Linux only; elsewhere
// Pair and Open fail and both sides stream bodies in chunks as before.
package bodyfile

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// EnvFD is the environment variable through which the host tells the
// plugin the number of its inherited body channel descriptor.
const EnvFD = "POSTHORN_PLUGIN_BODY_FD"

// FileSource is a body that can hand its bytes over as a file: SendTo
// calls w.ReadFrom with an *io.LimitedReader of an *os.File positioned at
// them (the host's queue.BodyReader does). Size is the whole body's.
type FileSource interface {
	SendTo(w io.ReaderFrom) (int64, error)
	Size() int64
}

// ErrClosed is returned by Take and Send once the channel is closed or its
// peer has gone away.
var ErrClosed = errors.New("body channel closed")

// maxPending bounds the files received but not yet taken; beyond it new
// ones are closed at once (a peer that sends files nobody asks for).
const maxPending = 4096

// unclaimedAfter is how long a received file waits for its Take before it
// is closed (a call that failed after its body was sent).
const unclaimedAfter = time.Minute

// takeWait is how long Take waits for a file whose token was announced
// (the file is sent before the announcement, on a different socket).
const takeWait = 10 * time.Second

// Channel is one end of a body channel.
type Channel struct {
	conn conn

	mu      sync.Mutex
	pending map[uint64]*slot
	err     error // set when the receiver stopped
	done    chan struct{}
}

type slot struct {
	ch      chan *os.File // buffered 1
	created time.Time
	dead    bool // discarded: a file arriving under its token is closed
}

// conn is the socket: real on Linux.
type conn interface {
	send(token uint64, f *os.File) error
	recv() (token uint64, f *os.File, err error)
	close() error
}

func newChannel(c conn) *Channel {
	ch := &Channel{conn: c, pending: map[uint64]*slot{}, done: make(chan struct{})}
	go ch.receive()
	go ch.janitor()
	return ch
}

// Send passes f to the peer under a new random token and returns it. f
// stays open on our side; the caller closes it.
func (c *Channel) Send(f *os.File) (uint64, error) {
	var b [8]byte
	var token uint64
	for token == 0 {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		token = binary.LittleEndian.Uint64(b[:])
	}
	return token, c.SendAs(token, f)
}

// SendAs passes f to the peer under token (a plugin sends the outputs of
// a call under tokens derived from the call's; see OutputToken).
func (c *Channel) SendAs(token uint64, f *os.File) error {
	if err := c.conn.send(token, f); err != nil {
		return fmt.Errorf("body channel: %w", err)
	}
	return nil
}

// OutputToken is the token of output i (from 0) of the call whose body
// travelled under token: both sides know it without asking, so the host
// can discard the outputs of a call it ends early (Discard).
func OutputToken(token uint64, i int) uint64 { return token + 1 + uint64(i) }

// Discard gives up the file under token: closed if it is here, closed on
// arrival if it comes later.
func (c *Channel) Discard(token uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.pending[token]
	if s == nil {
		c.pending[token] = &slot{ch: make(chan *os.File, 1), created: time.Now(), dead: true}
		return
	}
	select {
	case f := <-s.ch:
		f.Close()
		delete(c.pending, token)
	default:
		s.dead = true
	}
}

// Take returns the file the peer sent under token, waiting for it until
// ctx is done or takeWait has passed. The caller owns the file.
func (c *Channel) Take(ctx context.Context, token uint64) (*os.File, error) {
	if token == 0 {
		return nil, errors.New("body channel: token 0")
	}
	s, err := c.slot(token)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(takeWait)
	defer t.Stop()
	select {
	case f := <-s.ch:
		c.forget(token, s)
		return f, nil
	case <-ctx.Done():
		c.drop(token, s)
		return nil, ctx.Err()
	case <-t.C:
		c.drop(token, s)
		return nil, fmt.Errorf("body channel: body file %016x did not arrive within %v", token, takeWait)
	case <-c.done:
		// A file may have arrived before the channel closed.
		select {
		case f := <-s.ch:
			c.forget(token, s)
			return f, nil
		default:
		}
		c.drop(token, s)
		return nil, c.closedErr()
	}
}

// Close closes the channel and every file received but not taken.
func (c *Channel) Close() error {
	err := c.conn.close()
	<-c.done
	return err
}

func (c *Channel) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil && !errors.Is(c.err, io.EOF) {
		return fmt.Errorf("%w: %v", ErrClosed, c.err)
	}
	return ErrClosed
}

// slot returns token's slot, created by whichever of receiver and taker
// comes first.
func (c *Channel) slot(token uint64) (*slot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.pending[token]
	if s == nil {
		select {
		case <-c.done:
			return nil, ErrClosed
		default:
		}
		s = &slot{ch: make(chan *os.File, 1), created: time.Now()}
		c.pending[token] = s
	}
	return s, nil
}

func (c *Channel) forget(token uint64, s *slot) {
	c.mu.Lock()
	if c.pending[token] == s {
		delete(c.pending, token)
	}
	c.mu.Unlock()
}

// drop forgets a slot whose taker gave up, closing a file that came in
// between.
func (c *Channel) drop(token uint64, s *slot) {
	c.forget(token, s)
	select {
	case f := <-s.ch:
		f.Close()
	default:
	}
}

// receive stores incoming files by token until the socket ends.
func (c *Channel) receive() {
	defer func() {
		c.mu.Lock()
		for t, s := range c.pending {
			select {
			case f := <-s.ch:
				f.Close()
			default:
			}
			delete(c.pending, t)
		}
		c.mu.Unlock()
	}()
	defer close(c.done)
	for {
		token, f, err := c.conn.recv()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		if f == nil {
			continue // a datagram without exactly one file: ignored
		}
		c.deliver(token, f)
	}
}

// deliver puts f into token's slot, or closes it: no slot can be made (too
// many pending), the slot was discarded, or it holds a file already. All
// under the lock, so a Discard either finds the file there or marks the
// slot before the file arrives.
func (c *Channel) deliver(token uint64, f *os.File) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.pending[token]
	if s == nil {
		if len(c.pending) >= maxPending {
			f.Close()
			return
		}
		s = &slot{ch: make(chan *os.File, 1), created: time.Now()}
		c.pending[token] = s
	}
	if s.dead {
		delete(c.pending, token)
		f.Close()
		return
	}
	select {
	case s.ch <- f:
	default:
		f.Close() // a second file under the same token
	}
}

// janitor closes files nobody took within unclaimedAfter.
func (c *Channel) janitor() {
	t := time.NewTicker(unclaimedAfter / 4)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case now := <-t.C:
			c.sweep(now.Add(-unclaimedAfter))
		}
	}
}

func (c *Channel) sweep(before time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, s := range c.pending {
		if !s.created.Before(before) {
			continue
		}
		select {
		case f := <-s.ch:
			f.Close()
			delete(c.pending, t)
		default:
			if s.dead {
				delete(c.pending, t)
			}
			// Else a taker waits (its own deadline ends it).
		}
	}
}

// Reader returns a reader of the size bytes of f from its start, whatever
// its file offset (which the two processes share).
func Reader(f *os.File, size int64) *io.SectionReader {
	return io.NewSectionReader(f, 0, size)
}
