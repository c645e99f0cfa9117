package smtp

import (
	"bufio"
	"bytes"
)

// dotWriter writes a message in DATA form (RFC 5321 §4.5.2) for the
// client: a line that begins with "." gets another ".", a bare LF becomes
// CRLF, and Close ends the data with ".\r\n" (after a CRLF if the message
// did not end with one), then flushes.
//
// It does what net/textproto's DotWriter does, but it scans for LFs with
// bytes.IndexByte and passes on the runs between the places it changes
// in one Write each (so a large run goes to the connection without a
// copy), instead of calling bufio.Writer.WriteByte for every byte. The
// one difference: a CR right before a LF always makes the line end,
// however many CRs precede it ("a\r\r\n" is "a\r" and CRLF; textproto
// adds a CR to an even run of CRs before a LF, and ends a message that
// ends with one with CRLF instead of LF). (Posthorn's copy of
// go-smtp, third_party/go-smtp/POSTHORN.md.)
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

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w} }

// Write stuffs b. After an error from the connection, the count is of
// the bytes passed on before the failing write.
func (d *dotWriter) Write(b []byte) (int, error) {
	start := 0 // b[start:i] goes on unchanged, not written yet
	i := 0
	for i < len(b) {
		switch d.state {
		case dotBegin, dotLineStart:
			d.state = dotData
			if b[i] == '.' {
				if err := d.insert(b[start:i], '.'); err != nil {
					return start, err
				}
				start = i
			}
		case dotCR:
			d.state = dotData
			if b[i] == '\n' {
				i++
				d.state = dotLineStart
				continue
			}
		}
		// Inside a line at b[i], which is not a LF right after a CR.
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			if b[len(b)-1] == '\r' {
				d.state = dotCR
			}
			break
		}
		lf := i + j
		if j == 0 || b[lf-1] != '\r' {
			// A bare LF: CRLF.
			if err := d.insert(b[start:lf], '\r'); err != nil {
				return start, err
			}
			start = lf
		}
		i = lf + 1
		d.state = dotLineStart
	}
	if start < len(b) {
		if _, err := d.w.Write(b[start:]); err != nil {
			return start, err
		}
	}
	return len(b), nil
}

// insert writes run, then c.
func (d *dotWriter) insert(run []byte, c byte) error {
	if len(run) > 0 {
		if _, err := d.w.Write(run); err != nil {
			return err
		}
	}
	return d.w.WriteByte(c)
}

// Close ends the data and flushes.
func (d *dotWriter) Close() error {
	switch d.state {
	case dotLineStart:
	case dotCR:
		d.w.WriteByte('\n')
	default: // dotBegin (an empty message) and dotData, as textproto
		d.w.WriteString("\r\n")
	}
	d.w.WriteString(".\r\n")
	return d.w.Flush()
}
