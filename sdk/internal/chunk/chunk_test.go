package chunk

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

var errTooLarge = errors.New("too large")

func TestSendAndRead(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), Size/10*3+7)
	var chunks [][]byte
	n, err := Send(bytes.NewReader(data), 0, errTooLarge, func(b []byte) error {
		if len(b) > Size {
			t.Fatalf("chunk of %d", len(b))
		}
		chunks = append(chunks, append([]byte(nil), b...))
		return nil
	})
	if err != nil || n != int64(len(data)) {
		t.Fatalf("Send: %d %v", n, err)
	}
	i := 0
	r := NewReader(func() ([]byte, error) {
		if i == len(chunks) {
			return nil, io.EOF
		}
		i++
		return chunks[i-1], nil
	}, int64(len(data)), errTooLarge)
	got, err := io.ReadAll(iotest.OneByteReader(r))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll: %d bytes, %v", len(got), err)
	}
}

func TestLimits(t *testing.T) {
	_, err := Send(strings.NewReader("abcdef"), 5, errTooLarge, func([]byte) error { return nil })
	if err != errTooLarge {
		t.Fatalf("Send over limit: %v", err)
	}
	r := NewReader(func() ([]byte, error) { return []byte("abcdef"), nil }, 5, errTooLarge)
	if _, err := io.ReadAll(r); err != errTooLarge {
		t.Fatalf("Read over limit: %v", err)
	}
	r = NewReader(func() ([]byte, error) { return make([]byte, Max+1), nil }, 0, errTooLarge)
	if _, err := r.Read(make([]byte, 10)); err != ErrTooBig {
		t.Fatalf("oversized chunk: %v", err)
	}
}

func TestSendErrors(t *testing.T) {
	boom := errors.New("boom")
	_, err := Send(strings.NewReader("x"), 0, errTooLarge, func([]byte) error { return boom })
	var se *SendError
	if !errors.As(err, &se) || !errors.Is(err, boom) {
		t.Fatalf("send failure: %v", err)
	}
	_, err = Send(iotest.ErrReader(boom), 0, errTooLarge, func([]byte) error { return nil })
	if errors.As(err, &se) || !errors.Is(err, boom) {
		t.Fatalf("read failure: %v", err)
	}
}

func TestDrain(t *testing.T) {
	n := 0
	r := NewReader(func() ([]byte, error) {
		if n == 3 {
			return nil, io.EOF
		}
		n++
		return []byte("abc"), nil
	}, 0, errTooLarge)
	r.Read(make([]byte, 1))
	if err := r.Drain(); err != nil || n != 3 {
		t.Fatalf("Drain: %v after %d chunks", err, n)
	}
}

// readers is each kind of body Send takes: in memory (sent from its own
// bytes) and streamed (copied through the pooled buffer).
func readers(data []byte) map[string]io.Reader {
	return map[string]io.Reader{
		"bytes.Reader": bytes.NewReader(data),
		"bytes.Buffer": bytes.NewBuffer(append([]byte(nil), data...)),
		"stream":       iotest.HalfReader(bytes.NewReader(data)),
	}
}

// TestSendBoundaries: bodies around multiples of Size arrive whole, in
// chunks of at most Size, from memory and from a stream alike; the limit
// holds at the byte.
func TestSendBoundaries(t *testing.T) {
	for _, size := range []int{0, 1, Size - 1, Size, Size + 1, 2 * Size, 3*Size + 5} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 7)
		}
		for name, r := range readers(data) {
			var got []byte
			n, err := Send(r, 0, errTooLarge, func(b []byte) error {
				if len(b) == 0 || len(b) > Size {
					t.Fatalf("%s %d: chunk of %d", name, size, len(b))
				}
				got = append(got, b...)
				return nil
			})
			if err != nil || n != int64(size) || !bytes.Equal(got, data) {
				t.Fatalf("%s %d: sent %d (%d bytes arrived), %v", name, size, n, len(got), err)
			}
		}
		if size <= 1 {
			continue // a limit of 0 is none
		}
		for name, r := range readers(data) {
			sent := 0
			_, err := Send(r, int64(size-1), errTooLarge, func(b []byte) error { sent += len(b); return nil })
			if err != errTooLarge || sent > size-1 {
				t.Fatalf("%s %d over the limit: %v after %d bytes sent", name, size, err, sent)
			}
		}
		for name, r := range readers(data) {
			if _, err := Send(r, int64(size), errTooLarge, func([]byte) error { return nil }); err != nil {
				t.Fatalf("%s %d at the limit: %v", name, size, err)
			}
		}
	}
	boom := errors.New("boom")
	_, err := Send(bytes.NewReader(make([]byte, 2*Size)), 0, errTooLarge, func([]byte) error { return boom })
	var se *SendError
	if !errors.As(err, &se) || !errors.Is(err, boom) {
		t.Fatalf("send failure from memory: %v", err)
	}
}

// TestReaderWriteTo: WriteTo delivers the chunks as they are, enforces
// the limit and the chunk size, and returns a writer's failure as it is.
func TestReaderWriteTo(t *testing.T) {
	chunks := [][]byte{[]byte("abc"), nil, []byte("defgh"), []byte("i")}
	src := func(extra ...[]byte) func() ([]byte, error) {
		all := append(append([][]byte{}, chunks...), extra...)
		i := 0
		return func() ([]byte, error) {
			if i == len(all) {
				return nil, io.EOF
			}
			i++
			return all[i-1], nil
		}
	}
	r := NewReader(src(), 0, errTooLarge)
	// A Read first: WriteTo goes on from there.
	p := make([]byte, 2)
	if n, err := r.Read(p); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	var w bytes.Buffer
	n, err := r.WriteTo(&w)
	if err != nil || n != 7 || w.String() != "cdefghi" || r.Err() != io.EOF {
		t.Fatalf("WriteTo: %d %q %v", n, w.String(), err)
	}
	if _, err := NewReader(src(), 8, errTooLarge).WriteTo(io.Discard); err != errTooLarge {
		t.Fatalf("over the limit: %v", err)
	}
	if _, err := NewReader(src(make([]byte, Max+1)), 0, errTooLarge).WriteTo(io.Discard); err != ErrTooBig {
		t.Fatalf("oversized chunk: %v", err)
	}
	boom := errors.New("boom")
	r = NewReader(src(), 0, errTooLarge)
	if _, err := r.WriteTo(failWriter{boom}); err != boom || r.Err() != nil {
		t.Fatalf("writer failure: %v (stream %v)", err, r.Err())
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

// TestGRPCPool: buffers of the asked length from the smallest tier that
// holds them; reused without clearing; foreign and huge buffers are not
// kept.
func TestGRPCPool(t *testing.T) {
	p := newPool()
	for _, c := range []struct{ n, cap int }{
		{1, 256}, {256, 256}, {257, 512}, {100 << 10, 128 << 10}, {Size + 64, 256 << 10},
		{Size + 65, 512 << 10}, {Max + 1024, 2 << 20}, {4 << 20, 4 << 20}, {4<<20 + 1, 4<<20 + 1},
	} {
		b := p.Get(c.n)
		if len(*b) != c.n || cap(*b) != c.cap {
			t.Errorf("Get(%d): len %d cap %d, want cap %d", c.n, len(*b), cap(*b), c.cap)
		}
		p.Put(b)
	}
	// Reuse: a buffer put back comes out again for any length of its
	// tier (sync.Pool may drop it, so try a few times).
	reused := false
	for i := 0; i < 10 && !reused; i++ {
		b := p.Get(3000)
		(*b)[0] = 'x'
		p.Put(b)
		c := p.Get(2100)
		reused = &(*c)[:1][0] == &(*b)[:1][0] && len(*c) == 2100
		p.Put(c)
	}
	if !reused {
		t.Log("no reuse seen (sync.Pool dropped the buffer)")
	}
	// A foreign buffer of another capacity is not pooled.
	odd := make([]byte, 300)
	p.Put(&odd)
	if b := p.Get(300); cap(*b) != 512 {
		t.Errorf("Get after a foreign Put: cap %d", cap(*b))
	}
}
