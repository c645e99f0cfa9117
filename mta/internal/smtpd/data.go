package smtpd

import (
	"io"

	"github.com/emersion/go-smtp"
)

var (
	errBareNewline = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 2},
		Message: "Message contains a bare CR or LF; lines must end with CRLF"}
	errLineTooLong = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: "Message line too long"}
)

// checkedReader passes message data through and fails on what could smuggle
// a second message past a downstream server or break it: a bare LF or CR
// (the "<LF>.<CR><LF>" family of SMTP smuggling), and lines longer than the
// operator's limit, if any (RFC 5322 §2.1.1 allows 998, but real mail
// has longer lines; by default any length up to the message size is
// passed on unchanged, and no line is ever held in memory here).
type checkedReader struct {
	r       io.Reader
	maxLine int
	lineLen int
	prevCR  bool
	err     error
	n       int64
	// dotCR reports a "<CR><LF>.<CR>" not followed by <LF> seen on the
	// wire: go-smtp's DATA reader drops the dot and the CR, so it never
	// shows in what we read.
	dotCR func() bool
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	if c.dotCR != nil && c.dotCR() {
		c.err = errBareNewline
		return 0, c.err
	}
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
