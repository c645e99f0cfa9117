package smtpd

import (
	"bytes"
	"io"

	"github.com/emersion/go-smtp"
)

var (
	// errBareNewline is also what our go-smtp's DATA reader reports
	// (Server.RejectBareNewlines), so the client gets the same reply
	// whichever sees it first.
	errBareNewline = smtp.ErrDataBareNewline
	errLineTooLong = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: "Message line too long"}
)

// checkedReader passes message data through and fails on what could smuggle
// a second message past a downstream server or break it: a bare LF or CR
// (the "<LF>.<CR><LF>" family of SMTP smuggling), and lines longer than the
// operator's limit, if any (RFC 5322 §2.1.1 allows 998, but real mail
// has longer lines; by default any length up to the message size is
// passed on unchanged, and no line is ever held in memory here).
//
// It sits on go-smtp's DATA reader (which leaves the CR of "<CR><LF>.<CR>X"
// in the data: our copy, third_party/go-smtp) or on a BDAT chunk stream,
// above TLS, so the checks are the same on every listener. It looks at
// whole lines (bytes.IndexByte to the next LF and CR), not byte by byte.
type checkedReader struct {
	r       io.Reader
	maxLine int
	lineLen int  // bytes of the current line so far, CRs not counted
	prevCR  bool // the last byte read was a CR
	err     error
	n       int64
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	if e := c.check(p[:n]); e != nil {
		c.err = e
		return 0, e
	}
	c.n += int64(n)
	if err == io.EOF && c.prevCR {
		c.err = errBareNewline
		return 0, c.err
	}
	return n, err
}

// check looks at the next bytes of the data; the first problem in the
// data's order is the one reported.
func (c *checkedReader) check(b []byte) error {
	for len(b) > 0 {
		lf := bytes.IndexByte(b, '\n')
		seg := b // up to the next LF, without it
		if lf >= 0 {
			seg = b[:lf]
		}
		if len(seg) > 0 {
			if c.prevCR {
				return errBareNewline // CR, then not LF
			}
			// A CR anywhere but last in seg is bare; a last CR
			// pairs with the LF or waits for the next read.
			bare := bytes.IndexByte(seg, '\r')
			if bare == len(seg)-1 {
				bare = -1
			}
			c.prevCR = seg[len(seg)-1] == '\r'
			if c.maxLine > 0 {
				// The byte at seg[over] would make the line too long.
				over := c.maxLine - c.lineLen
				l := len(seg)
				if c.prevCR {
					l--
				}
				if over < l && (bare < 0 || over < bare) {
					return errLineTooLong
				}
				c.lineLen += l
			}
			if bare >= 0 {
				return errBareNewline
			}
		}
		if lf < 0 {
			return nil
		}
		if !c.prevCR {
			return errBareNewline // LF without CR
		}
		c.prevCR = false
		c.lineLen = 0
		b = b[lf+1:]
	}
	return nil
}
