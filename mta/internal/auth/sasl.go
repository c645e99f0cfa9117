package auth

import (
	"errors"

	"github.com/emersion/go-sasl"
)

// ErrAuthFailed is what a SASL exchange returns for bad credentials.
var ErrAuthFailed = errors.New("authentication failed")

// ErrAuthUnavailable marks errors of a password store that could not
// answer; the SMTP server replies 454 (try again later) to them.
var ErrAuthUnavailable = errors.New("authentication service unavailable")

// Check checks credentials: nil for good ones, ErrAuthFailed for bad
// ones, any other error when they could not be checked.
type Check func(user, pass string) error

// PlainServer returns a SASL PLAIN server (RFC 4616) that checks against
// check and calls done with the authenticated user.
func PlainServer(check Check, done func(user string)) sasl.Server {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return ErrAuthFailed
		}
		if err := check(username, password); err != nil {
			return err
		}
		done(username)
		return nil
	})
}

// loginServer is the server side of the LOGIN mechanism: the server asks
// "Username:" then "Password:" and the client answers each.
type loginServer struct {
	step     int
	username string
	check    Check
	done     func(user string)
}

// LoginServer returns a SASL LOGIN server.
func LoginServer(check Check, done func(user string)) sasl.Server {
	return &loginServer{check: check, done: done}
}

func (s *loginServer) Next(response []byte) (challenge []byte, finished bool, err error) {
	switch s.step {
	case 0:
		s.step++
		if len(response) > 0 { // initial response carries the user name
			s.username = string(response)
			s.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		s.username = string(response)
		s.step++
		return []byte("Password:"), false, nil
	case 2:
		s.step++
		if err := s.check(s.username, string(response)); err != nil {
			return nil, true, err
		}
		s.done(s.username)
		return nil, true, nil
	default:
		return nil, true, sasl.ErrUnexpectedClientResponse
	}
}
