package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// go-smtp v0.25's client has no exported StartTLS, and NewClientStartTLS
// cannot set the EHLO name, so the opening of a session (greeting, EHLO,
// STARTTLS) is spoken here with net/textproto. The (possibly TLS)
// connection is then handed to go-smtp's client behind a synthetic 220
// greeting; the client sends its own EHLO, as RFC 3207 §4.2 requires after
// TLS anyway.

// opening is what the server said before the transaction.
type opening struct {
	exts     map[string]string
	starttls bool
}

// open reads the greeting, says EHLO (HELO if EHLO is refused), and if
// doTLS and the server offers it, runs STARTTLS and the handshake. It
// returns the connection to continue on.
func open(ctx context.Context, raw net.Conn, helo string, doTLS bool, cfg *tls.Config, timeout time.Duration) (net.Conn, *opening, error) {
	raw.SetDeadline(time.Now().Add(timeout))
	defer raw.SetDeadline(time.Time{})
	tp := textproto.NewConn(raw)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, nil, asSMTPError(err)
	}
	op := &opening{exts: map[string]string{}}
	id, err := tp.Cmd("EHLO %s", helo)
	if err != nil {
		return nil, nil, err
	}
	tp.StartResponse(id)
	_, msg, err := tp.ReadResponse(250)
	tp.EndResponse(id)
	if err != nil {
		var te *textproto.Error
		if !errors.As(err, &te) || (te.Code != 500 && te.Code != 502) {
			return nil, nil, asSMTPError(err)
		}
		// No ESMTP: plain HELO, and so no STARTTLS.
		if _, err := tp.Cmd("HELO %s", helo); err != nil {
			return nil, nil, err
		}
		if _, _, err := tp.ReadResponse(250); err != nil {
			return nil, nil, asSMTPError(err)
		}
		return &greetedConn{Conn: raw}, op, nil
	}
	for _, line := range strings.Split(msg, "\n")[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		op.exts[strings.ToUpper(k)] = v
	}
	_, op.starttls = op.exts["STARTTLS"]
	if !doTLS || !op.starttls {
		return &greetedConn{Conn: raw}, op, nil
	}
	if _, err := tp.Cmd("STARTTLS"); err != nil {
		return nil, nil, err
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, nil, asSMTPError(err)
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, &tlsError{err}
	}
	return &greetedConn{Conn: tc}, op, nil
}

// tlsError marks a failed handshake (or certificate check).
type tlsError struct{ err error }

func (e *tlsError) Error() string { return e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// asSMTPError turns a textproto reply error into go-smtp's type, so reply
// handling is the same for both halves of a session.
func asSMTPError(err error) error {
	var te *textproto.Error
	if errors.As(err, &te) {
		se := &smtp.SMTPError{Code: te.Code, Message: te.Msg, EnhancedCode: smtp.NoEnhancedCode}
		var a, b, c int
		if n, _ := scanEnhanced(te.Msg, &a, &b, &c); n == 3 {
			se.EnhancedCode = smtp.EnhancedCode{a, b, c}
			se.Message = strings.TrimSpace(te.Msg[strings.IndexByte(te.Msg, ' ')+1:])
		}
		return se
	}
	return err
}

func scanEnhanced(s string, a, b, c *int) (int, error) {
	f, _, _ := strings.Cut(s, " ")
	parts := strings.Split(f, ".")
	if len(parts) != 3 {
		return 0, nil
	}
	vals := []*int{a, b, c}
	for i, p := range parts {
		n := 0
		if p == "" || len(p) > 3 {
			return i, nil
		}
		for _, ch := range p {
			if ch < '0' || ch > '9' {
				return i, nil
			}
			n = n*10 + int(ch-'0')
		}
		*vals[i] = n
	}
	if *a < 2 || *a > 5 {
		return 0, nil
	}
	return 3, nil
}

// greetedConn replays a 220 greeting to go-smtp's client, which expects
// one, for a session whose real greeting was already read.
type greetedConn struct {
	net.Conn
	sent int
}

const syntheticGreeting = "220 continuing\r\n"

func (g *greetedConn) Read(p []byte) (int, error) {
	if g.sent < len(syntheticGreeting) {
		n := copy(p, syntheticGreeting[g.sent:])
		g.sent += n
		return n, nil
	}
	return g.Conn.Read(p)
}

// ConnectionState lets go-smtp's client see the TLS state below.
func (g *greetedConn) ConnectionState() (tls.ConnectionState, bool) {
	if tc, ok := g.Conn.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}
