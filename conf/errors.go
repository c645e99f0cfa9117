package conf

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a config file: where it is and what is wrong.
type Error struct {
	File string // the file name as given to Load or Parse
	Line int    // 1-based; 0 when the problem has no line of its own
	Key  string // e.g. "smtp.max_recipients" or "domain[1].aliases.sales"; may be empty for syntax errors
	Msg  string
}

// Error formats e as "FILE:LINE: KEY: message", leaving out the line when
// it is unknown and the key when there is none.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one config file, in line order. Load and
// Parse return an Errors value (never an empty one) when the file is
// unusable; use errors.As to get at it.
type Errors []*Error

// Error returns one line per problem.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the individual errors.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// sort orders es by line (unknown lines last), then by key and message.
func (es Errors) sort() {
	slices.SortStableFunc(es, func(a, b *Error) int {
		la, lb := a.Line, b.Line
		if la == 0 {
			la = int(^uint(0) >> 1)
		}
		if lb == 0 {
			lb = int(^uint(0) >> 1)
		}
		if c := cmp.Compare(la, lb); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return cmp.Compare(a.Msg, b.Msg)
	})
}
