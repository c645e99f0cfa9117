// Package mime7bit makes a MIME message 7-bit clean by re-encoding its
// 8-bit parts, for plugins and for the MTA alike: a signature must be made
// over content that no relay will re-encode (RFC 8551 §3.1.3, RFC 3156 §3),
// and a message for a server without 8BITMIME has to be converted before
// it is sent (RFC 6152 §3).
//
// Convert walks the MIME structure and changes only the leaf parts that
// need it:
//
//   - A leaf labelled 8bit or binary, or one with a byte ≥ 0x80 in its
//     body that is not labelled quoted-printable or base64, is re-encoded:
//     text/* as quoted-printable (binary ones byte-exact, line breaks
//     included), everything else as base64 in lines of 76 characters. Its
//     Content-Transfer-Encoding field is replaced where it stood (or
//     added at the end of the header).
//   - Multiparts and message/rfc822 and message/global parts are walked
//     into; an 8bit or binary label on them becomes 7bit.
//   - Everything else stays byte for byte as it was: headers (8-bit
//     header text cannot be fixed by an encoding and is left alone),
//     preambles, epilogues, delimiter lines, line endings, 7-bit leaves,
//     leaves already in quoted-printable or base64, message/partial and
//     message/external-body parts. Charsets are never transcoded.
//
// A Content-Type that cannot be parsed counts as text/plain (RFC 2045
// §5.2). Malformed structure is followed the way readers do: a part ends
// at the next delimiter line of any enclosing multipart, a multipart
// without its closing delimiter at the end of its parent.
//
// Convert streams. What it holds in memory is the header of each part and
// a leaf whose label does not say whether it needs re-encoding (no label,
// 7bit or an unknown one), until its end; leaves labelled 8bit, binary,
// quoted-printable or base64 (attachments) stream through. An input that is already 7-bit comes out
// unchanged, and Convert of its own output changes nothing.
package mime7bit

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// MaxDepth is how deep multiparts and message/rfc822 parts may be nested;
// Convert fails with ErrTooDeep on anything deeper.
const MaxDepth = 32

// ErrTooDeep is the error for parts nested deeper than MaxDepth.
var ErrTooDeep = errors.New("mime7bit: MIME parts nested too deep")

// Convert copies the message (or MIME entity: header, blank line, body)
// read from r to w, re-encoding its 8-bit parts as the package
// documentation describes. It fails only when reading or writing fails or
// with ErrTooDeep; w may then hold part of the output.
func Convert(w io.Writer, r io.Reader) error {
	bw := bufio.NewWriter(w)
	c := &converter{r: bufio.NewReaderSize(r, readSize), w: bw}
	if err := c.entity(nil, 0); err != nil {
		return err
	}
	return bw.Flush()
}

// Bytes is Convert for a message in memory.
func Bytes(msg []byte) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(len(msg) + len(msg)/8)
	if err := Convert(&b, bytes.NewReader(msg)); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Reader returns the converted message read from r as a stream; the
// conversion runs in a goroutine and an error in it is the reader's
// error. Close the reader when not reading it to the end, so that the
// goroutine ends.
func Reader(r io.Reader) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(Convert(pw, r))
	}()
	return pr
}

// Is8bit reports whether b has a byte ≥ 0x80.
func Is8bit(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

var cteName = []byte("content-transfer-encoding")

// Clean reports whether Convert would return msg unchanged, without
// walking its structure: msg has no byte ≥ 0x80, and each
// Content-Transfer-Encoding in it (in any case, anywhere) is a line that
// says 7bit, quoted-printable or base64 and nothing else, not continued
// on the next line — so no part is labelled 8bit or binary. (Convert may
// still fail on it with ErrTooDeep.) False only means Convert has to
// look.
func Clean(msg []byte) bool {
	if Is8bit(msg) {
		return false
	}
	// Each "content-transfer-encoding" is found at its '-'.
	const before = len("content")
	for i := 0; ; {
		j := bytes.IndexByte(msg[i:], '-')
		if j < 0 {
			return true
		}
		k := i + j - before
		if k >= 0 && k+len(cteName) <= len(msg) && bytes.EqualFold(msg[k:k+len(cteName)], cteName) &&
			!harmlessLabel(msg[k+len(cteName):]) {
			return false
		}
		i += j + 1
	}
}

// harmlessLabel reports whether rest, what follows a field name
// Content-Transfer-Encoding, is ": 7bit", ": quoted-printable" or
// ": base64" (blanks around allowed) up to a CRLF not followed by a
// continuation line.
func harmlessLabel(rest []byte) bool {
	line, after, ok := bytes.Cut(rest, []byte("\r\n"))
	if !ok || (len(after) > 0 && (after[0] == ' ' || after[0] == '\t')) {
		return false
	}
	v, ok := bytes.CutPrefix(bytes.TrimLeft(line, " \t"), []byte(":"))
	if !ok {
		return false
	}
	v = bytes.Trim(v, " \t")
	return bytes.EqualFold(v, []byte("7bit")) || bytes.EqualFold(v, []byte("quoted-printable")) || bytes.EqualFold(v, []byte("base64"))
}

// readSize is the read buffer; a longer line is handled in pieces.
const readSize = 64 << 10

// chunk is a line with its line ending, or a piece of a longer one.
type chunk struct {
	b     []byte
	start bool // b begins a line
}

// stopFunc reports whether a line (at its start) ends the current part:
// a delimiter line of an enclosing multipart.
type stopFunc func(line []byte) bool

type converter struct {
	r        *bufio.Reader
	w        *bufio.Writer
	back     *chunk // pushed back by the part that ended at it
	midLine  bool   // the last chunk read did not end a line
	writeErr error  // the first error writing
}

// next returns the next chunk; io.EOF at the end of the input. After a
// write error it returns that error: there is no point reading on.
func (c *converter) next() (chunk, error) {
	if c.writeErr != nil {
		return chunk{}, c.writeErr
	}
	if c.back != nil {
		ch := *c.back
		c.back = nil
		return ch, nil
	}
	b, err := c.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		err = nil
	}
	if len(b) == 0 {
		if err == nil {
			err = io.EOF
		}
		return chunk{}, err
	}
	if err == io.EOF {
		err = nil // the last line, without a line ending; EOF comes next
	}
	if err != nil {
		return chunk{}, err
	}
	ch := chunk{b: bytes.Clone(b), start: !c.midLine}
	c.midLine = b[len(b)-1] != '\n'
	return ch, nil
}

// stops reports whether ch ends the part whose stop is stop, and if so
// pushes it back for the part that it belongs to.
func (c *converter) stops(ch chunk, stop stopFunc) bool {
	if ch.start && stop != nil && stop(ch.b) {
		c.back = &ch
		return true
	}
	return false
}

func (c *converter) write(b []byte) {
	if c.writeErr == nil {
		_, c.writeErr = c.w.Write(b)
	}
}

// entity converts one entity (header and body), up to the line that stop
// accepts or the end of the input.
func (c *converter) entity(stop stopFunc, depth int) error {
	if depth > MaxDepth {
		return ErrTooDeep
	}
	h, err := c.header(stop)
	if err != nil {
		return err
	}
	mt, params, err := mime.ParseMediaType(h.get("content-type"))
	if err != nil && mt == "" {
		mt = "text/plain"
	}
	cte := strings.ToLower(h.get("content-transfer-encoding"))
	structured := cte == "" || cte == "7bit" || cte == "8bit" || cte == "binary"
	switch {
	case structured && strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		c.relabel(h, cte)
		return c.multipart(params["boundary"], stop, depth)
	case structured && (mt == "message/rfc822" || mt == "message/global"):
		c.relabel(h, cte)
		return c.entity(stop, depth+1)
	case mt == "message/partial" || mt == "message/external-body":
		c.writeHeader(h)
		_, err := c.copyBody(stop, nil)
		return err
	}
	return c.leaf(h, mt, cte, stop)
}

// relabel writes the header of a multipart or message part, an 8bit or
// binary label turned into 7bit: what is inside will be 7-bit.
func (c *converter) relabel(h *header, cte string) {
	if cte == "8bit" || cte == "binary" {
		h.setCTE("7bit")
	}
	c.writeHeader(h)
}

func (c *converter) multipart(boundary string, stop stopFunc, depth int) error {
	delim := []byte("--" + boundary)
	kind := func(line []byte) int { // 0 other, 1 delimiter, 2 closing delimiter
		if !bytes.HasPrefix(line, delim) {
			return 0
		}
		rest, k := line[len(delim):], 1
		if bytes.HasPrefix(rest, []byte("--")) {
			rest, k = rest[2:], 2
		}
		if len(bytes.TrimRight(rest, " \t\r\n")) != 0 {
			return 0
		}
		return k
	}
	inner := func(line []byte) bool { return kind(line) != 0 || stop != nil && stop(line) }
	for {
		ch, err := c.next()
		if err == io.EOF {
			return c.writeErr
		}
		if err != nil {
			return err
		}
		k := 0
		if ch.start {
			k = kind(ch.b)
		}
		if k == 0 && c.stops(ch, stop) {
			return c.writeErr
		}
		c.write(ch.b)
		switch k {
		case 1:
			if err := c.entity(inner, depth+1); err != nil {
				return err
			}
		case 2: // the epilogue
			_, err := c.copyBody(stop, nil)
			return err
		}
	}
}

// copyBody copies (or, with keep, collects) lines up to stop or the end;
// atEOF says which.
func (c *converter) copyBody(stop stopFunc, keep *[]chunk) (atEOF bool, err error) {
	for {
		ch, err := c.next()
		if err == io.EOF {
			return true, c.writeErr
		}
		if err != nil {
			return false, err
		}
		if c.stops(ch, stop) {
			return false, c.writeErr
		}
		if keep != nil {
			*keep = append(*keep, ch)
		} else {
			c.write(ch.b)
		}
	}
}

func (c *converter) leaf(h *header, mt, cte string, stop stopFunc) error {
	switch cte {
	case "quoted-printable", "base64":
		c.writeHeader(h)
		_, err := c.copyBody(stop, nil)
		return err
	case "8bit", "binary":
		return c.encode(h, mt, cte == "binary", nil, false, stop)
	}
	// No label, 7bit or unknown: look at the body first.
	var body []chunk
	atEOF, err := c.copyBody(stop, &body)
	if err != nil {
		return err
	}
	for _, ch := range body {
		if Is8bit(ch.b) {
			return c.encode(h, mt, false, body, atEOF, nil)
		}
	}
	c.writeHeader(h)
	for _, ch := range body {
		c.write(ch.b)
	}
	return c.writeErr
}

// encode writes the leaf re-encoded: the body is body (which ended at the
// end of the input if atEOF) when not nil, else read up to stop. The line
// break before a delimiter belongs to the delimiter and is not encoded.
func (c *converter) encode(h *header, mt string, binary bool, body []chunk, atEOF bool, stop stopFunc) error {
	var enc io.WriteCloser
	text := strings.HasPrefix(mt, "text/")
	if text {
		h.setCTE("quoted-printable")
		qp := quotedprintable.NewWriter(errWriter{c})
		qp.Binary = binary
		enc = qp
	} else {
		h.setCTE("base64")
		enc = newBase64Lines(errWriter{c})
	}
	c.writeHeader(h)
	var held []byte // the line break at the end of the last line
	// After a write error nothing more goes to enc: a quotedprintable
	// Writer must not be used after one.
	feed := func(b []byte) {
		if c.writeErr != nil {
			return
		}
		enc.Write(held)
		held = nil
		if n := len(b); n > 0 && b[n-1] == '\n' {
			if n > 1 && b[n-2] == '\r' {
				b, held = b[:n-2], b[n-2:]
			} else {
				b, held = b[:n-1], b[n-1:]
			}
		}
		if text && !binary {
			b = bareCR(b, held != nil)
		}
		enc.Write(b)
	}
	if body != nil {
		for _, ch := range body {
			feed(ch.b)
		}
	} else {
		for {
			ch, err := c.next()
			if err == io.EOF {
				atEOF = true
				break
			}
			if err != nil {
				return err
			}
			if c.stops(ch, stop) {
				break
			}
			feed(ch.b)
			if c.writeErr != nil {
				return c.writeErr
			}
		}
	}
	if c.writeErr != nil {
		return c.writeErr
	}
	if atEOF {
		enc.Write(held) // the end of the message: content
		held = nil
	}
	if c.writeErr == nil {
		enc.Close()
	}
	c.write(held)
	return c.writeErr
}

// bareCR turns each CR in b that no LF follows into CRLF (final says b is
// the whole rest of its line). Text-mode quotedprintable would make the
// same line break of it, but when an encoded byte follows the CR it also
// swallows the next LF (Go 1.26), losing a line break.
func bareCR(b []byte, final bool) []byte {
	if bytes.IndexByte(b, '\r') < 0 {
		return b
	}
	var out []byte
	for i, c := range b {
		out = append(out, c)
		if c == '\r' && (i+1 < len(b) && b[i+1] != '\n' || i+1 == len(b) && final) {
			out = append(out, '\n')
		}
	}
	return out
}

// errWriter writes to the converter's output, keeping the first error.
type errWriter struct{ c *converter }

func (e errWriter) Write(b []byte) (int, error) {
	e.c.write(b)
	return len(b), e.c.writeErr
}

// base64Lines encodes base64 in lines of 76 characters, each ended by
// CRLF (an empty input gives one empty line).
type base64Lines struct {
	w    io.Writer
	enc  io.WriteCloser
	line lineWriter
}

type lineWriter struct {
	w   io.Writer
	col int
}

func (l *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if l.col == 76 {
			if _, err := io.WriteString(l.w, "\r\n"); err != nil {
				return 0, err
			}
			l.col = 0
		}
		k := min(76-l.col, len(b))
		if _, err := l.w.Write(b[:k]); err != nil {
			return 0, err
		}
		l.col += k
		b = b[k:]
	}
	return n, nil
}

func newBase64Lines(w io.Writer) *base64Lines {
	b := &base64Lines{w: w, line: lineWriter{w: w}}
	b.enc = base64.NewEncoder(base64.StdEncoding, &b.line)
	return b
}

func (b *base64Lines) Write(p []byte) (int, error) { return b.enc.Write(p) }

func (b *base64Lines) Close() error {
	if err := b.enc.Close(); err != nil {
		return err
	}
	_, err := io.WriteString(b.w, "\r\n")
	return err
}
