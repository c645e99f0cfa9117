package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/auth"
	"github.com/posthorn/posthorn/mta/internal/envaddr"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/mta/internal/milter"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/queue"
)

// session is one SMTP conversation (go-smtp creates it at EHLO/HELO).
type session struct {
	l    *Listener
	conn *smtp.Conn
	log  *slog.Logger
	ip   net.IP
	tc   *timeoutConn

	authUser string
	authMech string

	ms            *milter.Session // nil without milters, or before the first MAIL
	queueID       string          // reserved at MAIL when milters run
	authThrottled bool            // the last AUTH was refused unchecked

	// current transaction
	from     string
	mailOpts smtp.MailOptions
	rcpts    []*queue.Recipient
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

func (s *session) tlsState() (tls.ConnectionState, bool) { return s.conn.TLSConnectionState() }

func (s *session) reject(stage string, err error) error {
	err = reply(s.log, err)
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 400 {
		metrics.Rejected.WithLabelValues(s.l.name, stage, fmt.Sprint(se.Code)).Inc()
		s.log.Info("rejected", "stage", stage, "code", se.Code, "text", se.Message)
	}
	return err
}

// AuthMechanisms offers PLAIN and LOGIN on the submission listeners only;
// go-smtp offers AUTH only after TLS.
func (s *session) AuthMechanisms() []string {
	if !s.l.kind.authAllowed() || s.l.users == nil {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if !s.l.kind.authAllowed() || s.l.users == nil {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	if _, ok := s.tlsState(); !ok {
		return nil, s.reject("auth", errNeedTLS)
	}
	check := func(user, pass string) error {
		var checkErr error
		verdict, fails := s.l.guard.Check(s.ip, user, func() (bool, error) {
			ok, err := s.l.users.Authenticate(context.Background(), user, pass)
			checkErr = err
			return ok, err
		})
		switch verdict {
		case authOK:
			return nil
		case authUnavailable:
			if checkErr == nil {
				checkErr = ErrGuardUnavailable
			}
			s.log.Warn("authentication could not be checked", "user", sanitizeHelo(user), "err", checkErr)
			metrics.AuthFailures.WithLabelValues(s.l.name, "unavailable").Inc()
			return fmt.Errorf("%w: %v", auth.ErrAuthUnavailable, checkErr)
		}
		reason := "bad_credentials"
		if verdict == authThrottled {
			reason = "throttled"
			s.authThrottled = true
		}
		// One line per failure, for fail2ban: the client= and user= fields
		// come from s.log.
		s.log.Warn("authentication failed", "user", sanitizeHelo(user), "reason", reason, "failures", fails)
		metrics.AuthFailures.WithLabelValues(s.l.name, reason).Inc()
		// Throttled attempts wait too: it costs a sleeping goroutine, not
		// a hash, and slows a flood of them down (Postfix's
		// smtpd_error_sleep_time).
		time.Sleep(s.l.authFailDelay)
		return auth.ErrAuthFailed
	}
	done := func(user string) {
		s.authUser = strings.ToLower(user)
		s.authMech = mech
		s.log = s.log.With("user", s.authUser)
		s.log.Info("authenticated", "mechanism", mech)
	}
	var srv sasl.Server
	switch mech {
	case sasl.Plain:
		srv = auth.PlainServer(check, done)
	case sasl.Login:
		srv = auth.LoginServer(check, done)
	default:
		return nil, smtp.ErrAuthUnknownMechanism
	}
	s.authThrottled = false
	return authErrors{srv, s}, nil
}

// authErrors turns a failed SASL exchange into 535 instead of go-smtp's
// 454, or into 454 4.7.0 when the password was not even checked because
// the client or the account is throttled or the password store (directory,
// Dovecot) could not answer.
type authErrors struct {
	sasl.Server
	s *session
}

func (a authErrors) Next(resp []byte) ([]byte, bool, error) {
	c, done, err := a.Server.Next(resp)
	if err != nil {
		if a.s.authThrottled {
			// Nothing more to do here for a client that may not log
			// in: hang up, which frees its session (go-smtp writes
			// the reply through timeoutConn, which then closes).
			if a.s.tc != nil {
				a.s.tc.closeAfterReply()
			}
			return c, done, errAuthThrottled
		}
		if errors.Is(err, auth.ErrAuthUnavailable) {
			return c, done, errAuthTemp
		}
		return c, done, errAuthFailed
	}
	return c, done, nil
}

func (s *session) trusted() bool { return s.l.trustedNet(s.ip) }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.Reset()
	if s.l.kind.authRequired() && s.authUser == "" {
		return s.reject("mail", errAuthRequired)
	}
	if err := checkAddress(from, opts.UTF8); err != nil {
		return s.reject("mail", err)
	}
	if err := s.l.checkSpace(); err != nil {
		return s.reject("mail", err)
	}
	if s.authUser != "" && !s.trusted() {
		if owns, err := s.l.router.Owns(s.authUser, from); err != nil {
			return s.reject("mail", err)
		} else if !owns {
			return s.reject("mail", errSenderNotOwn)
		}
	}
	if opts.Size > 0 && s.l.maxSize > 0 && opts.Size > s.l.maxSize {
		return s.reject("mail", errTooBig)
	}
	if opts.RequireTLS {
		if _, ok := s.tlsState(); !ok {
			return s.reject("mail", errRequireTLS)
		}
	}
	if err := s.milterMail(from, opts); err != nil {
		return s.reject("mail", err)
	}
	s.from = from
	s.mailOpts = *opts
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.l.maxRcpts > 0 && len(s.rcpts) >= s.l.maxRcpts {
		return s.reject("rcpt", errTooManyRcpts)
	}
	if strings.EqualFold(to, "postmaster") && s.l.postmaster != "" {
		// "RCPT TO:<Postmaster>" without a domain (RFC 5321 §4.5.1).
		to = s.l.postmaster
	}
	if err := checkAddress(to, s.mailOpts.UTF8); err != nil || to == "" {
		if err == nil {
			err = errBadAddress
		}
		return s.reject("rcpt", err)
	}
	if s.l.router.IsLocal(to) {
		if _, _, ok := s.l.router.SecureAlias(to); ok {
			if _, isTLS := s.tlsState(); !isTLS {
				// A secure alias takes mail over TLS only.
				return s.reject("rcpt", errNeedTLS)
			}
		}
		if err := s.l.router.Check(to); err != nil {
			if errors.Is(err, router.ErrNoSuchUser) {
				return s.reject("rcpt", errNoSuchUser)
			}
			return s.reject("rcpt", err)
		}
	} else if s.authUser == "" && !s.trusted() {
		return s.reject("rcpt", errRelayDenied)
	}
	if err := s.milterRcpt(to, opts); err != nil {
		return s.reject("rcpt", err)
	}
	r := &queue.Recipient{Addr: to}
	for _, n := range opts.Notify {
		r.Notify = append(r.Notify, string(n))
	}
	if opts.OriginalRecipient != "" {
		r.ORcpt = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
	}
	s.rcpts = append(s.rcpts, r)
	return nil
}

// checkAddress refuses addresses a relay must not pass on because they
// cannot be written to the next hop as one path (envaddr), and non-ASCII
// without SMTPUTF8 (RFC 6531).
func checkAddress(addr string, utf8Allowed bool) error {
	switch envaddr.Check(addr, utf8Allowed) {
	case nil:
		return nil
	case envaddr.ErrNeedUTF8:
		return errNoUTF8
	default:
		return errBadAddress
	}
}

func (s *session) Data(r io.Reader) error {
	start := time.Now()
	if s.tc != nil {
		// Until go-smtp resets the session after its reply: that
		// includes draining the rest of the data after an error.
		s.tc.setData(true)
	}
	env, err := s.envelope()
	if err != nil {
		return s.reject("data", err)
	}
	body := &checkedReader{r: r, maxLine: s.l.maxLine}
	_, isTLS := s.tlsState()
	env.ID = s.queueID
	id, err := s.l.accept(Meta{Kind: s.l.kind, Trusted: s.trusted(), TLS: isTLS, Milters: s.ms}, env, s.received(env), body)
	if err != nil {
		if errors.Is(err, smtp.ErrDataTooLarge) {
			return s.reject("data", errTooBig)
		}
		return s.reject("data", err)
	}
	metrics.Accepted.WithLabelValues(s.l.name).Inc()
	metrics.AcceptLatency.Observe(time.Since(start).Seconds())
	s.log.Info("queued", "queue_id", id, "from", env.From, "rcpts", len(env.Recipients), "size", body.n)
	// go-smtp writes an *SMTPError's code and text as the reply, which is
	// how the queue ID reaches the client, as Postfix does.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id}
}

// envelope builds the queue envelope, expanding aliases now so that every
// final recipient has its own state in the queue (Postfix's cleanup does
// the same); the original address is kept as ORCPT.
func (s *session) envelope() (*queue.Envelope, error) {
	env := &queue.Envelope{
		From:       s.from,
		EnvID:      s.mailOpts.EnvelopeID,
		SMTPUTF8:   s.mailOpts.UTF8,
		RequireTLS: s.mailOpts.RequireTLS,
		BodyType:   string(s.mailOpts.Body),
		AuthUser:   s.authUser,
		ClientAddr: s.ip.String(),
		ClientHelo: s.conn.Hostname(),
	}
	switch s.mailOpts.Return {
	case smtp.DSNReturnFull:
		env.Ret = "FULL"
	case smtp.DSNReturnHeaders:
		env.Ret = "HDRS"
	}
	rcpts, err := s.l.router.ExpandRecipients(s.rcpts)
	if err != nil {
		return nil, err
	}
	env.Recipients = rcpts
	if len(env.Recipients) == 0 {
		return nil, errNoSuchUser
	}
	return env, nil
}

// received builds the Received header (RFC 5321 §4.4) with the protocol
// keyword of RFC 3848 / RFC 6531 and the TLS version and cipher as a comment.
func (s *session) received(env *queue.Envelope) []byte {
	proto := "ESMTP"
	if env.SMTPUTF8 {
		proto = "UTF8SMTP"
	}
	cs, isTLS := s.tlsState()
	if isTLS {
		proto += "S"
	}
	if s.authUser != "" {
		proto += "A"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n", sanitizeHelo(s.conn.Hostname()), s.ip)
	if isTLS {
		fmt.Fprintf(&b, "\t(using %s with cipher %s)\r\n", tlsVersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
	}
	fmt.Fprintf(&b, "\tby %s (Posthorn) with %s id %s", s.l.hostname, proto, "{ID}")
	if len(env.Recipients) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", env.Recipients[0].Addr)
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", time.Now().Format(time.RFC1123Z))
	return []byte(b.String())
}

// sanitizeHelo keeps a client's HELO argument from breaking the header.
func sanitizeHelo(h string) string {
	h = strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || r == '(' || r == ')' || r == '\\' {
			return -1
		}
		return r
	}, h)
	if len(h) > 255 {
		h = h[:255]
	}
	if h == "" {
		h = "unknown"
	}
	return h
}

func (s *session) Reset() {
	if s.tc != nil {
		s.tc.setData(false)
	}
	s.from = ""
	s.mailOpts = smtp.MailOptions{}
	s.rcpts = nil
	s.queueID = ""
	if s.ms != nil {
		s.ms.Abort()
	}
}

func (s *session) Logout() error {
	if s.ms != nil {
		s.ms.Close()
	}
	metrics.SMTPActive.WithLabelValues(s.l.name).Dec()
	return nil
}

// tlsVersionName names a TLS version the way Postfix logs it ("TLSv1.3").
func tlsVersionName(v uint16) string {
	return strings.Replace(tls.VersionName(v), "TLS 1.", "TLSv1.", 1)
}
