package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

type EnhancedCode [3]int

// SMTPError specifies the error code, enhanced error code (if any) and
// message returned by the server.
type SMTPError struct {
	Code         int
	EnhancedCode EnhancedCode
	Message      string
}

// NoEnhancedCode is used to indicate that enhanced error code should not be
// included in response.
//
// Note that RFC 2034 requires an enhanced code to be included in all 2xx, 4xx
// and 5xx responses. This constant is exported for use by extensions, you
// should probably use EnhancedCodeNotSet instead.
var NoEnhancedCode = EnhancedCode{-1, -1, -1}

// EnhancedCodeNotSet is a nil value of EnhancedCode field in SMTPError, used
// to indicate that backend failed to provide enhanced status code. X.0.0 will
// be used (X is derived from error code).
var EnhancedCodeNotSet = EnhancedCode{0, 0, 0}

func (err *SMTPError) Error() string {
	s := fmt.Sprintf("SMTP error %03d", err.Code)
	if err.Message != "" {
		s += ": " + err.Message
	}
	return s
}

func (err *SMTPError) Temporary() bool {
	return err.Code/100 == 4
}

var ErrDataTooLarge = &SMTPError{
	Code:         552,
	EnhancedCode: EnhancedCode{5, 3, 4},
	Message:      "Maximum message size exceeded",
}

// ErrDataBareNewline is returned by the DATA reader, in place of io.EOF,
// when Server.RejectBareNewlines is set and the message contained a CR
// not followed by LF or a LF not preceded by CR ("bare" line endings,
// the material of SMTP smuggling). It comes only after the end-of-data
// line has been read, so that the server, draining the rest of the data
// after the session's Data returns, never takes message data for
// commands. The bytes themselves are passed on as they came (a bare CR
// after a line's leading dot included), so a session that checks the
// data sees them as soon as they arrive.
//
// Added in Posthorn's copy of go-smtp (third_party/go-smtp/POSTHORN.md).
var ErrDataBareNewline = &SMTPError{
	Code:         554,
	EnhancedCode: EnhancedCode{5, 5, 2},
	Message:      "Message contains a bare CR or LF; lines must end with CRLF",
}

// dataReader reads the message of a DATA command: it removes the leading
// dot of dot-stuffed lines and ends at the <CR><LF>.<CR><LF> line (RFC
// 5321 §4.5.2). Only CRLF ends a line; a bare CR or LF is passed on as
// data and, with Server.RejectBareNewlines, reported with
// ErrDataBareNewline at the end.
//
// It works on whole slices of the buffered input (bytes.IndexByte to
// the next LF, copy) rather than a byte at a time; only the first bytes
// of a line (a possible dot) and a CR at the end of a buffer are handled
// byte by byte. (Posthorn's copy of go-smtp: upstream reads every byte
// with bufio.Reader.ReadByte, and drops the CR of a line starting
// ".<CR>" not followed by <LF>.)
type dataReader struct {
	r *bufio.Reader
	// src is what r reads from; when r is empty and the caller's buffer
	// is at least r's size, the data is read from src straight into the
	// caller's buffer and unstuffed there, and what came after the end
	// line is handed back to src for r. Nil: always through r.
	src   *pushbackReader
	state int
	bare  bool // a bare CR or LF was read
	// strict reports bare with ErrDataBareNewline (RejectBareNewlines).
	strict bool

	limited bool
	n       int64 // Maximum bytes remaining
}

// States of dataReader.
const (
	stateBeginLine = iota // beginning of line; initial state; must be zero
	stateDot              // read . at beginning of line
	stateDotCR            // read .\r at beginning of line
	stateCR               // inside a line, the last byte passed on was \r
	stateData             // inside a line, the last byte passed on was not \r
	stateEOF              // reached .\r\n end marker line
)

func newDataReader(c *Conn) *dataReader {
	dr := &dataReader{
		r:      c.text.R,
		src:    c.src,
		strict: c.server.RejectBareNewlines,
	}

	if c.server.MaxMessageBytes > 0 {
		dr.limited = true
		dr.n = int64(c.server.MaxMessageBytes)
	}

	return dr
}

func (r *dataReader) Read(b []byte) (n int, err error) {
	if r.limited {
		if r.n <= 0 {
			return 0, ErrDataTooLarge
		}
		if int64(len(b)) > r.n {
			b = b[0:r.n]
		}
	}

	direct := r.src != nil
	for n < len(b) && r.state != stateEOF {
		if direct && r.state != stateDotCR && r.r.Buffered() == 0 && len(b)-n >= r.r.Size() {
			// Nothing buffered and a large read: one read(2)
			// into b, not one per bufio buffer.
			k, rerr := r.src.Read(b[n:])
			if k == 0 && rerr == nil {
				direct = false // bufio deals with readers that do this
				continue
			}
			consumed, produced := r.unstuff(b[n : n+k])
			if consumed < k {
				r.src.unread(b[n+consumed:n+k], rerr) // after the end line
				rerr = nil
			}
			n += produced
			if rerr != nil && r.state != stateEOF {
				err = rerr
				break
			}
			if rerr != nil {
				r.src.unread(nil, rerr) // for the commands
			}
			continue
		}
		if r.state == stateData {
			// Take what is buffered (at least one byte), up to
			// and including the next LF, at most what fits in b.
			if r.r.Buffered() == 0 {
				if _, err = r.r.Peek(1); err != nil {
					break
				}
			}
			buf, _ := r.r.Peek(r.r.Buffered())
			if len(buf) > len(b)-n {
				buf = buf[:len(b)-n]
			}
			lf := bytes.IndexByte(buf, '\n')
			if lf >= 0 {
				buf = buf[:lf+1]
			}
			n += copy(b[n:], buf)
			r.r.Discard(len(buf))
			r.scan(buf, lf)
			continue
		}

		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			break
		}
		switch r.state {
		case stateBeginLine:
			if c == '.' {
				r.state = stateDot
				continue
			}
			r.r.UnreadByte()
			r.state = stateData
		case stateDot:
			// The leading dot is removed from every line but
			// the end marker.
			if c == '\r' {
				r.state = stateDotCR
				continue
			}
			r.r.UnreadByte()
			r.state = stateData
		case stateDotCR:
			if c == '\n' {
				r.state = stateEOF
				continue
			}
			// ".\r" and anything but \n: the \r is data.
			r.r.UnreadByte()
			b[n] = '\r'
			n++
			r.state = stateCR
		case stateCR:
			b[n] = c
			n++
			switch c {
			case '\n':
				r.state = stateBeginLine
			case '\r':
				r.bare = true
			default:
				r.bare = true
				r.state = stateData
			}
		}
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
		if r.bare && r.strict {
			err = ErrDataBareNewline
		}
	}

	if r.limited {
		r.n -= int64(n)
	}
	return
}

// unstuff does in place, on raw input buf, what Read does through r:
// it moves the message data to the front of buf and returns how many
// bytes of buf it consumed (all of them, or up to the end line) and how
// many it produced. It must not start in stateDotCR (its CR, which may
// have to be passed on, was in an earlier buffer); otherwise the output
// never overtakes the input: what it produces without consuming is the
// CR of ".<CR>X", consumed before.
func (r *dataReader) unstuff(buf []byte) (consumed, produced int) {
	i, w := 0, 0
	for i < len(buf) && r.state != stateEOF {
		switch r.state {
		case stateData:
			seg := buf[i:]
			lf := bytes.IndexByte(seg, '\n')
			if lf >= 0 {
				seg = seg[:lf+1]
			}
			r.scan(seg, lf)
			if w != i {
				copy(buf[w:], seg)
			}
			w += len(seg)
			i += len(seg)
		case stateBeginLine:
			if buf[i] == '.' {
				r.state = stateDot
				i++
				continue
			}
			r.state = stateData
		case stateDot:
			if buf[i] == '\r' {
				r.state = stateDotCR
				i++
				continue
			}
			r.state = stateData
		case stateDotCR:
			if buf[i] == '\n' {
				r.state = stateEOF
				i++
				continue
			}
			// ".\r" and anything but \n: the \r is data.
			buf[w] = '\r'
			w++
			r.state = stateCR
		case stateCR:
			c := buf[i]
			buf[w] = c
			w++
			i++
			switch c {
			case '\n':
				r.state = stateBeginLine
			case '\r':
				r.bare = true
			default:
				r.bare = true
				r.state = stateData
			}
		}
	}
	return i, w
}

// pushbackReader is what a connection's input buffer reads from: the
// network, after the bytes a DATA reader read past the end line (and
// the error that came with them), if any.
type pushbackReader struct {
	r    io.Reader
	back []byte
	err  error
}

func (p *pushbackReader) Read(b []byte) (int, error) {
	if len(p.back) > 0 {
		n := copy(b, p.back)
		p.back = p.back[n:]
		if len(p.back) == 0 {
			p.back = nil // no buffer kept for an idle session
		}
		return n, nil
	}
	if p.err != nil {
		err := p.err
		p.err = nil
		return 0, err
	}
	return p.r.Read(b)
}

// unread puts b (copied) and err in front of what is still to be read.
func (p *pushbackReader) unread(b []byte, err error) {
	if len(b) > 0 {
		p.back = append(append([]byte(nil), b...), p.back...)
	}
	if err != nil {
		p.err = err
	}
}

// pending is the number of bytes handed back.
func (p *pushbackReader) pending() int { return len(p.back) }

// scan updates the state after buf was passed on in stateData; lf is the
// index of buf's only LF, its last byte, or -1.
func (r *dataReader) scan(buf []byte, lf int) {
	end := len(buf)
	if lf >= 0 {
		end = lf
	}
	// Every CR in buf[:end] but one right before the LF or at the very
	// end (where the next read decides) is bare.
	if !r.bare {
		if cr := bytes.IndexByte(buf[:end], '\r'); cr >= 0 && cr < end-1 {
			r.bare = true
		}
	}
	switch {
	case lf > 0 && buf[lf-1] == '\r':
		r.state = stateBeginLine
	case lf >= 0:
		r.bare = true // a LF after anything but CR does not end a line
	case buf[end-1] == '\r':
		r.state = stateCR
	}
}
