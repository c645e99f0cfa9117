package milter

import (
	"bufio"
	"bytes"
	"io"
	"strings"
)

// field is one header field as it stands in the message: its name and
// the raw bytes from the name to the final CRLF, folding included.
type field struct {
	name string
	raw  string
}

// value is what a milter is shown: the text after the colon without
// leading white space, folded lines joined by "\n" (as Postfix sends them).
func (f field) value() string {
	v := f.raw[len(f.name)+1:]
	v = strings.TrimRight(v, "\r\n")
	v = strings.TrimLeft(v, " \t")
	return strings.ReplaceAll(v, "\r\n", "\n")
}

// readHeader reads the header section of a message. It stops at the empty
// line (consumed and reported in sep) or at the first line that is not a
// field; that line is left in r as the start of the body.
func readHeader(r *bufio.Reader) (fields []field, sep string, err error) {
	for {
		line, err := peekLine(r)
		if err != nil && line == "" {
			if err == io.EOF {
				return fields, "", nil
			}
			return nil, "", err
		}
		if line == "\r\n" || line == "\n" {
			r.Discard(len(line))
			return fields, line, nil
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			r.Discard(len(line))
			fields[len(fields)-1].raw += line
			continue
		}
		name, _, ok := strings.Cut(line, ":")
		if !ok || !validName(name) {
			return fields, "", nil // the body starts here
		}
		r.Discard(len(line))
		fields = append(fields, field{name: name, raw: line})
	}
}

// peekLine returns the next line of r (with its line end) without
// consuming it; lines longer than the buffer are returned in part, which
// never looks like a header field continuation.
func peekLine(r *bufio.Reader) (string, error) {
	for n := 1; ; n++ {
		b, err := r.Peek(n)
		if err != nil {
			return string(b), err
		}
		if b[n-1] == '\n' {
			return string(b), nil
		}
		if n == r.Size() {
			return string(b), nil
		}
	}
}

// validName is RFC 5322's field-name: printable ASCII except colon.
func validName(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// makeField builds a header field from a milter's name and value: "\n"
// becomes CRLF, and a continuation line that does not start with white
// space gets a tab, so no value can start a field of its own.
func makeField(name, value string) field {
	value = strings.ReplaceAll(value, "\r\n", "\n")
	value = strings.ReplaceAll(value, "\r", "")
	lines := strings.Split(value, "\n")
	for i := 1; i < len(lines); i++ {
		if lines[i] == "" || (lines[i][0] != ' ' && lines[i][0] != '\t') {
			lines[i] = "\t" + lines[i]
		}
	}
	value = strings.Join(lines, "\r\n")
	sep := ": "
	if value != "" && (value[0] == ' ' || value[0] == '\t') {
		sep = ":"
	}
	return field{name: name, raw: name + sep + value + "\r\n"}
}

// editor applies header modifications to a header in order, as the
// milter protocol defines them.
type editor struct {
	fields []field
}

// add appends a field (SMFIR_ADDHEADER).
func (e *editor) add(name, value string) {
	e.fields = append(e.fields, makeField(name, value))
}

// insert puts a field at position idx, 0 being the top (SMFIR_INSHEADER).
func (e *editor) insert(idx int, name, value string) {
	if idx < 0 {
		idx = 0
	}
	if idx > len(e.fields) {
		idx = len(e.fields)
	}
	e.fields = append(e.fields[:idx], append([]field{makeField(name, value)}, e.fields[idx:]...)...)
}

// change replaces the idx-th (from 1) field called name, or deletes it
// when value is empty (SMFIR_CHGHEADER). Changing a field that is not
// there adds it, as Sendmail does.
func (e *editor) change(idx int, name, value string) (deleted bool) {
	if idx < 1 {
		idx = 1
	}
	n := 0
	for i, f := range e.fields {
		if !strings.EqualFold(f.name, name) {
			continue
		}
		if n++; n != idx {
			continue
		}
		if value == "" {
			e.fields = append(e.fields[:i], e.fields[i+1:]...)
			return true
		}
		e.fields[i] = makeField(f.name, value)
		return false
	}
	if value != "" {
		e.add(name, value)
	}
	return value == ""
}

func (e *editor) writeTo(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, f := range e.fields {
		bw.WriteString(f.raw)
	}
	return bw.Flush()
}

// crlfWriter writes a milter's replacement body with CRLF line ends
// (milters commonly send bare LF, as Postfix wants them); a bare CR
// becomes CRLF too, so no smuggling sequence can reach the queue.
type crlfWriter struct {
	w         io.Writer
	pendingCR bool
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	var b bytes.Buffer
	for _, ch := range p {
		if c.pendingCR {
			c.pendingCR = false
			b.WriteString("\r\n")
			if ch == '\n' {
				continue
			}
		}
		switch ch {
		case '\r':
			c.pendingCR = true
		case '\n':
			b.WriteString("\r\n")
		default:
			b.WriteByte(ch)
		}
	}
	_, err := c.w.Write(b.Bytes())
	return len(p), err
}

// Close ends the body: a trailing CR becomes CRLF.
func (c *crlfWriter) Close() error {
	if c.pendingCR {
		c.pendingCR = false
		_, err := c.w.Write([]byte("\r\n"))
		return err
	}
	return nil
}
