package smtpd

import (
	"bytes"
	"io"
	"math/rand"
	"strings"
	"testing"
)

// refChecked is the byte-at-a-time checkedReader the line-at-a-time one
// replaced (issue 19): the reference for what is refused, and where.
type refChecked struct {
	r       io.Reader
	maxLine int
	lineLen int
	prevCR  bool
	err     error
	n       int64
}

func (c *refChecked) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	for i := 0; i < n; i++ {
		b := p[i]
		switch {
		case c.prevCR && b != '\n':
			c.err = errBareNewline
		case b == '\n' && !c.prevCR:
			c.err = errBareNewline
		case b == '\n':
			c.lineLen = 0
		case b != '\r':
			c.lineLen++
			if c.maxLine > 0 && c.lineLen > c.maxLine {
				c.err = errLineTooLong
			}
		}
		if c.err != nil {
			return 0, c.err
		}
		c.prevCR = b == '\r'
	}
	c.n += int64(n)
	if err == io.EOF && c.prevCR {
		c.err = errBareNewline
		return 0, c.err
	}
	return n, err
}

// chunks hands out the data in reads of the given sizes (cycling).
type chunks struct {
	b     []byte
	sizes []int
	i     int
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := c.sizes[c.i%len(c.sizes)]
	c.i++
	if k > len(p) {
		k = len(p)
	}
	n := copy(p[:k], c.b)
	c.b = c.b[n:]
	return n, nil
}

type readStep struct {
	n   int
	err error
}

func steps(r io.Reader) []readStep {
	var out []readStep
	buf := make([]byte, 64)
	for {
		n, err := r.Read(buf)
		out = append(out, readStep{n, err})
		if err != nil {
			return out
		}
	}
}

func compareChecked(t *testing.T, data []byte, sizes []int, maxLine int) {
	t.Helper()
	want := steps(&refChecked{r: &chunks{b: data, sizes: sizes}, maxLine: maxLine})
	got := steps(&checkedReader{r: &chunks{b: data, sizes: sizes}, maxLine: maxLine})
	if len(got) != len(want) {
		t.Fatalf("%q in reads of %v, max %d: %d reads, want %d (%v / %v)", data, sizes, maxLine, len(got), len(want), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%q in reads of %v, max %d: read %d: got %v, want %v", data, sizes, maxLine, i, got[i], want[i])
		}
	}
}

// TestCheckedReaderTable: each case, split at every read size and with
// several line limits, is refused (or not) exactly where the per-byte
// reader refuses it.
func TestCheckedReaderTable(t *testing.T) {
	cases := []string{
		"", "a\r\n", "\r\n\r\n", "abc\r\ndef\r\n", "hi\n.\r\n", "hi\r\n.\n", "hi\r.\rmore\r\n",
		"hi\r\n\rX\r\n", "\rX", "a\r", "a\r\r\n", "a\n", "\n", "\r", "abcdef\rg\r\n", "abcdefgh\r\n",
		"abcd\r\nabcdefgh\r\n", "abcdefgh\rX", "ab\rcdefgh", strings.Repeat("x", 100) + "\r\n",
	}
	for _, c := range cases {
		for _, size := range []int{1, 2, 3, 5, 7, 64} {
			for _, max := range []int{0, 3, 5, 1000} {
				compareChecked(t, []byte(c), []int{size}, max)
			}
		}
	}
}

// TestCheckedReaderRandom: random data rich in CR and LF, random read
// boundaries.
func TestCheckedReaderRandom(t *testing.T) {
	rnd := rand.New(rand.NewSource(19))
	alphabet := []byte("\r\n\r\nabc")
	for i := 0; i < 20000; i++ {
		b := make([]byte, rnd.Intn(40))
		for j := range b {
			b[j] = alphabet[rnd.Intn(len(alphabet))]
		}
		if rnd.Intn(3) == 0 {
			b = bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r"), nil), []byte("\n"), []byte("\r\n"))
		}
		sizes := []int{1 + rnd.Intn(7), 1 + rnd.Intn(7), 1 + rnd.Intn(20)}
		compareChecked(t, b, sizes, []int{0, 2, 4, 8}[rnd.Intn(4)])
	}
}

// TestCheckedReaderLongLine: a 1 MB line passes unchanged without a cap
// and is refused with a cap, in reads of any size.
func TestCheckedReaderLongLine(t *testing.T) {
	line := []byte("Subject: x\r\n\r\n" + strings.Repeat("0123456789abcdef", 1<<16) + "\r\n")
	for _, size := range []int{1000, 4096, 32 << 10} {
		var out bytes.Buffer
		if _, err := io.Copy(&out, &checkedReader{r: &chunks{b: line, sizes: []int{size}}}); err != nil || !bytes.Equal(out.Bytes(), line) {
			t.Fatalf("1 MB line in reads of %d: %v, %d bytes", size, err, out.Len())
		}
		_, err := io.Copy(io.Discard, &checkedReader{r: &chunks{b: line, sizes: []int{size}}, maxLine: 1000})
		if err != errLineTooLong {
			t.Fatalf("1 MB line over a 1000 cap: %v", err)
		}
	}
}

func benchChecked(b *testing.B, ref bool) {
	var msg bytes.Buffer
	for msg.Len() < 100<<10 {
		msg.WriteString(strings.Repeat("QUJD", 19) + "\r\n")
	}
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(msg.Len()))
	for i := 0; i < b.N; i++ {
		var r io.Reader = &checkedReader{r: bytes.NewReader(msg.Bytes())}
		if ref {
			r = &refChecked{r: bytes.NewReader(msg.Bytes())}
		}
		for {
			if _, err := r.Read(buf); err != nil {
				break
			}
		}
	}
}

// BenchmarkCheckedReader100KB against the per-byte one it replaced.
func BenchmarkCheckedReader100KB(b *testing.B)        { benchChecked(b, false) }
func BenchmarkPerByteCheckedReader100KB(b *testing.B) { benchChecked(b, true) }
