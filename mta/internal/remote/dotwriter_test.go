package remote

import (
	"bufio"
	"bytes"
	"errors"
	"math/rand"
	"net/textproto"
	"strings"
	"testing"
)

// stuffed writes body through a dotWriter in chunks of the given sizes
// (cycled), with a tiny bufio buffer so that line writes straddle it.
func stuffed(t *testing.T, body []byte, chunks []int, bufSize int) []byte {
	t.Helper()
	var out bytes.Buffer
	d := newDotWriter(bufio.NewWriterSize(&out, bufSize))
	for k := 0; len(body) > 0; k++ {
		n := min(chunks[k%len(chunks)], len(body))
		m, err := d.Write(body[:n])
		if err != nil || m != n {
			t.Fatalf("Write = %d, %v; want %d", m, err, n)
		}
		body = body[n:]
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func textprotoStuffed(body []byte) []byte {
	var out bytes.Buffer
	w := textproto.NewWriter(bufio.NewWriter(&out)).DotWriter()
	w.Write(body)
	w.Close()
	return out.Bytes()
}

// TestDotWriterCases: dot-stuffing, bare LF, the end marker, and every
// chunk boundary (a CR and its LF in different writes, a dot right after
// a boundary that follows a LF).
func TestDotWriterCases(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "\r\n.\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{"a", "a\r\n.\r\n"},
		{"a\r", "a\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{"a\r\n.b\r\n..c\r\n", "a\r\n..b\r\n...c\r\n.\r\n"},
		{"a\n.b\nc", "a\r\n..b\r\nc\r\n.\r\n"},
		{"\n\n.", "\r\n\r\n..\r\n.\r\n"},
		{"a\rb\r\n", "a\rb\r\n.\r\n"}, // bare CR passes
		{"x.\r\n.\r\n", "x.\r\n..\r\n.\r\n"},
	} {
		for size := 1; size <= len(c.in)+1; size++ {
			for _, buf := range []int{16, 4096} {
				if got := string(stuffed(t, []byte(c.in), []int{size}, buf)); got != c.want {
					t.Errorf("%q in chunks of %d: got %q, want %q", c.in, size, got, c.want)
				}
			}
		}
	}
}

// TestDotWriterMatchesTextproto: random bodies of lines with dots, CRLF
// and bare LF, written in random chunks, come out exactly as
// net/textproto's DotWriter writes them in one piece.
func TestDotWriterMatchesTextproto(t *testing.T) {
	rng := rand.New(rand.NewSource(19))
	pieces := []string{".", "..", "a", "hello world", "\r\n", "\n", ".\r\n", "\r\n.", "x\r\n.\r\n", strings.Repeat("z", 100)}
	for iter := 0; iter < 2000; iter++ {
		var b strings.Builder
		for k := rng.Intn(40); k > 0; k-- {
			b.WriteString(pieces[rng.Intn(len(pieces))])
		}
		body := []byte(b.String())
		chunks := make([]int, 1+rng.Intn(5))
		for i := range chunks {
			chunks[i] = 1 + rng.Intn(20)
		}
		got, want := stuffed(t, body, chunks, 16+rng.Intn(64)), textprotoStuffed(body)
		if !bytes.Equal(got, want) {
			t.Fatalf("body %q chunks %v:\ngot  %q\nwant %q", body, chunks, got, want)
		}
	}
}

// failAfter accepts limit bytes, then fails (a connection that broke in
// the middle of a write).
type failAfter struct {
	buf   bytes.Buffer
	limit int
}

var errBroken = errors.New("broken pipe")

func (f *failAfter) Write(p []byte) (int, error) {
	if room := f.limit - f.buf.Len(); len(p) > room {
		f.buf.Write(p[:max(room, 0)])
		return max(room, 0), errBroken
	}
	return f.buf.Write(p)
}

// TestDotWriterPartialWrite: when the connection fails part-way, Write
// reports the error and never claims more input than it took, and what
// reached the wire is a prefix of the correct stuffed form.
func TestDotWriterPartialWrite(t *testing.T) {
	body := []byte(strings.Repeat("line\r\n.dot\r\nbare\n", 200))
	want := textprotoStuffed(body)
	for _, limit := range []int{0, 1, 7, 100, 1000, 3000} {
		f := &failAfter{limit: limit}
		d := newDotWriter(bufio.NewWriterSize(f, 64))
		n, err := d.Write(body)
		if !errors.Is(err, errBroken) {
			t.Fatalf("limit %d: err = %v, want broken pipe", limit, err)
		}
		if n > len(body) {
			t.Fatalf("limit %d: n = %d > %d", limit, n, len(body))
		}
		if !bytes.HasPrefix(want, f.buf.Bytes()) {
			t.Fatalf("limit %d: wire got %q, not a prefix of the stuffed body", limit, f.buf.Bytes())
		}
		if d.Close() == nil {
			t.Fatalf("limit %d: Close after a broken write succeeded", limit)
		}
	}
}

func BenchmarkDotWriter100KB(b *testing.B) {
	body := []byte(strings.Repeat(strings.Repeat("x", 76)+"\r\n", 100<<10/78))
	w := bufio.NewWriterSize(discard{}, 64<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		d := newDotWriter(w)
		for off := 0; off < len(body); off += 32 << 10 {
			d.Write(body[off:min(off+32<<10, len(body))])
		}
		d.Close()
	}
}

func BenchmarkTextprotoDotWriter100KB(b *testing.B) {
	body := []byte(strings.Repeat(strings.Repeat("x", 76)+"\r\n", 100<<10/78))
	w := bufio.NewWriterSize(discard{}, 64<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		d := textproto.NewWriter(w).DotWriter()
		for off := 0; off < len(body); off += 32 << 10 {
			d.Write(body[off:min(off+32<<10, len(body))])
		}
		d.Close()
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
