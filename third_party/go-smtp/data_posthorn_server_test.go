package smtp_test

// Posthorn's DATA reader over a real server connection
// (third_party/go-smtp/POSTHORN.md).

import (
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// TestDataBareNewlineServer: with RejectBareNewlines, "<CR><LF>.<CR>X"
// and a bare LF get
// ErrDataBareNewline's 554 after the end line, the session stays in sync
// (the smuggled commands were data), and nothing is accepted; the same
// when the session refuses the data without reading it (the server's
// drain never stops early).
func TestDataBareNewlineServer(t *testing.T) {
	be, s, c, scanner, _ := testServerEhlo(t, func(s *smtp.Server) { s.RejectBareNewlines = true })
	defer s.Close()
	defer c.Close()
	io.WriteString(c, "AUTH PLAIN AHVzZXJuYW1lAHBhc3N3b3Jk\r\n")
	scanner.Scan()
	if !strings.HasPrefix(scanner.Text(), "235 ") {
		t.Fatal("AUTH:", scanner.Text())
	}
	send := func(msg, wantReply string) {
		t.Helper()
		io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\nRCPT TO:<root@gchq.gov.uk>\r\nDATA\r\n")
		for _, want := range []string{"250 ", "250 ", "354 "} {
			scanner.Scan()
			if !strings.HasPrefix(scanner.Text(), want) {
				t.Fatalf("want %q, got %q", want, scanner.Text())
			}
		}
		io.WriteString(c, msg+".\r\n")
		scanner.Scan()
		if !strings.HasPrefix(scanner.Text(), wantReply) {
			t.Fatalf("%q: want %q, got %q", msg, wantReply, scanner.Text())
		}
		io.WriteString(c, "NOOP\r\n")
		scanner.Scan()
		if !strings.HasPrefix(scanner.Text(), "250 ") {
			t.Fatalf("after %q: NOOP: want 250, got %q", msg, scanner.Text())
		}
	}
	smuggle := "\r\nMAIL FROM:<ceo@example.org>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nforged\r\n"
	for _, msg := range []string{
		"Subject: a\r\n\r\nhi\r\n.\rX" + smuggle,
		"Subject: a\r\n\r\nhi\n." + smuggle,
		"Subject: a\n\r\nhi\r\n",
	} {
		send(msg, "554 5.5.2 ")
	}
	be.dataErr = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "No"}
	send("Subject: a\r\n\r\nhi\n."+smuggle, "550 5.7.1 ")
	if len(be.messages) != 0 {
		t.Fatalf("%d message(s) accepted", len(be.messages))
	}
}
