package auth

import (
	"errors"

	"github.com/emersion/go-sasl"
)

// ErrAuthFailed is what a SASL exchange returns for bad credentials.
var ErrAuthFailed = errors.New("authentication failed")

// PlainServer returns a SASL PLAIN server (RFC 4616) that checks against
// check and calls done with the authenticated user.
func PlainServer(check func(user, pass string) bool, done func(user string)) sasl.Server {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return ErrAuthFailed
		}
		if !check(username, password) {
			return ErrAuthFailed
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
	check    func(user, pass string) bool
	done     func(user string)
}

// LoginServer returns a SASL LOGIN server.
func LoginServer(check func(user, pass string) bool, done func(user string)) sasl.Server {
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
		if !s.check(s.username, string(response)) {
			return nil, true, ErrAuthFailed
		}
		s.done(s.username)
		return nil, true, nil
	default:
		return nil, true, sasl.ErrUnexpectedClientResponse
	}
}
