package conf

import (
	"fmt"
	"strconv"
	"strings"
)

// The TOML decoder does not tell where a key was written, so posIndex
// recovers it: a light scan of the (already syntax-checked) TOML text that
// notes the line of every table header and every key, under the same key
// paths the decoder and the validator use ("smtp.max_recipients",
// "domain[1].aliases.sales"). The scan never fails; on text it does not
// understand it skips to the next line.

// keyPath helpers: segments are joined by ".", array elements are written
// NAME[i] (0-based), and segments that are not bare TOML keys are quoted.

func joinKey(parent, name string) string {
	seg := name
	if !isBareKey(name) {
		seg = strconv.Quote(name)
	}
	if parent == "" {
		return seg
	}
	return parent + "." + seg
}

func indexKey(parent string, i int) string { return fmt.Sprintf("%s[%d]", parent, i) }

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBareChar(s[i]) {
			return false
		}
	}
	return true
}

func isBareChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// posIndex maps a key path to the 1-based line where it was first written.
type posIndex map[string]int

// has reports whether key (or something under it) was written in the file.
func (p posIndex) has(key string) bool {
	_, ok := p[key]
	return ok
}

// line returns the line of key, or of its nearest written parent, or 0.
func (p posIndex) line(key string) int {
	for key != "" {
		if l, ok := p[key]; ok {
			return l
		}
		key = parentKey(key)
	}
	return 0
}

// parentKey strips the last segment (".x" or "[i]") from a key path.
func parentKey(key string) string {
	if strings.HasSuffix(key, "]") {
		if i := strings.LastIndexByte(key, '['); i >= 0 {
			return key[:i]
		}
	}
	// Find the last '.' that is not inside quotes.
	last, inq := -1, false
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case '\\':
			if inq {
				i++
			}
		case '"':
			inq = !inq
		case '.':
			if !inq {
				last = i
			}
		}
	}
	if last < 0 {
		return ""
	}
	return key[:last]
}

type posScanner struct {
	s        string
	i        int
	line     int
	idx      posIndex
	arrCount map[string]int // array-of-tables path -> number of elements so far
}

func buildPosIndex(text string) posIndex {
	sc := &posScanner{s: text, line: 1, idx: posIndex{}, arrCount: map[string]int{}}
	sc.document()
	return sc.idx
}

func (sc *posScanner) note(key string, line int) {
	if _, ok := sc.idx[key]; !ok && key != "" {
		sc.idx[key] = line
	}
}

func (sc *posScanner) eof() bool { return sc.i >= len(sc.s) }

func (sc *posScanner) peek() byte {
	if sc.eof() {
		return 0
	}
	return sc.s[sc.i]
}

func (sc *posScanner) advance() {
	if !sc.eof() {
		if sc.s[sc.i] == '\n' {
			sc.line++
		}
		sc.i++
	}
}

// blanks skips spaces and tabs; with nl also newlines and comments.
func (sc *posScanner) blanks(nl bool) {
	for !sc.eof() {
		switch c := sc.peek(); {
		case c == ' ' || c == '\t' || c == '\r':
			sc.advance()
		case nl && c == '\n':
			sc.advance()
		case nl && c == '#':
			sc.skipLine()
		default:
			return
		}
	}
}

// skipLine moves to just before the next newline.
func (sc *posScanner) skipLine() {
	for !sc.eof() && sc.peek() != '\n' {
		sc.advance()
	}
}

func (sc *posScanner) document() {
	current := ""
	for {
		sc.blanks(true)
		if sc.eof() {
			return
		}
		start := sc.i
		line := sc.line
		if sc.peek() == '[' {
			current = sc.header(line)
		} else {
			parts := sc.key()
			if len(parts) > 0 && sc.peek() == '=' {
				sc.advance()
				sc.blanks(false)
				sc.value(sc.notePath(current, parts, line))
			}
		}
		sc.skipLine()
		if sc.i == start && !sc.eof() {
			sc.advance() // guarantee progress
		}
	}
}

// notePath records every prefix of current+parts at line and returns the
// full path.
func (sc *posScanner) notePath(current string, parts []string, line int) string {
	p := current
	for _, part := range parts {
		p = joinKey(p, part)
		sc.note(p, line)
	}
	return p
}

// header reads "[a.b]" or "[[a.b]]" and returns the path it opens.
func (sc *posScanner) header(line int) string {
	sc.advance()
	array := sc.peek() == '['
	if array {
		sc.advance()
	}
	parts := sc.key()
	if len(parts) == 0 {
		return ""
	}
	// Resolve prefixes that name arrays of tables to their last element.
	p := ""
	for j, part := range parts {
		p = joinKey(p, part)
		last := j == len(parts)-1
		if last && array {
			n := sc.arrCount[p]
			sc.arrCount[p] = n + 1
			sc.note(p, line)
			p = indexKey(p, n)
			sc.note(p, line)
			break
		}
		sc.note(p, line)
		if n, ok := sc.arrCount[p]; ok && !last && n > 0 {
			p = indexKey(p, n-1)
		}
	}
	return p
}

// key reads a possibly dotted key and leaves the scanner after trailing
// blanks.
func (sc *posScanner) key() []string {
	var parts []string
	for {
		sc.blanks(false)
		var part string
		switch c := sc.peek(); {
		case c == '"' || c == '\'':
			part = sc.str()
		case isBareChar(c):
			st := sc.i
			for !sc.eof() && isBareChar(sc.peek()) {
				sc.advance()
			}
			part = sc.s[st:sc.i]
		default:
			return parts
		}
		parts = append(parts, part)
		sc.blanks(false)
		if sc.peek() != '.' {
			return parts
		}
		sc.advance()
	}
}

// str reads a basic, literal or multi-line string and returns its content
// (escapes resolved where possible).
func (sc *posScanner) str() string {
	q := sc.peek()
	triple := strings.HasPrefix(sc.s[sc.i:], strings.Repeat(string(q), 3))
	if triple {
		sc.advance()
		sc.advance()
		sc.advance()
	} else {
		sc.advance()
	}
	st := sc.i
	for !sc.eof() {
		c := sc.peek()
		if c == '\\' && q == '"' {
			sc.advance()
			sc.advance()
			continue
		}
		if c == '\n' && !triple {
			break
		}
		if c == q {
			if !triple {
				raw := sc.s[st:sc.i]
				sc.advance()
				if q == '"' {
					if u, err := strconv.Unquote(`"` + raw + `"`); err == nil {
						return u
					}
				}
				return raw
			}
			if strings.HasPrefix(sc.s[sc.i:], strings.Repeat(string(q), 3)) {
				// Up to two more quotes may belong to the content.
				for k := 0; k < 5 && sc.peek() == q; k++ {
					sc.advance()
				}
				return ""
			}
		}
		sc.advance()
	}
	return sc.s[st:sc.i]
}

// value skips one value; inline tables and arrays are entered so that the
// keys inside them are noted under path.
func (sc *posScanner) value(path string) {
	switch c := sc.peek(); c {
	case '"', '\'':
		sc.str()
	case '[':
		sc.advance()
		for n := 0; ; n++ {
			sc.blanks(true)
			if sc.eof() || sc.peek() == ']' {
				sc.advance()
				return
			}
			st := sc.i
			line := sc.line
			elem := indexKey(path, n)
			sc.note(elem, line)
			sc.value(elem)
			sc.blanks(true)
			if sc.peek() == ',' {
				sc.advance()
			} else if sc.i == st {
				sc.advance() // not understood; keep moving
			}
		}
	case '{':
		sc.advance()
		for {
			sc.blanks(true)
			if sc.eof() {
				return
			}
			if sc.peek() == '}' {
				sc.advance()
				return
			}
			st := sc.i
			line := sc.line
			parts := sc.key()
			if len(parts) > 0 && sc.peek() == '=' {
				sc.advance()
				sc.blanks(false)
				sc.value(sc.notePath(path, parts, line))
			}
			sc.blanks(true)
			if sc.peek() == ',' {
				sc.advance()
			} else if sc.i == st {
				sc.advance()
			}
		}
	default:
		for !sc.eof() {
			switch sc.peek() {
			case ',', ']', '}', '\n', '#':
				return
			}
			sc.advance()
		}
	}
}
