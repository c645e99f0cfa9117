package pgpmail

import (
	"bytes"
	"net/mail"
	"strings"
)

// HeaderValues returns the unfolded values of the top-level header fields
// called name.
func HeaderValues(msg []byte, name string) []string {
	fields, _, err := splitEntity(toCRLF(msg))
	if err != nil {
		return nil
	}
	var out []string
	for _, f := range fields {
		if f.is(name) {
			out = append(out, f.value())
		}
	}
	return out
}

// AddressOf returns the lower-cased address in a From-like value, or "".
func AddressOf(v string) string {
	a, err := mail.ParseAddress(v)
	if err != nil {
		return ""
	}
	return strings.ToLower(a.Address)
}

// HasResultHeader reports whether msg carries a ResultHeader field.
func HasResultHeader(msg []byte) bool {
	return len(HeaderValues(msg, ResultHeader)) > 0
}

// StripResultHeader removes every ResultHeader field from msg and, when
// value is not empty, prepends one with that value.
func StripResultHeader(msg []byte, value string) []byte {
	msg = toCRLF(msg)
	fields, body, err := splitEntity(msg)
	if err != nil {
		return msg
	}
	var b bytes.Buffer
	if value != "" {
		b.WriteString(ResultHeader + ": " + value + "\r\n")
	}
	for _, f := range fields {
		if !f.is(ResultHeader) {
			b.WriteString(f.raw)
		}
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// AttachedKeys returns the contents of application/pgp-keys parts of msg
// (top level or one multipart level down), decoded, at most max of them.
func AttachedKeys(msg []byte, max int) [][]byte {
	fields, body, err := splitEntity(toCRLF(msg))
	if err != nil {
		return nil
	}
	var out [][]byte
	var walk func(fields []field, body []byte, depth int)
	walk = func(fields []field, body []byte, depth int) {
		if len(out) >= max || depth > 3 {
			return
		}
		t, p := mediaType(get(fields, "Content-Type"))
		switch {
		case t == "application/pgp-keys":
			if b := decodeBody(body, get(fields, "Content-Transfer-Encoding")); len(b) > 0 && len(b) <= MaxKeySize {
				out = append(out, b)
			}
		case strings.HasPrefix(t, "multipart/") && t != "multipart/encrypted":
			ps, _ := parts(body, p["boundary"])
			for _, part := range ps {
				f, b, err := splitEntity(part)
				if err == nil {
					walk(f, b, depth+1)
				}
			}
		}
	}
	walk(fields, body, 0)
	return out
}
