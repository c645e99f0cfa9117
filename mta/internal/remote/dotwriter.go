package remote

import (
	"bufio"
	"bytes"
)

// dotWriter writes a message body in SMTP DATA form (RFC 5321 §4.5.2):
// a line that begins with "." gets another ".", a bare LF becomes CRLF,
// and Close ends the data with ".\r\n" (after a CRLF if the body did not
// end with one). It does what net/textproto's DotWriter does, but a line
// at a time (bytes.IndexByte, one bufio.Writer.Write per line) instead of
// a byte at a time: for large bodies textproto's per-byte WriteByte was
// the relay's largest CPU item (issue 19 profile). Unlike textproto it
// passes a bare CR through unchanged.
type dotWriter struct {
	w     *bufio.Writer
	state dotState
}

type dotState uint8

const (
	dotBegin     dotState = iota // nothing written yet
	dotLineStart                 // after a LF
	dotData                      // inside a line
	dotCR                        // inside a line, the last byte was CR
)

var crlf = []byte("\r\n")

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w} }

// Write stuffs b. n counts the bytes of b consumed; after an error from
// the underlying writer, what was consumed may not have reached it.
func (d *dotWriter) Write(b []byte) (n int, err error) {
	for len(b) > 0 {
		switch d.state {
		case dotBegin, dotLineStart:
			if b[0] == '.' {
				if err = d.w.WriteByte('.'); err != nil {
					return n, err
				}
			}
			d.state = dotData
		case dotCR:
			d.state = dotData
			if b[0] == '\n' {
				if err = d.w.WriteByte('\n'); err != nil {
					return n, err
				}
				b, n = b[1:], n+1
				d.state = dotLineStart
				continue
			}
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if _, err = d.w.Write(b); err != nil {
				return n, err
			}
			if b[len(b)-1] == '\r' {
				d.state = dotCR
			}
			return n + len(b), nil
		}
		if i > 0 && b[i-1] == '\r' {
			_, err = d.w.Write(b[:i+1])
		} else {
			if _, err = d.w.Write(b[:i]); err == nil {
				_, err = d.w.Write(crlf) // bare LF
			}
		}
		if err != nil {
			return n, err
		}
		b, n = b[i+1:], n+i+1
		d.state = dotLineStart
	}
	return n, nil
}

// Close ends the data and flushes.
func (d *dotWriter) Close() error {
	switch d.state {
	case dotLineStart:
	case dotCR:
		d.w.WriteByte('\n')
	default: // dotBegin (an empty body) and dotData, like textproto
		d.w.Write(crlf)
	}
	d.w.WriteString(".\r\n")
	return d.w.Flush()
}
