package smtp_test

// Posthorn's client dot writer (third_party/go-smtp/POSTHORN.md) against
// the server: messages with dots at every place around the client's 4 KiB
// buffer boundary arrive unchanged, over SMTP and over LMTP with its
// per-recipient replies.

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// dottyMessages have a line starting with "." at every offset from 4080
// to 4112 of the stream, and then lines of dots.
func dottyMessages() [][]byte {
	var msgs [][]byte
	for off := 4080; off <= 4112; off += 3 {
		var b bytes.Buffer
		b.WriteString("Subject: dots\r\n\r\n")
		for off-b.Len() > 150 {
			b.WriteString(strings.Repeat("y", 70) + "\r\n")
		}
		b.WriteString(strings.Repeat("y", off-b.Len()-2) + "\r\n")
		b.WriteString(".dot at " + strings.Repeat("z", off%7) + "\r\n")
		b.WriteString("..\r\n.\r\n...x\r\nend\r\n")
		msgs = append(msgs, b.Bytes())
	}
	return msgs
}

func TestClientDataDots(t *testing.T) {
	be, _, c, _ := replyServer(t)
	cl := smtp.NewClient(c)
	msgs := dottyMessages()
	for _, msg := range msgs {
		for _, piece := range []int{1, 7, 4096, len(msg)} {
			if err := cl.Mail("a@example.org", nil); err != nil {
				t.Fatal(err)
			}
			if err := cl.Rcpt("b@example.org", nil); err != nil {
				t.Fatal(err)
			}
			w, err := cl.Data()
			if err != nil {
				t.Fatal(err)
			}
			for rest := msg; len(rest) > 0; {
				k := piece
				if k > len(rest) {
					k = len(rest)
				}
				if _, err := w.Write(rest[:k]); err != nil {
					t.Fatal(err)
				}
				rest = rest[k:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			got := be.anonmsgs[len(be.anonmsgs)-1].Data
			if !bytes.Equal(got, msg) {
				t.Fatalf("pieces of %d: server got %q, want %q", piece, got, msg)
			}
		}
	}
	if err := cl.Quit(); err != nil {
		t.Fatal(err)
	}
}

func TestClientLMTPDataDots(t *testing.T) {
	be, _, c, _ := replyServer(t, func(s *smtp.Server) {
		s.LMTP = true
		be := s.Backend.(*backend)
		be.implementLMTPData = true
		be.lmtpStatus = []struct {
			addr string
			err  error
		}{
			{"b@example.org", nil},
			{"c@example.org", &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "over quota"}},
		}
	})
	cl := smtp.NewClientLMTP(c)
	if err := cl.Hello("localhost"); err != nil {
		t.Fatal(err)
	}
	msg := dottyMessages()[3]
	if err := cl.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"b@example.org", "c@example.org"} {
		if err := cl.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := cl.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(w, bytes.NewReader(msg))
	resp, err := w.CloseWithLMTPResponse()
	var lerr smtp.LMTPDataError
	if !errors.As(err, &lerr) || len(lerr) != 1 || lerr["c@example.org"] == nil ||
		lerr["c@example.org"].Code != 452 || lerr["c@example.org"].Message != "<c@example.org> over quota" {
		t.Fatalf("LMTP errors: %v", err)
	}
	if len(resp) != 1 || resp["b@example.org"] == nil || resp["b@example.org"].StatusText != "2.0.0 <b@example.org> OK: queued" {
		t.Fatalf("LMTP replies: %q", resp["b@example.org"].StatusText)
	}
	if len(be.messages)+len(be.anonmsgs) != 1 {
		t.Fatalf("%d messages", len(be.messages)+len(be.anonmsgs))
	}
	for _, m := range append(be.messages, be.anonmsgs...) {
		if !bytes.Equal(m.Data, msg) {
			t.Fatalf("server got %q, want %q", m.Data, msg)
		}
	}
}
