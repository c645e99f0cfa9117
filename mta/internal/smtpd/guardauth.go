package smtpd

import (
	"context"
	"net"
)

// AuthenticateFrom checks user's password for a client at ip through the
// guard, exactly as SMTP AUTH does, for other login forms (the
// self-service page): failures count toward the same limits, and a
// throttled client is refused without a check (throttled true). err is
// set when the password could not be checked at all.
func (g *AuthGuard) AuthenticateFrom(ctx context.Context, a Authenticator, ip net.IP, user, password string) (ok, throttled bool, err error) {
	var checkErr error
	verdict, _ := g.Check(ip, user, func() (bool, error) {
		ok, err := a.Authenticate(ctx, user, password)
		checkErr = err
		return ok, err
	})
	switch verdict {
	case authOK:
		return true, false, nil
	case authThrottled:
		return false, true, nil
	case authUnavailable:
		if checkErr == nil {
			checkErr = ErrGuardUnavailable
		}
		return false, false, checkErr
	}
	return false, false, nil
}
