package conf

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// decoder copies a parsed TOML document (as produced by toml.Decode into a
// map[string]any) onto a Config, field by field, collecting every unknown
// key and every type error instead of stopping at the first. Arrays and
// maps in the document replace what the destination held; tables are
// merged key by key.
type decoder struct {
	file string
	pos  posIndex
	errs Errors
}

func (d *decoder) errorf(key, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: d.pos.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

var (
	tomlUnmarshalerType = reflect.TypeFor[toml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decode stores src (a TOML value) into dst (a settable value) at key.
func (d *decoder) decode(key string, src any, dst reflect.Value) {
	if dst.CanAddr() {
		pt := dst.Addr()
		if pt.Type().Implements(tomlUnmarshalerType) {
			if err := pt.Interface().(toml.Unmarshaler).UnmarshalTOML(src); err != nil {
				d.errorf(key, "%s", err)
			}
			return
		}
		if pt.Type().Implements(textUnmarshalerType) {
			s, ok := src.(string)
			if !ok {
				d.errorf(key, "must be %s, not %s", wantName(dst.Type()), tomlTypeName(src))
				return
			}
			if err := pt.Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
				d.errorf(key, "%s", err)
			}
			return
		}
	}
	switch dst.Kind() {
	case reflect.String:
		s, ok := src.(string)
		if !ok {
			d.typeErr(key, src, dst.Type())
			return
		}
		dst.SetString(s)
	case reflect.Bool:
		b, ok := src.(bool)
		if !ok {
			d.typeErr(key, src, dst.Type())
			return
		}
		dst.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := src.(int64)
		if !ok {
			d.typeErr(key, src, dst.Type())
			return
		}
		if dst.OverflowInt(n) {
			d.errorf(key, "%d is out of range", n)
			return
		}
		dst.SetInt(n)
	case reflect.Slice:
		var elems []any
		switch s := src.(type) {
		case []any:
			elems = s
		case []map[string]any:
			for _, m := range s {
				elems = append(elems, m)
			}
		default:
			d.typeErr(key, src, dst.Type())
			return
		}
		out := reflect.MakeSlice(dst.Type(), len(elems), len(elems))
		for i, e := range elems {
			d.decode(indexKey(key, i), e, out.Index(i))
		}
		dst.Set(out)
	case reflect.Map:
		m, ok := src.(map[string]any)
		if !ok || dst.Type().Key().Kind() != reflect.String {
			d.typeErr(key, src, dst.Type())
			return
		}
		out := reflect.MakeMapWithSize(dst.Type(), len(m))
		for _, k := range sortedKeys(m) {
			v := reflect.New(dst.Type().Elem()).Elem()
			d.decode(joinKey(key, k), m[k], v)
			out.SetMapIndex(reflect.ValueOf(k).Convert(dst.Type().Key()), v)
		}
		dst.Set(out)
	case reflect.Struct:
		m, ok := src.(map[string]any)
		if !ok {
			d.typeErr(key, src, dst.Type())
			return
		}
		fields := tomlFields(dst.Type())
		for _, k := range sortedKeys(m) {
			fi, ok := fields[k]
			if !ok {
				d.unknown(joinKey(key, k), k, fields)
				continue
			}
			d.decode(joinKey(key, k), m[k], dst.Field(fi))
		}
	default:
		d.errorf(key, "cannot be set (unsupported type %s)", dst.Type())
	}
}

// failed reports whether decoding key, or a table or array holding it,
// already gave an error, so that validation need not repeat it.
func (d *decoder) failed(key string) bool {
	for _, e := range d.errs {
		for k := key; k != ""; k = parentKey(k) {
			if e.Key == k {
				return true
			}
		}
	}
	return false
}

func (d *decoder) typeErr(key string, src any, t reflect.Type) {
	d.errorf(key, "must be %s, not %s", wantName(t), tomlTypeName(src))
}

func (d *decoder) unknown(key, name string, fields map[string]int) {
	msg := "unknown key"
	if s := suggest(name, fields); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	d.errorf(key, "%s", msg)
}

// wantName says in words what TOML value a Go type takes.
func wantName(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[Duration]():
		return `a duration string like "5m" or "5d"`
	case reflect.TypeFor[Size]():
		return `an integer (bytes) or a size string like "50MiB"`
	case reflect.TypeFor[TLSLevel]():
		return `a TLS level name like "may" or "verify"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return "an array of tables"
		}
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(wantName(t.Elem()), "an "), "a ") + "s"
	case reflect.Map, reflect.Struct:
		return "a table"
	}
	return t.String()
}

// tomlFields maps the toml tag names of a struct type to field indexes.
func tomlFields(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = i
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// suggest returns the known name closest to name, if it is close enough to
// be a likely typo.
func suggest(name string, fields map[string]int) string {
	best, bestD := "", 3
	lname := strings.ToLower(name)
	for f := range fields {
		dist := editDistance(lname, f)
		if dist < bestD || dist == bestD && f < best {
			best, bestD = f, dist
		}
	}
	if bestD > 2 || bestD >= len(name) {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
