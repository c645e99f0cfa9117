package header

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

func rewrite(t *testing.T, in string, f func(name, value string) (string, bool)) string {
	t.Helper()
	var out bytes.Buffer
	if err := Rewrite(strings.NewReader(in), &out, f); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestRewrite(t *testing.T) {
	in := "Received: from a\r\n\tby b\r\nSubject: [secure]\r\n quarterly figures\r\nX-Drop: me\r\n  folded too\r\nTo: x@y\r\n\r\nbody line\r\nX-Drop: not a header\r\n"
	got := rewrite(t, in, func(name, value string) (string, bool) {
		switch strings.ToLower(name) {
		case "x-drop":
			return "", false
		case "subject":
			return strings.TrimSpace(strings.TrimPrefix(value, "[secure]")), true
		}
		return value, true
	})
	want := "Received: from a\r\n\tby b\r\nSubject: quarterly figures\r\nTo: x@y\r\n\r\nbody line\r\nX-Drop: not a header\r\n"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	// Untouched fields keep their bytes, folding included.
	keep := func(_, v string) (string, bool) { return v, true }
	if got := rewrite(t, in, keep); got != in {
		t.Fatalf("identity rewrite changed the message:\n%q", got)
	}
	// No body, no blank line, LF endings: copied as they are.
	for _, s := range []string{"Subject: x\r\n", "Subject: x", "", "Subject: x\n\nbody\n", "not a header line\r\n\r\nbody"} {
		if got := rewrite(t, s, keep); got != s {
			t.Errorf("%q became %q", s, got)
		}
	}
}

// FuzzRewrite: the identity rewrite never changes a message, and nothing
// panics.
func FuzzRewrite(f *testing.F) {
	for _, s := range []string{"Subject: a\r\n b\r\n\r\nbody", "A: 1\nB: 2\n\nx", ": x\r\n\r\n", " leading fold\r\n\r\n", "\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		if err := Rewrite(bytes.NewReader(in), &out, func(_, v string) (string, bool) { return v, true }); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("identity rewrite changed %q into %q", in, out.Bytes())
		}
		out.Reset()
		Rewrite(bytes.NewReader(in), &out, func(n, v string) (string, bool) { return "x", n != "Subject" })
	})
}

// TestRewriteReuse: Rewrite's pooled buffers carry nothing from one call
// to the next, also when a call fails halfway, nor between calls at once:
// long and short messages, one after the other and from eight goroutines.
func TestRewriteReuse(t *testing.T) {
	msg := func(i int) string {
		return "Subject: [secure] n" + strconv.Itoa(i) + "\r\nX: " + strings.Repeat("v", i%300) + "\r\n\r\n" + strings.Repeat("body "+strconv.Itoa(i)+"\r\n", i*97%20000)
	}
	strip := func(name, value string) (string, bool) {
		if name == "Subject" {
			return strings.TrimPrefix(value, "[secure] "), true
		}
		return value, true
	}
	check := func(i int) error {
		in := msg(i)
		var out bytes.Buffer
		if err := Rewrite(strings.NewReader(in), &out, strip); err != nil {
			return err
		}
		if want := strings.Replace(in, "[secure] ", "", 1); out.String() != want {
			return fmt.Errorf("message %d: %d bytes out, want %d", i, out.Len(), len(want))
		}
		return nil
	}
	for i := range 60 {
		if err := check(i); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			// A failing reader and writer leave nothing behind.
			Rewrite(iotest.TimeoutReader(strings.NewReader(msg(i+1))), io.Discard, strip)
			Rewrite(strings.NewReader(msg(i+2)), failWriter{}, strip)
		}
	}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := g; i < 200; i += 8 {
				if err := check(i); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("write failed") }
