// Package smtpd is posthorn's SMTP server (RFC 5321) on top of
// emersion/go-smtp: the MX listener (STARTTLS, RFC 3207), submission (RFC
// 6409, AUTH required, RFC 4954) and implicit-TLS submission (RFC 8314).
// It advertises PIPELINING (RFC 2920), 8BITMIME (RFC 6152), SMTPUTF8 (RFC
// 6531), SIZE (RFC 1870), ENHANCEDSTATUSCODES (RFC 2034/3463), DSN (RFC
// 3461) and CHUNKING (RFC 3030). It checks recipients of local domains at
// RCPT, never relays for strangers, enforces the operator's limits, refuses
// SMTP smuggling (bare CR/LF in DATA), adds a Received header, and answers
// 250 only after the queue has the message on disk.
//
// Every error leaves through reply (reply.go), the one place where errors
// become SMTP replies.
package smtpd

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/mta/internal/milter"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/queue"
)

// Kind is the role of a listener.
type Kind int

const (
	// MX accepts mail for local domains from anyone and relays for client
	// networks; STARTTLS offered, no AUTH.
	MX Kind = iota
	// Submission requires AUTH, which requires STARTTLS first.
	Submission
	// Submissions is Submission over implicit TLS.
	Submissions
)

func (k Kind) String() string {
	return [...]string{"mx", "submission", "submissions"}[k]
}

func (k Kind) authAllowed() bool  { return k != MX }
func (k Kind) authRequired() bool { return k != MX }

// Acceptor takes a message whose envelope is complete: it reserves a queue
// ID (for the Received header), then enqueues durably. The daemon's
// acceptor is where inbound plugin hooks run.
type Acceptor interface {
	NewID() string
	Accept(m Meta, env *queue.Envelope, body io.Reader) (string, error)
}

// Meta tells the acceptor about the session a message came in on.
type Meta struct {
	Kind    Kind
	Trusted bool // client in client_networks
	TLS     bool
	// Milters is the session's conversation with the listener's milters,
	// which have seen the envelope; the acceptor shows them the message.
	// Nil without milters.
	Milters *milter.Session
}

// Authenticator checks SMTP AUTH credentials: the directory or Dovecot.
// An error means the credentials could not be checked (454, try later).
type Authenticator interface {
	Authenticate(ctx context.Context, user, password string) (bool, error)
}

// Config is what a listener needs; the daemon builds it from conf.Config.
type Config struct {
	Kind     Kind
	Address  string
	Hostname string
	TLS      *tls.Config // nil disables STARTTLS (and so AUTH)
	Limits   conf.SMTP
	Router   *router.Router
	Users    Authenticator // nil: no AUTH
	Acceptor Acceptor
	Logger   *slog.Logger
	// AuthFailDelay slows down password guessing; default 1s.
	AuthFailDelay time.Duration
	// Listener, if set, is used instead of binding Address: the daemon
	// hands the same socket to the listener of a reloaded config.
	Listener net.Listener
	// Milters see every SMTP stage of the listener's sessions; nil: none.
	Milters *milter.Chain
	// Guard bounds and throttles AUTH; one for all listeners. nil: a
	// guard with default limits for this listener alone.
	Guard *AuthGuard
	// Postmaster is where "RCPT TO:<Postmaster>" without a domain goes
	// (RFC 5321 §4.5.1); empty refuses it.
	Postmaster string
	// FreeSpace reports the free bytes in the spool; with MinFreeSpace >
	// 0, MAIL FROM is answered 452 4.3.1 while it is below MinFreeSpace.
	FreeSpace    func() (uint64, error)
	MinFreeSpace int64
	// Sessions counts the sessions for the limits; nil: a count of this
	// listener's own. The daemon shares one across a reload's handoff.
	Sessions *SessionCount
}

// Listener is one running SMTP listener.
type Listener struct {
	name          string
	kind          Kind
	hostname      string
	router        *router.Router
	users         Authenticator
	acceptor      Acceptor
	log           *slog.Logger
	trusted       []*net.IPNet
	maxSize       int64
	maxRcpts      int
	maxLine       int
	authFailDelay time.Duration
	milters       *milter.Chain
	guard         *AuthGuard
	postmaster    string
	freeSpace     func() (uint64, error)
	minFree       int64

	srv *smtp.Server
	ln  net.Listener
}

// Listen binds the listener's address; Serve runs it.
func Listen(cfg Config) (*Listener, error) {
	l := &Listener{
		name: cfg.Kind.String(), kind: cfg.Kind, hostname: cfg.Hostname,
		router: cfg.Router, users: cfg.Users, acceptor: cfg.Acceptor, log: cfg.Logger,
		maxSize: cfg.Limits.MaxMessageSize.Bytes(), maxRcpts: cfg.Limits.MaxRecipients,
		maxLine: cfg.Limits.MaxLineLength, authFailDelay: cfg.AuthFailDelay, milters: cfg.Milters,
		guard: cfg.Guard, postmaster: cfg.Postmaster, freeSpace: cfg.FreeSpace, minFree: cfg.MinFreeSpace,
	}
	if l.guard == nil {
		l.guard = NewAuthGuard(GuardConfig{})
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	l.log = l.log.With("listener", l.name)
	if l.authFailDelay == 0 {
		l.authFailDelay = time.Second
	}
	for _, c := range cfg.Limits.ClientNetworks {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, fmt.Errorf("client network %q: %w", c, err)
		}
		l.trusted = append(l.trusted, n)
	}
	if cfg.Kind == Submissions && cfg.TLS == nil {
		return nil, fmt.Errorf("%s listener needs a TLS certificate", l.name)
	}

	var starttls *tls.Config
	if cfg.Kind != Submissions {
		starttls = cfg.TLS
	}
	l.srv = newServer(l, starttls)

	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Address); err != nil {
			return nil, err
		}
	}
	lim := &limitListener{Listener: ln,
		perIP: cfg.Limits.MaxSessionsPerIP, max: cfg.Limits.MaxSessions, reserve: cfg.Limits.ReservedSessions,
		rate: cfg.Limits.MaxConnectionRatePerIP, cmdTimeout: cfg.Limits.CommandTimeout.D(),
		dataTimeout: cfg.Limits.DataTimeout.D(), maxCmdBytes: maxCommandBytes, plaintext: cfg.Kind != Submissions,
		privileged: func(ip net.IP) bool { return l.trustedNet(ip) || l.guard.Privileged(ip) },
		blocked:    func(ip net.IP) bool { return cfg.Kind != MX && !l.trustedNet(ip) && l.guard.Blocked(ip) },
		onReject: func(reason, client string) {
			metrics.SMTPRefused.WithLabelValues(l.name, reason).Inc()
			l.log.Warn("connection refused", "client", client, "reason", reason)
		},
		onCount: func(open, peak int) {
			metrics.SMTPConnections.WithLabelValues(l.name).Set(float64(open))
			metrics.SMTPConnectionsPeak.WithLabelValues(l.name).Set(float64(peak))
		},
		now: time.Now, SessionCount: cfg.Sessions}
	if lim.SessionCount == nil {
		lim.SessionCount = NewSessionCount()
	}
	l.ln = lim
	if cfg.Kind == Submissions {
		l.ln = tls.NewListener(lim, cfg.TLS)
	}
	return l, nil
}

// newServer configures go-smtp for listener l; tlsConf enables STARTTLS.
func newServer(l *Listener, tlsConf *tls.Config) *smtp.Server {
	s := smtp.NewServer(l)
	s.Domain = l.hostname
	s.MaxMessageBytes = l.maxSize
	s.MaxRecipients = l.maxRcpts
	// go-smtp's line limit applies to message data too; timeoutConn
	// bounds command lines instead (maxCommandBytes) and checkedReader
	// the operator's data line limit.
	s.MaxLineLength = 0
	// Our copy of go-smtp (third_party/go-smtp) passes bare CRs on to
	// checkedReader, which refuses them at once; with this its DATA
	// reader refuses them too, once the end line has come.
	s.RejectBareNewlines = true
	s.EnableSMTPUTF8 = true
	s.EnableDSN = true
	// REQUIRETLS (RFC 8689) is advertised only on TLS sessions.
	s.EnableREQUIRETLS = true
	s.AllowInsecureAuth = false
	s.ErrorLog = slogPrinter{l.log}
	s.TLSConfig = tlsConf
	return s
}

// maxCommandBytes is how much a client may send in command mode before
// the server has replied: far above any command line (RFC 5321 allows 512
// octets, AUTH lines are longer), plus TLS records and read-ahead.
const maxCommandBytes = 256 << 10

// checkSpace refuses a transaction early while the spool is low on space
// (Postfix's queue_minfree), rather than after the whole message came.
func (l *Listener) checkSpace() error {
	if l.minFree <= 0 || l.freeSpace == nil {
		return nil
	}
	free, err := l.freeSpace()
	if err != nil {
		l.log.Error("spool free space", "err", err)
		return nil
	}
	metrics.SpoolFreeBytes.Set(float64(free))
	if free < uint64(l.minFree) {
		metrics.LowSpaceRefusals.WithLabelValues(l.name).Inc()
		return errLowSpace
	}
	return nil
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Serve runs until Close.
func (l *Listener) Serve() error { return l.srv.Serve(l.ln) }

// Close stops accepting and closes open sessions.
func (l *Listener) Close() error { return l.srv.Close() }

// Shutdown stops accepting and waits until the open sessions have ended
// by themselves, or ctx is done (then Close ends the rest).
func (l *Listener) Shutdown(ctx context.Context) error { return l.srv.Shutdown(ctx) }

func (l *Listener) trustedNet(ip net.IP) bool {
	for _, n := range l.trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// NewSession implements smtp.Backend.
func (l *Listener) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ip := net.ParseIP(hostOf(c.Conn().RemoteAddr()))
	metrics.SMTPSessions.WithLabelValues(l.name).Inc()
	metrics.SMTPActive.WithLabelValues(l.name).Inc()
	s := &session{l: l, conn: c, ip: ip, tc: underlying(c.Conn()),
		log: l.log.With("client", ip.String(), "helo", sanitizeHelo(c.Hostname()))}
	return s, nil
}

// accept reserves the queue ID, completes the Received header with it and
// hands the message to the acceptor.
func (l *Listener) accept(m Meta, env *queue.Envelope, received []byte, body io.Reader) (string, error) {
	if env.ID == "" {
		env.ID = l.acceptor.NewID()
	}
	hdr := []byte(replaceID(string(received), env.ID))
	return l.acceptor.Accept(m, env, io.MultiReader(bytesReader(hdr), body))
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) { p.log.Debug(fmt.Sprintf(format, v...)) }
func (p slogPrinter) Println(v ...any)               { p.log.Debug(fmt.Sprint(v...)) }

// Kind is the listener's role.
func (l *Listener) Kind() Kind { return l.kind }
