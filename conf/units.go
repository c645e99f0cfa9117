package conf

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in the config as a string: any Go
// duration ("90s", "5m", "1h30m") plus a "d" unit of 24 hours ("5d",
// "1d12h"). Negative durations are rejected by validation, not by parsing.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d compactly, using days where it can ("5d", "1h6m40s").
func (d Duration) String() string {
	v := time.Duration(d)
	if v == 0 {
		return "0s"
	}
	var b strings.Builder
	if v < 0 {
		if v == math.MinInt64 {
			return v.String()
		}
		b.WriteByte('-')
		v = -v
	}
	if v%time.Second != 0 {
		// Sub-second precision: let Go say it, but keep whole days.
		if days := v / (24 * time.Hour); days > 0 {
			fmt.Fprintf(&b, "%dd", days)
			v -= days * 24 * time.Hour
		}
		b.WriteString(v.String())
		return b.String()
	}
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := v / u.unit; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			v -= n * u.unit
		}
	}
	return b.String()
}

// MarshalText writes d in the form UnmarshalText reads.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a duration such as "5m", "4000s", "5d" or "1d12h".
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses a Go duration string that may also use the unit "d"
// (24 hours), e.g. "5d" or "1d12h30m". Spaces between parts are ignored.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	bad := func(why string) error {
		return fmt.Errorf("invalid duration %q: %s", orig, why)
	}
	// Spaces between the parts are allowed: "1d 12h".
	s = strings.Join(strings.Fields(s), "")
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if s == "" {
		return 0, bad(`empty (write a duration like "90s", "5m", "2h" or "5d")`)
	}
	if s == "0" {
		return 0, nil
	}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
			i++
		}
		num := s[:i]
		if num == "" || num == "." {
			return 0, bad(`expected a number (write a duration like "90s", "5m", "2h" or "5d")`)
		}
		j := i
		for j < len(s) && !(s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
			j++
		}
		unit := s[i:j]
		s = s[j:]
		var part time.Duration
		switch unit {
		case "":
			return 0, bad(`missing unit after ` + num + ` (use ms, s, m, h or d)`)
		case "d":
			f, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, bad("bad number " + strconv.Quote(num))
			}
			h := f * float64(24*time.Hour)
			if h >= math.MaxInt64 {
				return 0, bad("too large")
			}
			part = time.Duration(h)
		case "ns", "us", "µs", "μs", "ms", "s", "m", "h":
			p, err := time.ParseDuration(num + unit)
			if err != nil {
				if _, ferr := strconv.ParseFloat(num, 64); ferr == nil {
					return 0, bad("too large")
				}
				return 0, bad("bad number " + strconv.Quote(num))
			}
			part = p
		default:
			return 0, bad("unknown unit " + strconv.Quote(unit) + " (use ms, s, m, h or d)")
		}
		if total > math.MaxInt64-part {
			return 0, bad("too large")
		}
		total += part
	}
	if neg {
		total = -total
	}
	return total, nil
}

// Size is a number of bytes. In the config it is either a TOML integer
// (bytes) or a string with a unit: "512KB", "50MB", "1GB" (powers of 1000)
// or "10KiB", "50MiB", "1GiB" (powers of 1024); "B" or no unit means
// bytes. Units are case-insensitive.
type Size int64

// Bytes returns s as a number of bytes.
func (s Size) Bytes() int64 { return int64(s) }

var sizeUnits = []struct {
	name string
	mult int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

// String formats s with the largest unit that divides it exactly,
// preferring binary units ("50MiB", "512KB", "123").
func (s Size) String() string {
	v := int64(s)
	if v == 0 {
		return "0"
	}
	for _, u := range sizeUnits {
		if u.mult > 1 && v%u.mult == 0 {
			return strconv.FormatInt(v/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(v, 10)
}

// MarshalText writes s in the form UnmarshalText reads.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a size such as "50MiB", "512KB" or "1048576".
func (s *Size) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

// UnmarshalTOML accepts a TOML integer (bytes) or a string with a unit; it
// makes Size decode with github.com/BurntSushi/toml as well.
func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("invalid size %d: must not be negative", v)
		}
		*s = Size(v)
		return nil
	case string:
		return s.UnmarshalText([]byte(v))
	}
	return fmt.Errorf("must be an integer (bytes) or a string like \"50MiB\", not %s", tomlTypeName(v))
}

// ParseSize parses a byte size such as "50MB", "10MiB", "512KB", "1GB" or
// "123" (bytes). KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB
// powers of 1024. A fraction is allowed ("1.5GB") and rounded down to a
// whole byte.
func ParseSize(str string) (int64, error) {
	bad := func(why string) error {
		return fmt.Errorf("invalid size %q: %s", str, why)
	}
	s := strings.TrimSpace(str)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" {
		if strings.HasPrefix(s, "-") {
			return 0, bad("must not be negative")
		}
		return 0, bad(`expected a number (write a size like "1048576", "512KB", "50MiB" or "1GB")`)
	}
	mult := int64(-1)
	if unit == "" {
		mult = 1
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			mult = u.mult
		}
	}
	if mult < 0 {
		return 0, bad("unknown unit " + strconv.Quote(unit) + " (use B, KB, MB, GB, TB or KiB, MiB, GiB, TiB)")
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/mult {
			return 0, bad("too large")
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, bad("bad number " + strconv.Quote(num))
	}
	f *= float64(mult)
	if f >= math.MaxInt64 {
		return 0, bad("too large")
	}
	return int64(f), nil
}

// tomlTypeName names the TOML type of a decoded value for error messages.
func tomlTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case []any:
		return "an array"
	case []map[string]any:
		return "an array of tables"
	case map[string]any:
		return "a table"
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("%T", v)
}
