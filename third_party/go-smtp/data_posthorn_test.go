package smtp

// Tests of Posthorn's DATA reader (third_party/go-smtp/POSTHORN.md):
// against a byte-at-a-time reference of RFC 5321 §4.5.2 and against
// upstream v0.26.0's reader, over every split of the input into reads.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"testing"
)

// refData is the reference: byte by byte, lines end only at CRLF, a
// leading dot is removed, ".\r\n" ends the data. It returns the message,
// the input after the end line, whether a bare CR or LF occurred, and
// whether the end line was found.
func refData(in []byte) (out, rest []byte, bare, complete bool) {
	out = []byte{}
	begin := true
	for i := 0; i < len(in); {
		if begin {
			if bytes.HasPrefix(in[i:], []byte(".\r\n")) {
				return out, in[i+3:], bare, true
			}
			begin = false
			if in[i] == '.' {
				i++
				continue
			}
		}
		c := in[i]
		i++
		out = append(out, c)
		switch {
		case c == '\r' && i < len(in) && in[i] == '\n':
			out = append(out, '\n')
			i++
			begin = true
		case c == '\r' && i < len(in):
			bare = true
		case c == '\n':
			bare = true
		}
	}
	return out, nil, bare, false
}

// upstreamDataReader is go-smtp v0.26.0's dataReader.Read, unchanged but
// for its name: the "before" of the benchmarks and, on input without a
// bare CR (where upstream drops ".\r" of ".\rX"), the behaviour ours
// must keep.
type upstreamDataReader struct {
	r     *bufio.Reader
	state int

	limited bool
	n       int64 // Maximum bytes remaining
}

func (r *upstreamDataReader) Read(b []byte) (n int, err error) {
	if r.limited {
		if r.n <= 0 {
			return 0, ErrDataTooLarge
		}
		if int64(len(b)) > r.n {
			b = b[0:r.n]
		}
	}
	const (
		stateBeginLine = iota
		stateDot
		stateDotCR
		stateCR
		stateData
		stateEOF
	)
	for n < len(b) && r.state != stateEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case stateBeginLine:
			if c == '.' {
				r.state = stateDot
				continue
			}
			if c == '\r' {
				r.state = stateCR
				break
			}
			r.state = stateData
		case stateDot:
			if c == '\r' {
				r.state = stateDotCR
				continue
			}
			r.state = stateData
		case stateDotCR:
			if c == '\n' {
				r.state = stateEOF
				continue
			}
			r.state = stateData
		case stateCR:
			if c == '\n' {
				r.state = stateBeginLine
				break
			}
			r.state = stateData
		case stateData:
			if c == '\r' {
				r.state = stateCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}
	if r.limited {
		r.n -= int64(n)
	}
	return
}

// chunkReader hands out at most k bytes a Read, as a network would.
type chunkReader struct {
	b []byte
	k int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	if len(p) > c.k {
		p = p[:c.k]
	}
	n := copy(p, c.b)
	c.b = c.b[n:]
	return n, nil
}

type readResult struct {
	out  []byte
	err  error // the error that ended reading
	rest []byte
}

// readAll reads r to its end with a caller buffer of size bufN and
// returns what came, the final error and what is left in br after it.
func readAll(r io.Reader, br *bufio.Reader, bufN int) readResult {
	var res readResult
	res.out = []byte{}
	buf := make([]byte, bufN)
	for i := 0; ; i++ {
		n, err := r.Read(buf)
		res.out = append(res.out, buf[:n]...)
		if err != nil {
			res.err = err
			break
		}
		if i > 1<<24 {
			res.err = errors.New("no progress")
			break
		}
	}
	res.rest, _ = io.ReadAll(br)
	return res
}

// newReaders returns a DATA reader on in, read in chunks, through a
// bufio.Reader of bufSize; with direct, as in a Conn, it reads straight
// into the caller's buffer when that is large and bufio is empty.
func newReaders(in []byte, chunk, bufSize int, direct bool) (*dataReader, *bufio.Reader) {
	if !direct {
		br := bufio.NewReaderSize(&chunkReader{b: in, k: chunk}, bufSize)
		return &dataReader{r: br}, br
	}
	pb := &pushbackReader{r: &chunkReader{b: in, k: chunk}}
	br := bufio.NewReaderSize(pb, bufSize)
	return &dataReader{r: br, src: pb}, br
}

// checkAgainstRef compares our reader over the given chunking, through
// bufio only and with direct reads, with the reference (with and without
// RejectBareNewlines) and, when there is no bare CR, with upstream
// (without).
func checkAgainstRef(t testing.TB, in []byte, chunk, bufSize, callerBuf int) {
	t.Helper()
	checkAgainstRefMode(t, in, chunk, bufSize, callerBuf, false)
	checkAgainstRefMode(t, in, chunk, bufSize, callerBuf, true)
}

func checkAgainstRefMode(t testing.TB, in []byte, chunk, bufSize, callerBuf int, direct bool) {
	t.Helper()
	wantOut, wantRest, wantBare, complete := refData(in)
	dr, br := newReaders(in, chunk, bufSize, direct)
	dr.strict = true
	got := readAll(dr, br, callerBuf)
	where := fmt.Sprintf("input %q, chunks of %d, bufio %d, reads of %d, direct %v", in, chunk, bufSize, callerBuf, direct)
	if !complete {
		if got.err != io.ErrUnexpectedEOF {
			t.Fatalf("%s: unterminated data: want ErrUnexpectedEOF, got %v", where, got.err)
		}
		if !bytes.HasPrefix(wantOut, got.out) {
			t.Fatalf("%s: unterminated data: read %q, not a prefix of %q", where, got.out, wantOut)
		}
		return
	}
	wantErr := error(io.EOF)
	if wantBare {
		wantErr = ErrDataBareNewline
	}
	if got.err != wantErr || !bytes.Equal(got.out, wantOut) || !bytes.Equal(got.rest, wantRest) {
		t.Fatalf("%s:\n got  %q, %v, rest %q\n want %q, %v, rest %q", where,
			got.out, got.err, got.rest, wantOut, wantErr, wantRest)
	}
	// The end is sticky.
	if n, err := dr.Read(make([]byte, 8)); n != 0 || err != wantErr {
		t.Fatalf("%s: read after the end: %d, %v", where, n, err)
	}
	// Without RejectBareNewlines: the same message, and io.EOF.
	dr, br = newReaders(in, chunk, bufSize, direct)
	got = readAll(dr, br, callerBuf)
	if got.err != io.EOF || !bytes.Equal(got.out, wantOut) || !bytes.Equal(got.rest, wantRest) {
		t.Fatalf("%s: not strict:\n got  %q, %v, rest %q\n want %q, EOF, rest %q", where,
			got.out, got.err, got.rest, wantOut, wantRest)
	}
	if hasBareCR(in[:len(in)-len(wantRest)]) {
		return // upstream drops the CR of ".\rX" and treats "\r\r\n" differently
	}
	ubr := bufio.NewReaderSize(&chunkReader{b: in, k: chunk}, bufSize)
	up := readAll(&upstreamDataReader{r: ubr}, ubr, callerBuf)
	if up.err != got.err || !bytes.Equal(up.out, got.out) || !bytes.Equal(up.rest, got.rest) {
		t.Fatalf("%s: differs from upstream:\n ours     %q, %v, rest %q\n upstream %q, %v, rest %q", where,
			got.out, got.err, got.rest, up.out, up.err, up.rest)
	}
}

// splitReader hands out its parts one per Read (as far as they fit)
// and records the size of every buffer it was asked to fill.
type splitReader struct {
	parts [][]byte
	asked []int
}

func (s *splitReader) Read(p []byte) (int, error) {
	s.asked = append(s.asked, len(p))
	if len(s.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.parts[0])
	if s.parts[0] = s.parts[0][n:]; len(s.parts[0]) == 0 {
		s.parts = s.parts[1:]
	}
	return n, nil
}

// TestDataReaderDirectBoundaries: with direct reads into the caller's
// buffer, every split of messages into two network reads (the end line,
// a CRLF, a stuffed dot, ".<CR>X" split across them), with commands after
// the end line, gives the reference's result, and the direct path was
// taken.
func TestDataReaderDirectBoundaries(t *testing.T) {
	body := strings.Repeat("line of text\r\n..stuffed\r\n", 3)
	for _, msg := range []string{
		body + ".\r\nQUIT\r\n",
		body + "..\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
		body + ".\rX\r\n.\r\nNOOP\r\n",
		body + "\r\n.\r\n",
		".\r\nQUIT\r\n",
	} {
		in := []byte(msg)
		wantOut, wantRest, wantBare, _ := refData(in)
		for i := 0; i <= len(in); i++ {
			for _, tail := range [][]byte{nil, []byte("\r\n")} {
				src := &splitReader{}
				for _, p := range [][]byte{in[:i:i], append(in[i:len(in):len(in)], tail...)} {
					if len(p) > 0 {
						src.parts = append(src.parts, p)
					}
				}
				pb := &pushbackReader{r: src}
				br := bufio.NewReaderSize(pb, 16)
				dr := &dataReader{r: br, src: pb, strict: true}
				got := readAll(dr, br, 4096)
				wantErr := error(io.EOF)
				if wantBare {
					wantErr = ErrDataBareNewline
				}
				want := append(append([]byte{}, wantRest...), tail...)
				if got.err != wantErr || !bytes.Equal(got.out, wantOut) || !bytes.Equal(got.rest, want) {
					t.Fatalf("%q split at %d:\n got  %q, %v, rest %q\n want %q, %v, rest %q", msg, i,
						got.out, got.err, got.rest, wantOut, wantErr, want)
				}
				direct := false
				for _, n := range src.asked {
					direct = direct || n > 16
				}
				if !direct {
					t.Fatalf("%q split at %d: no direct read (asked %v)", msg, i, src.asked)
				}
			}
		}
	}
}

// hasBareCR reports a CR not followed by LF in the data up to its end line.
func hasBareCR(b []byte) bool {
	for i, c := range b {
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			return true
		}
	}
	return false
}

// dataCases are messages (with their end line and what follows) that put
// dots, CRs and LFs at every place a read can split them.
var dataCases = []string{
	".\r\n",
	".\r\nQUIT\r\n",
	"a\r\n.\r\n",
	"a\r\n.\r\nMAIL FROM:<x@y>\r\n",
	"..\r\n.\r\n",
	"...\r\n..\r\n.\r\n",
	".a\r\n.b\r\n\r\n.\r\n",
	"\r\n\r\n.\r\n",
	"a.\r\n.a.\r\n.\r\n",
	"Subject: x\r\n\r\nline one\r\n.line two\r\n..\r\n.\r\n",
	// The smuggling family: none of these ends the data.
	"hi\n.\r\nMAIL FROM:<ceo@x>\r\n.\r\n",
	"hi\r\n.\nMAIL FROM:<ceo@x>\r\n.\r\n",
	"hi\n.\nX\r\n.\r\n",
	"hi\r.\rmore\r\n.\r\n",
	"hi\r.\r\nX\r\n.\r\n",
	"hi\r\n.\rX\r\nmore\r\n.\r\n",
	"hi\r\n.\r\r\n.\r\n",
	"hi\r\n.\r.\r\n.\r\n",
	".\rX\r\n.\r\n",
	".\r\r\n.\r\n",
	".\n.\r\n",
	"\n.\r\n",
	"\r.\r\n.\r\n",
	"a\r\r\n.\r\n",
	"a\rb\r\n.\r\n",
	"a\nb\r\n.\r\n",
	"Subject: a\nX: b\r\n\r\nbody\r\n.\r\n",
	// Unterminated.
	"",
	".",
	".\r",
	"a\r\n.\r",
	"a\r\n.",
	"abc",
	"abc\r",
	"abc\r\n",
	"abc\r\n..",
}

// TestDataReaderChunks: every case, through network reads of 1, 2, 3, 5
// and 7 bytes and more, bufio buffers of 16 and 4096 bytes, and caller
// buffers of 1, 2, 7 and 4096 bytes, gives the reference's message, end
// and bare-newline verdict, and leaves exactly the bytes after the end
// line unread.
func TestDataReaderChunks(t *testing.T) {
	long := "x" + strings.Repeat("0123456789", 500) + "\r\n" // longer than any buffer
	cases := append([]string{}, dataCases...)
	cases = append(cases, long+".\r\n", long+"."+long+".\r\n", "a\r\n"+long+"\r.\r\n.\r\n",
		strings.Repeat("ab\r\n.cd\r\n", 300)+".\r\n")
	for _, c := range cases {
		for _, chunk := range []int{1, 2, 3, 5, 7, 13, 64, 1 << 20} {
			for _, bufSize := range []int{16, 4096} {
				for _, callerBuf := range []int{1, 2, 7, 16, 40, 4096} {
					checkAgainstRef(t, []byte(c), chunk, bufSize, callerBuf)
				}
			}
		}
	}
}

// TestDataReaderRandom: random input over an alphabet rich in the
// interesting bytes, random chunkings.
func TestDataReaderRandom(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	alphabet := []byte(".\r\n\r\naX.")
	for i := 0; i < 20000; i++ {
		n := rnd.Intn(60)
		b := make([]byte, n)
		for j := range b {
			b[j] = alphabet[rnd.Intn(len(alphabet))]
		}
		if rnd.Intn(2) == 0 {
			b = append(b, "\r\n.\r\nNOOP\r\n"...)
		}
		checkAgainstRef(t, b, 1+rnd.Intn(9), 16, 1+rnd.Intn(40))
	}
}

// TestDataReaderLimit: with MaxMessageBytes the reader gives up exactly
// where upstream's does (a message of the limit's size or more is too
// large), for every limit around the message size and every chunking.
func TestDataReaderLimit(t *testing.T) {
	for _, c := range []string{"abc\r\n.\r\n", "a\r\n.b\r\n..\r\n.\r\n", "x\r\n" + strings.Repeat("y", 40) + "\r\n.\r\n"} {
		for limit := int64(1); limit < int64(len(c))+3; limit++ {
			for _, chunk := range []int{1, 2, 7, 100} {
				for _, callerBuf := range []int{1, 3, 16, 4096} {
					for _, direct := range []bool{false, true} {
						dr, br := newReaders([]byte(c), chunk, 16, direct)
						dr.limited, dr.n = true, limit
						got := readAll(dr, br, callerBuf)
						ubr := bufio.NewReaderSize(&chunkReader{b: []byte(c), k: chunk}, 16)
						up := readAll(&upstreamDataReader{r: ubr, limited: true, n: limit}, ubr, callerBuf)
						if got.err != up.err || !bytes.Equal(got.out, up.out) {
							t.Fatalf("%q limit %d chunks %d reads %d direct %v: ours %q %v, upstream %q %v",
								c, limit, chunk, callerBuf, direct, got.out, got.err, up.out, up.err)
						}
					}
				}
			}
		}
	}
}

// FuzzDataReader: any input, any chunking, agrees with the reference
// (and with upstream where upstream is right). Corpus in
// testdata/fuzz/FuzzDataReader.
func FuzzDataReader(f *testing.F) {
	for _, c := range dataCases {
		f.Add([]byte(c), uint8(1), uint8(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk, callerBuf uint8) {
		checkAgainstRef(t, in, 1+int(chunk%16), 16, 1+int(callerBuf%32))
		checkAgainstRef(t, in, 4096, 4096, 4096)
	})
}

// benchMessage is a message of about size bytes of 76-character lines
// (base64 bodies), every tenth line dot-stuffed.
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("Subject: benchmark\r\n\r\n")
	line := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", 3)[:76]
	for i := 0; b.Len() < size; i++ {
		if i%10 == 0 {
			b.WriteString("..")
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func benchRead(b *testing.B, size int, upstream bool) {
	msg := benchMessage(size)
	src := bytes.NewReader(msg)
	pb := &pushbackReader{r: src}
	br := bufio.NewReaderSize(nil, 4096) // net/textproto's default, as in Conn
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		src.Reset(msg)
		var r io.Reader
		if upstream {
			br.Reset(src)
			r = &upstreamDataReader{r: br}
		} else {
			// As in a Conn: direct reads into buf.
			br.Reset(pb)
			r = &dataReader{r: br, src: pb}
		}
		if _, err := io.CopyBuffer(discard{}, r, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDataReader10KB(b *testing.B)          { benchRead(b, 10<<10, false) }
func BenchmarkDataReader100KB(b *testing.B)         { benchRead(b, 100<<10, false) }
func BenchmarkDataReader1MB(b *testing.B)           { benchRead(b, 1<<20, false) }
func BenchmarkUpstreamDataReader10KB(b *testing.B)  { benchRead(b, 10<<10, true) }
func BenchmarkUpstreamDataReader100KB(b *testing.B) { benchRead(b, 100<<10, true) }
func BenchmarkUpstreamDataReader1MB(b *testing.B)   { benchRead(b, 1<<20, true) }
