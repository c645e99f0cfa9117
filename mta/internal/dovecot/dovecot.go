// Package dovecot speaks Dovecot's authentication protocols, as Postfix
// does with smtpd_sasl_type = dovecot: the auth-client protocol (AUTH
// PLAIN for SMTP AUTH) and the auth-master protocol of the auth-userdb
// listener (USER, to learn whether a recipient exists). See Dovecot's
// "Authentication Protocol" and "Master Protocol" documentation (version
// 1.2 of the client protocol, 1.1 of the master protocol).
//
// Every request opens its own connection (a local socket: cheap, and no
// state to get wrong); a connection or protocol failure, or a FAIL with
// the "temp" flag, is an error wrapping ErrUnavailable, never a "no".
package dovecot

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// ErrUnavailable wraps every failure to get an answer from Dovecot.
var ErrUnavailable = errors.New("dovecot auth unavailable")

// Client talks to one Dovecot auth service.
type Client struct {
	// AuthSocket and UserdbSocket are "unix:/path" or "tcp:HOST:PORT".
	AuthSocket   string
	UserdbSocket string
	// Service is the service name Dovecot sees ("smtp").
	Service string
	// Timeout bounds one request (default 10 s).
	Timeout time.Duration

	ids atomic.Uint32
}

func (c *Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 10 * time.Second
	}
	return c.Timeout
}

func (c *Client) service() string {
	if c.Service == "" {
		return "smtp"
	}
	return c.Service
}

// dial connects to "unix:/path" or "tcp:HOST:PORT".
func dial(ctx context.Context, spec string, timeout time.Duration) (net.Conn, *bufio.Reader, error) {
	network, addr := "unix", ""
	switch {
	case strings.HasPrefix(spec, "unix:"):
		addr = strings.TrimPrefix(spec, "unix:")
	case strings.HasPrefix(spec, "tcp:"):
		network, addr = "tcp", strings.TrimPrefix(spec, "tcp:")
	default:
		return nil, nil, fmt.Errorf("%w: bad socket %q", ErrUnavailable, spec)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	dl := time.Now().Add(timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
		dl = cd
	}
	conn.SetDeadline(dl)
	return conn, bufio.NewReader(conn), nil
}

// escape applies Dovecot's tab escaping to a parameter value.
func escape(s string) string {
	if !strings.ContainsAny(s, "\x01\t\r\n") {
		return s
	}
	r := strings.NewReplacer("\x01", "\x011", "\t", "\x01t", "\r", "\x01r", "\n", "\x01n")
	return r.Replace(s)
}

// readLine reads one LF-terminated line split at tabs.
func readLine(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if len(line) > 64<<10 {
		return nil, fmt.Errorf("%w: line too long", ErrUnavailable)
	}
	return strings.Split(strings.TrimRight(line, "\r\n"), "\t"), nil
}

// Authenticate checks user's password with AUTH PLAIN. It implements the
// SMTP server's Authenticator.
func (c *Client) Authenticate(ctx context.Context, user, password string) (bool, error) {
	if c.AuthSocket == "" {
		return false, fmt.Errorf("%w: no auth socket", ErrUnavailable)
	}
	if strings.ContainsAny(user, "\x00") || strings.ContainsAny(password, "\x00") {
		return false, nil
	}
	conn, r, err := dial(ctx, c.AuthSocket, c.timeout())
	if err != nil {
		return false, err
	}
	defer conn.Close()
	// Handshake: we send our version and process ID; the server sends
	// VERSION, MECH lines, SPID, CUID, COOKIE and DONE.
	if _, err := fmt.Fprintf(conn, "VERSION\t1\t2\nCPID\t%d\n", os.Getpid()); err != nil {
		return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	plain := false
	for {
		f, err := readLine(r)
		if err != nil {
			return false, err
		}
		switch f[0] {
		case "VERSION":
			if len(f) < 2 || f[1] != "1" {
				return false, fmt.Errorf("%w: auth protocol version %v, want 1.x", ErrUnavailable, f[1:])
			}
		case "MECH":
			if len(f) > 1 && strings.EqualFold(f[1], "PLAIN") {
				plain = true
			}
		}
		if f[0] == "DONE" {
			break
		}
	}
	if !plain {
		return false, fmt.Errorf("%w: the auth service offers no PLAIN mechanism", ErrUnavailable)
	}
	id := c.ids.Add(1)
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	// "secured": the SMTP server offers AUTH only over TLS. "no-penalty":
	// the SMTP server throttles guessing itself (per client address),
	// while to Dovecot every request comes from this one process.
	if _, err := fmt.Fprintf(conn, "AUTH\t%d\tPLAIN\tservice=%s\tsecured\tno-penalty\tnologin\tresp=%s\n", id, escape(c.service()), resp); err != nil {
		return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	for {
		f, err := readLine(r)
		if err != nil {
			return false, err
		}
		if len(f) < 2 || f[1] != fmt.Sprint(id) {
			continue // not ours
		}
		switch f[0] {
		case "OK":
			return true, nil
		case "FAIL":
			for _, p := range f[2:] {
				if p == "temp" {
					return false, fmt.Errorf("%w: temporary failure", ErrUnavailable)
				}
			}
			return false, nil
		case "CONT":
			// PLAIN with an initial response needs no continuation.
			return false, fmt.Errorf("%w: unexpected CONT", ErrUnavailable)
		default:
			return false, fmt.Errorf("%w: unexpected reply %q", ErrUnavailable, f[0])
		}
	}
}

// UserExists asks the userdb whether addr is a user (USER lookup). It
// implements directory.Userdb.
func (c *Client) UserExists(ctx context.Context, addr string) (bool, error) {
	if c.UserdbSocket == "" {
		return false, fmt.Errorf("%w: no userdb socket", ErrUnavailable)
	}
	conn, r, err := dial(ctx, c.UserdbSocket, c.timeout())
	if err != nil {
		return false, err
	}
	defer conn.Close()
	id := c.ids.Add(1)
	if _, err := fmt.Fprintf(conn, "VERSION\t1\t0\nUSER\t%d\t%s\tservice=%s\n", id, escape(addr), escape(c.service())); err != nil {
		return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	for {
		f, err := readLine(r)
		if err != nil {
			return false, err
		}
		switch f[0] {
		case "VERSION":
			if len(f) < 2 || f[1] != "1" {
				return false, fmt.Errorf("%w: master protocol version %v, want 1.x", ErrUnavailable, f[1:])
			}
			continue
		case "SPID":
			continue
		}
		if len(f) < 2 || f[1] != fmt.Sprint(id) {
			continue
		}
		switch f[0] {
		case "USER":
			return true, nil
		case "NOTFOUND":
			return false, nil
		case "FAIL":
			return false, fmt.Errorf("%w: userdb lookup failed: %s", ErrUnavailable, strings.Join(f[2:], " "))
		default:
			return false, fmt.Errorf("%w: unexpected reply %q", ErrUnavailable, f[0])
		}
	}
}
