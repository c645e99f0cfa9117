package directory

import "fmt"

// SecureLevels are the TLS levels a user may pick for their secure alias.
var SecureLevels = []string{"encrypt", "dane-only", "verify"}

// ValidSecureLevel reports whether l is "" (the site's default) or one of
// SecureLevels.
func ValidSecureLevel(l string) bool {
	if l == "" {
		return true
	}
	for _, x := range SecureLevels {
		if x == l {
			return true
		}
	}
	return false
}

// levelString names a config level, whether conf keeps it as a string or
// as a typed value with a String method.
func levelString(l any) string {
	if s, ok := l.(string); ok {
		return s
	}
	return fmt.Sprint(l)
}
