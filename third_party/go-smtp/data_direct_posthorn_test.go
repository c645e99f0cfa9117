package smtp_test

// Posthorn's direct DATA reads (third_party/go-smtp/POSTHORN.md) over a
// real server connection: a large message read straight into the
// session's buffer, with commands pipelined right after its end line.

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestDataDirectServer(t *testing.T) {
	var raw, want bytes.Buffer
	for i := 0; raw.Len() < 300<<10; i++ {
		line := strings.Repeat("x", i%97) + "\r\n"
		switch i % 7 {
		case 0:
			line = "." + line
		case 3:
			line = ".." + line
		}
		want.WriteString(line)
		if line[0] == '.' {
			raw.WriteByte('.') // stuffed
		}
		raw.WriteString(line)
	}
	be, _, c, r := replyServer(t)
	readWholeReply(t, r)
	io.WriteString(c, "EHLO localhost\r\n")
	readWholeReply(t, r)
	for round := 0; round < 3; round++ {
		io.WriteString(c, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
		for i := 0; i < 3; i++ {
			readWholeReply(t, r)
		}
		next := "NOOP\r\n"
		if round == 2 {
			next = "QUIT\r\n"
		}
		c.Write(append(raw.Bytes()[:raw.Len():raw.Len()], ".\r\n"+next...))
		if got := readWholeReply(t, r); got != "250 2.0.0 OK: queued\r\n" {
			t.Fatalf("round %d: %q", round, got)
		}
		if got := readWholeReply(t, r); !strings.HasPrefix(got, "2") {
			t.Fatalf("round %d, after the message: %q", round, got)
		}
	}
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Fatalf("after QUIT: %q %v", rest, err)
	}
	if len(be.anonmsgs) != 3 {
		t.Fatalf("%d messages", len(be.anonmsgs))
	}
	for i, m := range be.anonmsgs {
		if !bytes.Equal(m.Data, want.Bytes()) {
			t.Fatalf("message %d: %d bytes, want %d", i, len(m.Data), want.Len())
		}
	}
}
