// Package chunk streams message bodies as a sequence of byte chunks, the
// way every body travels in the plugin protocol. It is shared by the plugin
// side (package sdk) and the host side (sdk/hostside).
package chunk

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

const (
	// Max is the largest chunk either side accepts.
	Max = 1 << 20
	// Size is the size of the chunks we send: 256 KiB less room for the
	// protobuf framing of a chunk message, so that gRPC marshals and
	// gathers each into a 256 KiB buffer of GRPCPool, not a 512 KiB one.
	Size = 256<<10 - 64
)

// ErrTooBig is returned for a chunk larger than Max: the peer violates the
// protocol.
var ErrTooBig = fmt.Errorf("protocol violation: body chunk larger than %d bytes", Max)

// Reader turns a function returning successive chunks into an io.Reader.
// recv returns io.EOF after the last chunk. Reader is not safe for
// concurrent use.
type Reader struct {
	recv     func() ([]byte, error)
	buf      []byte
	n, limit int64
	tooLarge error
	err      error
}

// NewReader returns a Reader over recv that fails with tooLarge once more
// than limit bytes arrived (limit <= 0: no limit).
func NewReader(recv func() ([]byte, error), limit int64, tooLarge error) *Reader {
	return &Reader{recv: recv, limit: limit, tooLarge: tooLarge}
}

func (r *Reader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		r.next()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// next receives one chunk into r.buf, or sets r.err: the stream's end or
// error, a chunk over Max, or more than the limit in all.
func (r *Reader) next() {
	c, err := r.recv()
	switch {
	case err != nil:
		r.err = err
	case len(c) > Max:
		r.err = ErrTooBig
	case r.limit > 0 && r.n+int64(len(c)) > r.limit:
		r.err = r.tooLarge
	default:
		r.n += int64(len(c))
		r.buf = c
	}
}

// Err returns the error that ended the stream (io.EOF at a clean end), nil
// while it is still going.
func (r *Reader) Err() error { return r.err }

// Drain reads and discards the rest of the stream and returns the error that
// ended it, nil for a clean end.
func (r *Reader) Drain() error {
	r.buf = nil
	for r.err == nil {
		c, err := r.recv()
		if err != nil {
			r.err = err
		} else if len(c) > Max {
			r.err = ErrTooBig
		}
	}
	if r.err == io.EOF {
		return nil
	}
	return r.err
}

// SendError wraps a failure of the send function (the stream broke), as
// opposed to a failure reading the body.
type SendError struct{ Err error }

func (e *SendError) Error() string { return "sending body: " + e.Err.Error() }
func (e *SendError) Unwrap() error { return e.Err }

// bufs holds Send's chunk buffers: a fresh zeroed 256 KiB per call was the
// largest cost of a hook round trip on a 10 KB message (issue 19.4).
var bufs = sync.Pool{New: func() any { b := make([]byte, Size); return &b }}

// Send reads r to the end and passes it to send in chunks of at most Size
// bytes. It fails with tooLarge once more than limit bytes were read
// (limit <= 0: no limit). The chunk passed to send is reused afterwards:
// send must be done with it when it returns (gRPC's SendMsg is).
func Send(r io.Reader, limit int64, tooLarge error, send func([]byte) error) (int64, error) {
	switch r.(type) {
	case *bytes.Reader, *bytes.Buffer:
		// A body in memory (a plugin's output) is sent from its own
		// bytes: its WriteTo hands over the rest in one Write.
		sw := &sliceSender{limit: limit, tooLarge: tooLarge, send: send}
		_, err := r.(io.WriterTo).WriteTo(sw)
		if err != nil && sw.err == nil {
			err = fmt.Errorf("reading body: %w", err)
		}
		return sw.total, err
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			total += int64(n)
			if limit > 0 && total > limit {
				return total, tooLarge
			}
			if serr := send(buf[:n]); serr != nil {
				return total, &SendError{serr}
			}
		}
		switch {
		case err == nil:
		case err == io.EOF:
			return total, nil
		default:
			return total, fmt.Errorf("reading body: %w", err)
		}
	}
}

// sliceSender passes what is written to it to send in chunks of at most
// Size bytes, without copying.
type sliceSender struct {
	total    int64
	limit    int64
	tooLarge error
	send     func([]byte) error
	err      error // the error Write returned, as Send returns it
}

func (w *sliceSender) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), Size)
		w.total += int64(k)
		if w.limit > 0 && w.total > w.limit {
			w.err = w.tooLarge
			return n, w.err
		}
		if err := w.send(p[:k]); err != nil {
			w.err = &SendError{err}
			return n, w.err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// WriteTo writes the rest of the stream to w, each chunk as it arrives
// (no copy), and returns the error that ended the stream, nil for a clean
// end. A failure of w is returned as it is.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.buf) > 0 {
			n, err := w.Write(r.buf)
			total += int64(n)
			r.buf = r.buf[n:]
			if err != nil {
				return total, err
			}
			if len(r.buf) > 0 {
				return total, io.ErrShortWrite
			}
		}
		if r.err != nil {
			if r.err == io.EOF {
				return total, nil
			}
			return total, r.err
		}
		r.next()
	}
}
