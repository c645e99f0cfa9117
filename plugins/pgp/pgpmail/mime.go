package pgpmail

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"strings"
)

// MaxHeaderBytes bounds the header section of a message or MIME part.
const MaxHeaderBytes = 1 << 20

// field is one header field as it was written, folded lines included.
type field struct {
	name string // as written
	raw  string // "Name: value\r\n" with continuation lines
}

func (f field) is(name string) bool { return strings.EqualFold(f.name, name) }

// value returns the unfolded value.
func (f field) value() string {
	i := strings.IndexByte(f.raw, ':')
	v := f.raw[i+1:]
	v = strings.ReplaceAll(v, "\r\n", "")
	return strings.TrimSpace(v)
}

// toCRLF turns bare LF and bare CR into CRLF.
func toCRLF(b []byte) []byte {
	if isCRLF(b) {
		return b // the usual case: no copy
	}
	out := make([]byte, 0, len(b)+len(b)/40)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// isCRLF reports whether every CR in b is followed by LF and every LF
// preceded by CR.
func isCRLF(b []byte) bool {
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return false
			}
			i++
		case '\n':
			return false
		}
	}
	return true
}

// splitEntity splits a CRLF entity into header fields and body.
func splitEntity(b []byte) ([]field, []byte, error) {
	var fields []field
	i := 0
	for {
		if i >= len(b) {
			return fields, nil, nil // headers only
		}
		if i > MaxHeaderBytes {
			return nil, nil, errors.New("header section too large")
		}
		end := bytes.Index(b[i:], []byte("\r\n"))
		var line []byte
		if end < 0 {
			line = b[i:]
			end = len(b) - i
		} else {
			line = b[i : i+end]
		}
		if len(line) == 0 { // blank line: body follows
			return fields, b[min(i+2, len(b)):], nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(fields) == 0 {
				return nil, nil, errors.New("message starts with a continuation line")
			}
			fields[len(fields)-1].raw += string(line) + "\r\n"
		} else {
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 {
				if len(fields) == 0 {
					return nil, nil, fmt.Errorf("not a header field: %.40q", line)
				}
				// A broken line: treat it as the start of the body.
				return fields, b[i:], nil
			}
			name := strings.TrimRight(string(line[:colon]), " \t")
			fields = append(fields, field{name: name, raw: string(line) + "\r\n"})
		}
		i += end + 2
	}
}

func get(fields []field, name string) string {
	for _, f := range fields {
		if f.is(name) {
			return f.value()
		}
	}
	return ""
}

func isContentField(f field) bool {
	return len(f.name) > 8 && strings.EqualFold(f.name[:8], "content-")
}

// mediaType parses a Content-Type value; a missing or broken one is
// text/plain as RFC 2045 says.
func mediaType(v string) (string, map[string]string) {
	if v == "" {
		return "text/plain", map[string]string{"charset": "us-ascii"}
	}
	t, p, err := mime.ParseMediaType(v)
	if err != nil {
		return "text/plain", map[string]string{"charset": "us-ascii"}
	}
	return t, p
}

// parts splits a multipart body by boundary and returns each part's raw
// bytes (headers and body, without the CRLF before the delimiter).
func parts(body []byte, boundary string) ([][]byte, error) {
	if boundary == "" || len(boundary) > 70 {
		return nil, errors.New("multipart without a valid boundary")
	}
	delim := []byte("--" + boundary)
	var out [][]byte
	// Find the first delimiter at the start of a line.
	pos := -1
	if bytes.HasPrefix(body, delim) {
		pos = 0
	} else if j := bytes.Index(body, append([]byte("\r\n"), delim...)); j >= 0 {
		pos = j + 2
	}
	if pos < 0 {
		return nil, errors.New("multipart boundary not found")
	}
	for {
		// pos is at "--boundary"
		rest := body[pos+len(delim):]
		if bytes.HasPrefix(rest, []byte("--")) {
			return out, nil
		}
		nl := bytes.Index(rest, []byte("\r\n"))
		if nl < 0 {
			return out, errors.New("multipart ends without a closing delimiter")
		}
		start := pos + len(delim) + nl + 2
		next := bytes.Index(body[start:], append([]byte("\r\n"), delim...))
		if next < 0 {
			out = append(out, body[start:])
			return out, errors.New("multipart ends without a closing delimiter")
		}
		out = append(out, body[start:start+next])
		pos = start + next + 2
		if len(out) > 1000 {
			return nil, errors.New("too many MIME parts")
		}
	}
}

// boundary returns a fresh MIME boundary.
func boundary() string {
	return "posthorn-pgp-" + randHex(12)
}
