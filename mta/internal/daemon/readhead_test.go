package daemon

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestReadHead: readHead splits a message where header.Rewrite does, so
// that stripping the head alone and appending the rest gives what
// stripping the whole message gives (accept's streaming path for mail
// no inbound plugin wants); a header longer than maxHead is left to the
// spooling path, nothing lost.
func TestReadHead(t *testing.T) {
	long := "X-Long: " + strings.Repeat("a", maxHead) + "\r\n"
	folded := "X-Folded: " + strings.Repeat("b ", 400) + "\r\n" + strings.Repeat(" c\r\n", 20000)
	for _, c := range []struct {
		msg      string
		complete bool // the head fits maxHead
	}{
		{"", true},
		{"\r\n", true},
		{"\n", true},
		{"\r\nbody\r\n", true},
		{"Subject: x\r\n", true},
		{"Subject: x", true},
		{"Authentication-Results: mx.example.test; spf=pass\r\nSubject: x\r\n", true},
		{"Subject: x\r\nAuthentication-Results: mx.example.test;\r\n dkim=pass\r\n\r\nbody\r\nAuthentication-Results: mx.example.test; body\r\n", true},
		{"Subject: x\nAuthentication-Results: mx.example.test; bare LF\n\nbody\n", true},
		{"Subject: x\r\n \r\nAuthentication-Results: mx.example.test; x\r\n\r\n\r\n\r\n", true},
		{"Authentication-Results: mx.example.test; x\r\n" + long + "\r\nbody", false},
		{"Authentication-Results: mx.example.test; x\r\n" + folded + "\r\nbody", false},
		{"Authentication-Results: other.test; x\r\n" + strings.Repeat("X-Many: 1234567890\r\n", 4000) + "\r\nbody", false},
		{"Authentication-Results: mx.example.test; x\r\n" + strings.Repeat("X-Some: 1234567890\r\n", 3000) + "\r\nbody", true},
	} {
		msg := c.msg
		want := new(bytes.Buffer)
		if err := copyStrippingAuthRes(want, strings.NewReader(msg), "mx.example.test"); err != nil {
			t.Fatal(err)
		}
		// One byte at a time too: the reader's reads do not matter.
		for _, r := range []io.Reader{strings.NewReader(msg), &oneByte{s: msg}} {
			br := bufio.NewReaderSize(r, maxHead)
			head, complete, err := readHead(br)
			if err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(br)
			if string(head)+string(rest) != msg {
				t.Fatalf("%.40q: head and rest are not the message", msg)
			}
			if complete != c.complete {
				t.Fatalf("%.40q: complete %v with %d bytes of head", msg, complete, len(head))
			}
			if !complete {
				continue
			}
			got := new(bytes.Buffer)
			if err := copyStrippingAuthRes(got, bytes.NewReader(head), "mx.example.test"); err != nil {
				t.Fatal(err)
			}
			got.Write(rest)
			if got.String() != want.String() {
				t.Fatalf("%.40q: stripped head + rest\n%q\nwant\n%q", msg, got, want)
			}
		}
	}
}

type oneByte struct{ s string }

func (o *oneByte) Read(p []byte) (int, error) {
	if o.s == "" {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = o.s[0]
	o.s = o.s[1:]
	return 1, nil
}
