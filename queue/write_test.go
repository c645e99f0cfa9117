package queue

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// chunkReader hands out its data in reads of the given sizes, in turn.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.data), r.sizes[r.i%len(r.sizes)])
	r.i++
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// TestEnqueueBodySizes: writeTemp gathers the body in its 128 KiB buffer
// behind the header and writes the record with it when it fits. Bodies
// that fill the buffer exactly, end one byte before or after it, leave no
// room for the record, or span several buffers, read in chunks of odd
// sizes, come back byte for byte, with a good checksum, from the running
// queue and after a reopen; the file is exactly header + body + record.
func TestEnqueueBodySizes(t *testing.T) {
	buf := 128 << 10
	room := buf - headerSize
	sizes := []int{0, 1, 2, 10 << 10, room - 400, room - 200, room - 1, room, room + 1, buf, buf + 1,
		2*buf - headerSize, 2 * buf, 3*buf + 12345}
	chunks := [][]int{{1 << 20}, {7, 4093, 1}, {buf}}
	dir := t.TempDir()
	q := open(t, dir, nil, noSlots)
	rng := rand.New(rand.NewPCG(1, 2))
	type want struct {
		body []byte
		rec  int64
	}
	wants := map[string]want{}
	for _, size := range sizes {
		for _, ch := range chunks {
			b := make([]byte, size)
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			env := &Envelope{From: "s@example.org", Recipients: []*Recipient{{Addr: "a@example.org"}}}
			id, err := q.Enqueue(env, &chunkReader{data: b, sizes: ch})
			if err != nil {
				t.Fatalf("size %d chunks %v: %v", size, ch, err)
			}
			if env.Size != int64(size) {
				t.Fatalf("size %d: Size %d", size, env.Size)
			}
			if got := body(t, q, id); got != string(b) {
				t.Fatalf("size %d chunks %v: body differs", size, ch)
			}
			if err := q.Verify(id); err != nil {
				t.Fatalf("size %d chunks %v: %v", size, ch, err)
			}
			q.mu.Lock()
			m := q.msgs[id]
			q.mu.Unlock()
			fi, err := os.Stat(filepath.Join(dir, "msg", id))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != m.validLen || m.validLen != headerSize+int64(size)+m.recBytes {
				t.Fatalf("size %d chunks %v: file %d bytes, validLen %d, record %d", size, ch, fi.Size(), m.validLen, m.recBytes)
			}
			wants[id] = want{b, m.recBytes}
		}
	}
	q.Close()
	q = open(t, dir, nil)
	if n := len(q.List()); n != len(wants) {
		t.Fatalf("%d messages after reopen, want %d", n, len(wants))
	}
	for id, w := range wants {
		if got := body(t, q, id); !bytes.Equal([]byte(got), w.body) {
			t.Fatalf("%s after reopen: body differs", id)
		}
		if err := q.Verify(id); err != nil {
			t.Fatal(err)
		}
	}
}
