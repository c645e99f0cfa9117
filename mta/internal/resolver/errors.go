package resolver

import (
	"context"
	"errors"
	"net"
)

var (
	// ErrNotFound is wrapped by the errors for NXDOMAIN and NODATA (the
	// name exists but has no record of the type). IsNXDomain tells them
	// apart.
	ErrNotFound = errors.New("no such record")
	// ErrBogus is wrapped by the error for a SERVFAIL answer. A validating
	// resolver answers SERVFAIL when DNSSEC validation fails (RFC 4035
	// section 5.5), and a stub cannot tell that from other server
	// failures: callers must treat it as temporary and never as "no
	// record" (never downgrade, e.g. from DANE to opportunistic TLS).
	ErrBogus = errors.New("server failure (SERVFAIL; DNSSEC validation may have failed)")
)

// Error is the error of a lookup.
type Error struct {
	Name      string // the name looked up
	Type      string // the query type ("MX", "TLSA", ...)
	Server    string // the resolver asked
	Err       error  // ErrNotFound, ErrBogus or the underlying failure
	NXDomain  bool   // the name does not exist (with ErrNotFound)
	Temporary bool   // the lookup may succeed later
	Timeout   bool   // no answer in time (implies Temporary)

	detail string
}

func (e *Error) Error() string {
	msg := e.Err.Error()
	if errors.Is(e.Err, ErrNotFound) {
		if e.NXDomain {
			msg = "no such domain (NXDOMAIN)"
		} else {
			msg = "no " + e.Type + " record (NODATA)"
		}
	}
	if e.detail != "" {
		msg += " [" + e.detail + "]"
	}
	return "lookup " + e.Type + " " + e.Name + " on " + e.Server + ": " + msg
}

func (e *Error) Unwrap() error { return e.Err }

// IsNXDomain reports whether err says the name does not exist.
func IsNXDomain(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.NXDomain
}

// IsTemporary reports whether err is a failure that may go away: a
// timeout, a network error, SERVFAIL (ErrBogus), REFUSED, a malformed or
// mismatched answer. ErrNotFound and invalid names are not temporary.
func IsTemporary(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Temporary
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

func (r *Resolver) temporary(name string, qtype uint16, err error) *Error {
	return &Error{Name: name, Type: typeString(qtype), Server: r.server, Err: err, Temporary: true}
}

// errorf is a permanent error (an invalid name).
func (r *Resolver) errorf(name string, qtype uint16, err error) *Error {
	return &Error{Name: name, Type: typeString(qtype), Server: r.server, Err: err}
}

func (r *Resolver) netError(name string, qtype uint16, err error) *Error {
	e := r.temporary(name, qtype, err)
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		e.Timeout = true
	}
	return e
}

// toDNSError converts err into the *net.DNSError that libraries written
// against net.Resolver understand (blitiri.com.ar/go/spf and go-msgauth
// look at IsNotFound and Temporary()).
func toDNSError(err error, name string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		return &net.DNSError{Err: err.Error(), Name: name, IsTemporary: IsTemporary(err)}
	}
	return &net.DNSError{
		Err:         e.Error(),
		Name:        name,
		Server:      e.Server,
		IsTimeout:   e.Timeout,
		IsTemporary: e.Temporary,
		IsNotFound:  errors.Is(e.Err, ErrNotFound),
	}
}
