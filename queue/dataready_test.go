package queue

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// dataReadyRef is the definition, written plainly: a line starting with
// ".", a LF without CR before it, or a body that is empty or does not end
// with CRLF needs work in SMTP DATA.
func dataReadyRef(b []byte) bool {
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		return false
	}
	for i, c := range b {
		if c == '.' && (i == 0 || b[i-1] == '\n') {
			return false
		}
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			return false
		}
	}
	return true
}

var dataReadyCases = []struct {
	body  string
	ready bool
}{
	{"", false},
	{"\r\n", true},
	{"a\r\n", true},
	{"Subject: x\r\n\r\nhello\r\nworld\r\n", true},
	{"hello\r\nworld", false},              // no CRLF at the end
	{"hello\r\nworld\r", false},            // ends in a bare CR
	{"hello\nworld\r\n", false},            // bare LF
	{"\nhello\r\n", false},                 // bare LF first
	{"hello\r\n\n", false},                 // bare LF last
	{".hello\r\n", false},                  // dot line first
	{"hello\r\n.\r\n", false},              // the end-of-data line itself
	{"hello\r\n..x\r\n", false},            // a dot line
	{"hello\r\nx.\r\n .\r\n", true},        // dots, but not at a line start
	{"a\r.b\r\n", true},                    // a bare CR is no line end
	{"a\rb\r\n", true},                     // bare CR passes through
	{"\x00\xff\r\n\xe2\x82\xac\r\n", true}, // any bytes
}

// TestDataScan checks the scanner against the plain definition for every
// way of cutting the body into two or three writes, so line starts, CRs
// and LFs fall at write boundaries.
func TestDataScan(t *testing.T) {
	check := func(t *testing.T, b []byte, parts [][]byte) {
		t.Helper()
		s := newDataScan()
		for _, p := range parts {
			s.write(p)
		}
		if got, want := s.ready(), dataReadyRef(b); got != want {
			t.Fatalf("%q in %q: ready %v, want %v", b, parts, got, want)
		}
	}
	for _, c := range dataReadyCases {
		b := []byte(c.body)
		if dataReadyRef(b) != c.ready {
			t.Fatalf("reference disagrees with the table for %q", c.body)
		}
		check(t, b, [][]byte{b})
		for i := 0; i <= len(b); i++ {
			check(t, b, [][]byte{b[:i], b[i:]})
			for j := i; j <= len(b); j++ {
				check(t, b, [][]byte{b[:i], b[i:j], b[j:]})
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab.\r\n")
	for range 20000 {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		i := r.IntN(len(b) + 1)
		check(t, b, [][]byte{b[:i], b[i:]})
	}
}

func bodyReader(t *testing.T, q *Queue, id string) *BodyReader {
	t.Helper()
	rc, err := q.Body(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc.(*BodyReader)
}

// TestDataReadyStored: Enqueue records the answer with the body; it
// survives recovery and compaction, and a file written before the flag
// existed (header byte zero) claims nothing.
func TestDataReadyStored(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	q := open(t, dir, c, func(o *Options) { o.compactMin = 4 << 10 }, noSlots)
	ids := map[string]bool{}
	for _, tc := range dataReadyCases {
		env := enqueue(t, q, tc.body, "a@x")
		if got := bodyReader(t, q, env.ID).DataReady(); got != tc.ready {
			t.Errorf("%q: DataReady %v, want %v", tc.body, got, tc.ready)
		}
		ids[env.ID] = tc.ready
	}
	// A big body through Enqueue's copy buffer (128 KiB), with a dot
	// line only in its last chunk, and the same without it.
	line := strings.Repeat("x", 998) + "\r\n"
	big := strings.Repeat(line, 300)
	for _, tc := range []struct {
		body  string
		ready bool
	}{{big, true}, {big + ".\r\n" + big, false}, {big + "x\n", false}} {
		env := enqueue(t, q, tc.body, "a@x")
		if got := bodyReader(t, q, env.ID).DataReady(); got != tc.ready {
			t.Errorf("%d-byte body: DataReady %v, want %v", len(tc.body), got, tc.ready)
		}
		ids[env.ID] = tc.ready
	}
	// Compaction rewrites the file: the flag goes with it.
	var compacted string
	for id, ready := range ids {
		if ready {
			compacted = id
			break
		}
	}
	p := filepath.Join(dir, "msg", compacted)
	before, _ := os.Stat(p)
	for i := range 300 {
		if err := q.SetAttr(compacted, "n", strings.Repeat("y", 100)+fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := os.Stat(p)
	if os.SameFile(before, after) {
		t.Fatal("the file was not rewritten")
	}
	if !bodyReader(t, q, compacted).DataReady() {
		t.Error("compaction lost the flag")
	}
	q.Close()

	q = open(t, dir, c)
	for id, ready := range ids {
		if got := bodyReader(t, q, id).DataReady(); got != ready {
			t.Errorf("%s after recovery: DataReady %v, want %v", id, got, ready)
		}
	}
	q.Close()

	// The same files as an older posthorn wrote them: flags byte zero.
	for id := range ids {
		p := filepath.Join(dir, "msg", id)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		n, crc, _, err := decodeHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		copy(b, encodeHeader(n, crc, 0))
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	q = open(t, dir, c)
	for id := range ids {
		if bodyReader(t, q, id).DataReady() {
			t.Errorf("%s: a file without the flag claims DataReady", id)
		}
		if err := q.Verify(id); err != nil {
			t.Error(err)
		}
	}
	if got := len(q.List()); got != len(ids) {
		t.Errorf("%d messages recovered, want %d", got, len(ids))
	}
}

// TestDecodeHeaderUnknownFlags: bits a newer program might set are not
// taken for ours.
func TestDecodeHeaderUnknownFlags(t *testing.T) {
	_, _, f, err := decodeHeader(encodeHeader(3, 7, 0xfe))
	if err != nil || f != 0 {
		t.Fatalf("flags %#x, %v", f, err)
	}
	_, _, f, err = decodeHeader(encodeHeader(3, 7, 0xff))
	if err != nil || f != flagDataReady {
		t.Fatalf("flags %#x, %v", f, err)
	}
}

// readFromRecorder is an io.ReaderFrom that takes its input in small
// reads, as a socket taking a little at a time would.
type readFromRecorder struct {
	bytes.Buffer
	max int
}

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	var n int64
	buf := make([]byte, r.max)
	for {
		k, err := src.Read(buf[:1+int(n)%r.max])
		r.Write(buf[:k])
		n += int64(k)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// TestSendTo: the body alone (never the journal after it), from the
// reader's offset, which then stands at the end.
func TestSendTo(t *testing.T) {
	q := open(t, t.TempDir(), newClock())
	content := strings.Repeat("line of text\r\n", 5000)
	env := enqueue(t, q, content, "a@x")
	for _, start := range []int64{0, 1, 4096, int64(len(content)) - 1, int64(len(content))} {
		br := bodyReader(t, q, env.ID)
		if _, err := br.Seek(start, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		var w readFromRecorder
		w.max = 777
		n, err := br.SendTo(&w)
		if err != nil || n != int64(len(content))-start || w.String() != content[start:] {
			t.Fatalf("from %d: %d bytes, %v; content matches: %v", start, n, err, w.String() == content[start:])
		}
		if pos, _ := br.Seek(0, io.SeekCurrent); pos != int64(len(content)) {
			t.Errorf("from %d: offset %d after SendTo", start, pos)
		}
		if k, err := br.Read(make([]byte, 1)); k != 0 || err != io.EOF {
			t.Errorf("from %d: read after SendTo: %d, %v", start, k, err)
		}
	}
}

// TestIsDataReady: the exported test agrees with the reference, read in
// one piece and byte by byte.
func TestIsDataReady(t *testing.T) {
	for _, c := range dataReadyCases {
		for _, r := range []io.Reader{strings.NewReader(c.body), iotest.OneByteReader(strings.NewReader(c.body))} {
			got, err := IsDataReady(r)
			if err != nil || got != c.ready {
				t.Fatalf("%q: %v, %v; want %v", c.body, got, err, c.ready)
			}
		}
	}
	big := strings.Repeat("a line of text\r\n", 10000)
	if ok, _ := IsDataReady(strings.NewReader(big)); !ok {
		t.Fatal("a long body in DATA form is not ready")
	}
	if ok, _ := IsDataReady(strings.NewReader(big + ".dot\r\n")); ok {
		t.Fatal("a dot at a line start past the first buffer is missed")
	}
}
