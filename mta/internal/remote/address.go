package remote

import "github.com/posthorn/posthorn/mta/internal/envaddr"

// wireAddr is addr as it goes between "<" and ">" in MAIL FROM and RCPT
// TO: a local part that is not a Dot-string is quoted (RFC 5321 §4.1.2),
// so that nothing in an address can become an ESMTP parameter at the next
// hop. Deliver has refused every address envaddr cannot write, so the
// error cannot happen here.
func wireAddr(addr string) string {
	w, err := envaddr.Format(addr)
	if err != nil {
		return addr
	}
	return w
}
