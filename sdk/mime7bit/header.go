package mime7bit

import (
	"bytes"
	"io"
	"strings"
)

// header is the header of an entity as it was read, line by line.
type header struct {
	lines [][]byte // physical lines with their line endings
	end   []byte   // the blank line that ended it; nil at a stop or the end
}

// header reads a header up to its blank line, a line that stop accepts,
// or the end of the input.
func (c *converter) header(stop stopFunc) (*header, error) {
	h := &header{}
	for {
		ch, err := c.next()
		if err == io.EOF {
			return h, nil
		}
		if err != nil {
			return nil, err
		}
		switch {
		case !ch.start && len(h.lines) > 0: // the rest of a long line
			h.lines[len(h.lines)-1] = append(h.lines[len(h.lines)-1], ch.b...)
		case string(ch.b) == "\r\n" || string(ch.b) == "\n":
			h.end = ch.b
			return h, nil
		case c.stops(ch, stop):
			return h, nil
		default:
			h.lines = append(h.lines, ch.b)
		}
	}
}

// fields calls fn with the name (lower case) and the line range of each
// field; folded fields span several lines.
func (h *header) fields(fn func(name string, from, to int)) {
	for i := 0; i < len(h.lines); {
		j := i + 1
		for j < len(h.lines) && len(h.lines[j]) > 0 && (h.lines[j][0] == ' ' || h.lines[j][0] == '\t') {
			j++
		}
		name, _, _ := bytes.Cut(h.lines[i], []byte(":"))
		fn(strings.ToLower(string(bytes.TrimSpace(name))), i, j)
		i = j
	}
}

// get returns the unfolded, trimmed value of the first field called name
// (lower case), or "".
func (h *header) get(name string) string {
	var v []byte
	found := false
	h.fields(func(n string, from, to int) {
		if found || n != name {
			return
		}
		found = true
		_, first, _ := bytes.Cut(h.lines[from], []byte(":"))
		v = append(v, first...)
		for _, l := range h.lines[from+1 : to] {
			v = append(v, l...)
		}
	})
	v = bytes.ReplaceAll(bytes.ReplaceAll(v, []byte("\r"), nil), []byte("\n"), nil)
	return string(bytes.TrimSpace(v))
}

// setCTE sets Content-Transfer-Encoding to value: the first such field is
// replaced where it stands, any others removed; without one, it is added
// at the end of the header.
func (h *header) setCTE(value string) {
	var out [][]byte
	done := false
	h.fields(func(n string, from, to int) {
		if n != "content-transfer-encoding" {
			out = append(out, h.lines[from:to]...)
			return
		}
		if !done {
			done = true
			out = append(out, []byte("Content-Transfer-Encoding: "+value+lineEnd(h.lines[to-1], "")))
		}
	})
	if !done {
		eol := lineEnd(h.end, "\r\n")
		if n := len(out); n > 0 && lineEnd(out[n-1], "") == "" {
			out[n-1] = append(out[n-1], eol...) // the last line lacked its line break
		}
		out = append(out, []byte("Content-Transfer-Encoding: "+value+eol))
	}
	h.lines = out
}

// lineEnd is the line break at the end of l, or def without one.
func lineEnd(l []byte, def string) string {
	switch {
	case bytes.HasSuffix(l, []byte("\r\n")):
		return "\r\n"
	case bytes.HasSuffix(l, []byte("\n")):
		return "\n"
	}
	return def
}

func (c *converter) writeHeader(h *header) {
	for _, l := range h.lines {
		c.write(l)
	}
	c.write(h.end)
}
