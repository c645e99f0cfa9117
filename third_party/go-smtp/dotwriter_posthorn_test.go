package smtp

// Tests of Posthorn's client dot writer (third_party/go-smtp/POSTHORN.md):
// against a byte-at-a-time reference and net/textproto's DotWriter, over
// every split of the message into writes, through small and large
// buffers, and with a connection that fails part way.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/textproto"
	"strings"
	"testing"
)

// refDot is the reference: byte by byte, a "." at the start of a line is
// doubled, a LF not right after a CR gets one, and the end line follows
// (after a CRLF unless the message ends with a LF).
func refDot(in []byte) []byte {
	var out []byte
	begin := true
	for i, c := range in {
		if begin && c == '.' {
			out = append(out, '.')
		}
		begin = false
		if c == '\n' {
			if i == 0 || in[i-1] != '\r' {
				out = append(out, '\r')
			}
			begin = true
		}
		out = append(out, c)
	}
	switch {
	case len(in) > 0 && in[len(in)-1] == '\n':
	case len(in) > 0 && in[len(in)-1] == '\r':
		out = append(out, '\n')
	default:
		out = append(out, "\r\n"...)
	}
	return append(out, ".\r\n"...)
}

// textprotoAgrees: no LF after two CRs, and no two CRs at the end.
func textprotoAgrees(in []byte) bool {
	return !bytes.Contains(in, []byte("\r\r\n")) && !bytes.HasSuffix(in, []byte("\r\r"))
}

func textprotoDot(in []byte) []byte {
	var buf bytes.Buffer
	w := textproto.NewWriter(bufio.NewWriter(&buf))
	dw := w.DotWriter()
	dw.Write(in)
	dw.Close()
	return buf.Bytes()
}

func dotWrite(t testing.TB, in []byte, chunk, bufSize int) []byte {
	t.Helper()
	var buf bytes.Buffer
	d := newDotWriter(bufio.NewWriterSize(&buf, bufSize))
	for rest := in; len(rest) > 0; {
		k := chunk
		if k > len(rest) {
			k = len(rest)
		}
		if n, err := d.Write(rest[:k]); n != k || err != nil {
			t.Fatalf("Write: %d of %d, %v", n, k, err)
		}
		rest = rest[k:]
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var dotCases = []string{
	"",
	".",
	"..",
	".\r\n",
	".\n",
	"\n.",
	"a\r\n.b\r\n..c\r\n.\r\n",
	"a\n.b\n..c\n.\n",
	"a\r.b\r\n",
	"a\r\r\n.x\r\n",
	"a\r",
	"a\r\n",
	"\r\n\r\n.\r\n.",
	"line\r\n.\rX\r\n",
	"x.\r\n.x.\r\n",
}

// TestDotWriterChunks: every case, written in pieces of every size,
// through a 16-byte and a 4 KiB buffer, gives the reference's bytes, and
// textproto's where the two agree (no LF after two CRs).
func TestDotWriterChunks(t *testing.T) {
	long := strings.Repeat("0123456789", 500)
	cases := append([]string{}, dotCases...)
	cases = append(cases, long+"\r\n."+long+"\n.\r\n", strings.Repeat(".a\r\n", 1000)+strings.Repeat("\n.", 1000))
	for _, c := range cases {
		in := []byte(c)
		want := refDot(in)
		if textprotoAgrees(in) {
			if tp := textprotoDot(in); !bytes.Equal(tp, want) {
				t.Fatalf("%q: reference %q, textproto %q", c, want, tp)
			}
		}
		for _, bufSize := range []int{16, 4096} {
			for chunk := 1; chunk <= len(in)+1; chunk++ {
				if chunk > 70 && chunk < len(in) && chunk%97 != 0 {
					continue // enough of the long ones
				}
				if got := dotWrite(t, in, chunk, bufSize); !bytes.Equal(got, want) {
					t.Fatalf("%q in pieces of %d, buffer %d:\n got  %q\n want %q", c, chunk, bufSize, got, want)
				}
			}
		}
	}
}

// TestDotWriterRandom: random messages rich in dots, CRs and LFs, with
// dots at every place of a write's boundary.
func TestDotWriterRandom(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	alphabet := []byte("..\r\n\naX")
	for i := 0; i < 20000; i++ {
		in := make([]byte, rnd.Intn(50))
		for j := range in {
			in[j] = alphabet[rnd.Intn(len(alphabet))]
		}
		want := refDot(in)
		if textprotoAgrees(in) {
			if tp := textprotoDot(in); !bytes.Equal(tp, want) {
				t.Fatalf("%q: reference %q, textproto %q", in, want, tp)
			}
		}
		chunk, bufSize := 1+rnd.Intn(9), []int{16, 4096}[rnd.Intn(2)]
		if got := dotWrite(t, in, chunk, bufSize); !bytes.Equal(got, want) {
			t.Fatalf("%q in pieces of %d, buffer %d:\n got  %q\n want %q", in, chunk, bufSize, got, want)
		}
	}
}

// failingConn takes limit bytes, then fails: part of a write, then errors.
type failingConn struct {
	got   bytes.Buffer
	limit int
}

var errConnFailed = errors.New("connection failed")

func (f *failingConn) Write(p []byte) (int, error) {
	room := f.limit - f.got.Len()
	if len(p) <= room {
		return f.got.Write(p)
	}
	f.got.Write(p[:room])
	return room, errConnFailed
}

// TestDotWriterFailingConn: when the connection fails part way, Write or
// Close reports it, the count never exceeds what was given, and what
// reached the connection is the start of the right bytes.
func TestDotWriterFailingConn(t *testing.T) {
	in := []byte(strings.Repeat("a line\r\n.dot\nbare\r\n", 700))
	want := refDot(in)
	for _, limit := range []int{0, 1, 15, 16, 17, 4095, 4096, 4097, 9000, len(want) - 1} {
		for _, chunk := range []int{7, 4096, len(in)} {
			fc := &failingConn{limit: limit}
			d := newDotWriter(bufio.NewWriterSize(fc, 4096))
			var err error
			for rest := in; len(rest) > 0 && err == nil; {
				k := chunk
				if k > len(rest) {
					k = len(rest)
				}
				var n int
				n, err = d.Write(rest[:k])
				if n > k || (err == nil && n != k) {
					t.Fatalf("limit %d chunk %d: Write %d of %d, %v", limit, chunk, n, k, err)
				}
				rest = rest[k:]
			}
			if err == nil {
				err = d.Close()
			}
			where := fmt.Sprintf("limit %d chunk %d", limit, chunk)
			if !errors.Is(err, errConnFailed) {
				t.Fatalf("%s: error %v", where, err)
			}
			if !bytes.HasPrefix(want, fc.got.Bytes()) {
				t.Fatalf("%s: the connection got bytes that are not the start of the data", where)
			}
		}
	}
}

func benchDotWriter(b *testing.B, size int, textprotoDW bool) {
	msg := benchMessage(size)
	msg = bytes.ReplaceAll(msg[:len(msg)-3], []byte("\r\n.."), []byte("\r\n.")) // unstuffed, no end line
	bw := bufio.NewWriterSize(discard{}, 4096)                                  // as textproto's Conn
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var w io.WriteCloser
		if textprotoDW {
			w = textproto.NewWriter(bw).DotWriter()
		} else {
			w = newDotWriter(bw)
		}
		if _, err := io.CopyBuffer(w, bytes.NewReader(msg), buf); err != nil {
			b.Fatal(err)
		}
		w.Close()
	}
}

func BenchmarkDotWriter10KB(b *testing.B)          { benchDotWriter(b, 10<<10, false) }
func BenchmarkDotWriter1MB(b *testing.B)           { benchDotWriter(b, 1<<20, false) }
func BenchmarkTextprotoDotWriter10KB(b *testing.B) { benchDotWriter(b, 10<<10, true) }
func BenchmarkTextprotoDotWriter1MB(b *testing.B)  { benchDotWriter(b, 1<<20, true) }
