// Package header rewrites the header of an RFC 5322 message while
// streaming it: each field (folded lines joined, RFC 5322 §2.2.3) can be
// kept, changed or dropped; the body is copied unchanged.
package header

import (
	"bufio"
	"io"
	"strings"
	"sync"
)

// Rewrite copies a message, passing each header field (its name and its
// unfolded value) through f, which may change the value or drop the field;
// fields f leaves alone are copied byte for byte, and so is the body.
func Rewrite(r io.Reader, w io.Writer, f func(name, value string) (string, bool)) error {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(w)
	defer func() {
		br.Reset(nil)
		readers.Put(br)
		bw.Reset(nil)
		writers.Put(bw)
	}()
	var field []string
	flush := func() {
		if len(field) == 0 {
			return
		}
		raw := strings.Join(field, "")
		field = nil
		name, value, ok := strings.Cut(raw, ":")
		if !ok {
			bw.WriteString(raw)
			return
		}
		orig := strings.TrimRight(value, "\r\n")
		nv, keep := f(strings.TrimSpace(name), strings.TrimSpace(unfold(orig)))
		if !keep {
			return
		}
		if nv == strings.TrimSpace(unfold(orig)) {
			bw.WriteString(raw)
			return
		}
		bw.WriteString(name + ": " + nv + "\r\n")
	}
	for {
		line, err := br.ReadString('\n')
		if line == "\r\n" || line == "\n" {
			flush()
			bw.WriteString(line)
			break
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') && len(field) > 0 {
			field = append(field, line)
		} else if line != "" {
			flush()
			field = append(field, line)
		}
		if err == io.EOF {
			flush()
			return bw.Flush()
		}
		if err != nil {
			return err
		}
	}
	if _, err := io.Copy(bw, br); err != nil {
		return err
	}
	return bw.Flush()
}

// Rewrite's buffers (64 KiB each) are reused: it runs for every message
// received and, with encryption, again for every one handed to a plugin
// (issue 19.4).
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}
)

var unfolder = strings.NewReplacer("\r\n ", " ", "\r\n\t", " ", "\n ", " ", "\n\t", " ")

func unfold(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	return unfolder.Replace(s)
}
