package smtpd

import (
	"math/rand"
	"strings"
	"testing"
)

// scanDotCRRef is the byte-at-a-time scanner the fast one replaced.
func scanDotCRRef(c *timeoutConn, b []byte) {
	for _, ch := range b {
		if c.scan == scanLFDotCR && ch != '\n' {
			c.dotCR = true
		}
		switch {
		case ch == '\n':
			c.scan = scanLF
		case c.scan == scanLF && ch == '.':
			c.scan = scanLFDot
		case c.scan == scanLFDot && ch == '\r':
			c.scan = scanLFDotCR
		default:
			c.scan = scanOther
		}
	}
}

// TestScanDotCRChunks: the fast "<LF>.<CR>X" scanner agrees with the
// byte-at-a-time one on random input split at random read boundaries
// (the pattern straddling two reads included) (issue 19).
func TestScanDotCRChunks(t *testing.T) {
	rng := rand.New(rand.NewSource(19))
	pieces := []string{"\n", "\r\n", ".", "\r", "x", "abc def", ".\r\n", "\n.\rX", strings.Repeat("y", 50)}
	for iter := 0; iter < 5000; iter++ {
		var sb strings.Builder
		for k := rng.Intn(30); k > 0; k-- {
			sb.WriteString(pieces[rng.Intn(len(pieces))])
		}
		in := []byte(sb.String())
		var fast, ref timeoutConn
		for len(in) > 0 {
			n := min(1+rng.Intn(8), len(in))
			fast.scanDotCR(in[:n])
			scanDotCRRef(&ref, in[:n])
			if fast.scan != ref.scan || fast.dotCR != ref.dotCR {
				t.Fatalf("input %q: fast (scan %d dotCR %v) != ref (scan %d dotCR %v)", sb.String(), fast.scan, fast.dotCR, ref.scan, ref.dotCR)
			}
			in = in[n:]
		}
	}
	for _, c := range []struct {
		chunks []string
		want   bool
	}{
		{[]string{"a\r\n.\r\n"}, false},
		{[]string{"a\r\n.\rX"}, true},
		{[]string{"a\r\n", ".", "\r", "X"}, true},
		{[]string{"a\r\n.", "\r\n"}, false},
		{[]string{"a.\rX"}, false},
	} {
		var tc timeoutConn
		for _, ch := range c.chunks {
			tc.scanDotCR([]byte(ch))
		}
		if tc.dotCR != c.want {
			t.Errorf("%q: dotCR = %v, want %v", c.chunks, tc.dotCR, c.want)
		}
	}
}
