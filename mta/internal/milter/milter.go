// Package milter is posthorn's milter client: it shows mail to the filters
// ISPs already run (rspamd, clamav-milter, OpenDKIM...) over the Sendmail
// milter protocol, version 6, the way Postfix does, and honours what they
// answer.
//
// A Chain is the ordered list of milters for one kind of submission (the
// MX listener, authenticated submission, local submission). An SMTP
// session opens a Session lazily at its first MAIL: one connection per
// milter (TCP or Unix socket) that lives as long as the SMTP session and
// sees connect, HELO, MAIL, each RCPT, then DATA and the message exactly as
// the client sent it (headers one by one, the body in chunks, end of
// message), each stage with Postfix's macros (j, _, {daemon_name},
// {client_addr}, {tls_version}, i, {auth_authen}, {mail_addr},
// {rcpt_addr}...). The first milter that refuses a stage decides the
// reply; a milter that accepts is left alone for the rest of the message
// (or connection, when it accepts at connect or HELO).
//
// At the end of the message every action is honoured: reject and tempfail
// (with the milter's own reply when it gives one), discard (250 to the
// client, nothing queued), quarantine (queued on hold), header changes,
// body replacement, sender change, recipients added or removed, progress.
// Milters run one after the other, each on the message as the previous one
// left it.
//
// Every milter has connect, command and content timeouts, and a default
// action for when it is down, slow or speaks garbage: "tempfail" (451
// 4.7.1 for this and every later command of the session, as Postfix's
// milter_default_action) or "accept" (carry on without it).
//
// The protocol is spoken by github.com/emersion/go-milter's client, with
// these gaps filled here: it has no SMFIC_DATA command (we send it on the
// same connection), one timeout for everything (we switch per stage through
// the connection), no count of progress packets (we watch the framing),
// and it cannot parse SMFIR_SKIP or SMFIR_ADDRCPT_PAR, nor use a milter's
// macro list (SMFIF_SETSYMLIST) — so those are not offered in the option
// negotiation and a milter does not send them.
package milter

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/metrics"
)

// What we offer in the option negotiation: every action go-milter can
// parse, and every step a milter may switch off or not reply to.
const (
	offerActions = gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt | gomilter.OptRemoveRcpt |
		gomilter.OptChangeHeader | gomilter.OptQuarantine | gomilter.OptChangeFrom
	offerProtocol = gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom | gomilter.OptNoRcptTo |
		gomilter.OptNoBody | gomilter.OptNoHeaders | gomilter.OptNoEOH | gomilter.OptNoUnknown | gomilter.OptNoData |
		gomilter.OptNoHeaderReply | gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoMailReply |
		gomilter.OptNoRcptReply | gomilter.OptNoDataReply | gomilter.OptNoUnknownReply | gomilter.OptNoEOHReply |
		gomilter.OptNoBodyReply
)

// Milter is one configured milter.
type Milter struct {
	cfg           conf.Milter
	network, addr string
}

// Name is the milter's name from the config.
func (m *Milter) Name() string { return m.cfg.Name }

// Chain is the ordered list of milters for one kind of submission.
type Chain struct {
	milters []*Milter
	log     *slog.Logger
}

// NewChain makes the chain of the [[milter]]s named in names (validated
// by conf), or nil when names is empty.
func NewChain(cfg *conf.Config, names []string, log *slog.Logger) *Chain {
	if len(names) == 0 {
		return nil
	}
	if log == nil {
		log = slog.Default()
	}
	c := &Chain{log: log}
	for _, n := range names {
		mc := cfg.Milter(n)
		if mc == nil {
			continue
		}
		network, addr, _ := conf.MilterAddress(mc.Address)
		c.milters = append(c.milters, &Milter{cfg: *mc, network: network, addr: addr})
	}
	return c
}

// Rescans reports whether a milter of the chain wants to see the message
// again after the inbound plugins changed it.
func (c *Chain) Rescans() bool {
	if c == nil {
		return false
	}
	for _, m := range c.milters {
		if m.cfg.RescanAfterPlugins {
			return true
		}
	}
	return false
}

// Info is what milters learn about the client; it becomes the connect and
// HELO commands and Postfix's macros.
type Info struct {
	Hostname   string // j: our host name
	DaemonName string // {daemon_name}: the listener ("mx", "submission", "local")
	DaemonAddr string // {daemon_addr}
	ClientAddr string // {client_addr}: the client's IP address
	ClientPort int    // {client_port}
	ClientName string // {client_name}: its verified name, or "unknown"
	Helo       string // the HELO/EHLO argument
	TLSVersion string // {tls_version}, e.g. "TLSv1.3"; "" without TLS
	Cipher     string // {cipher}
	CipherBits int    // {cipher_bits}
	AuthType   string // {auth_type}: the SASL mechanism
	AuthUser   string // {auth_authen}: the authenticated user
}

// state is where one milter connection stands.
type state int

const (
	stOpen    state = iota // connected, sees the next stage
	stSkipMsg              // accepted (or refused) this message: nothing until the next MAIL
	stDone                 // accepted the connection, or failed with default "accept": left alone
	stFailed               // failed with default "tempfail": every later command tempfails
)

// mconn is one session's connection to one milter.
type mconn struct {
	m    *Milter
	cs   *gomilter.ClientSession
	dc   *deadlineConn
	st   state
	inTx bool // MAIL sent, end of message not yet
}

func (mc *mconn) name() string { return mc.m.cfg.Name }

// Session is one SMTP session's conversation with the milters of a chain.
// Its methods are called from the SMTP session's goroutine, except Close,
// which may come from another one when the server shuts down.
type Session struct {
	c    *Chain
	info Info
	log  *slog.Logger

	busy    sync.Mutex // held while a stage is under way
	connsMu sync.Mutex // guards conns for Close from another goroutine
	conns   []*mconn
	closed  atomic.Bool

	opened     bool
	connReject *Reply // a refusal at connect or HELO: every MAIL gets it

	// the transaction
	queueID  string
	from     string
	fromArgs []string
	rcpts    []rcpt
	discard  string // milter that asked to discard the message

	discardAll string // milter that asked at connect or HELO to discard every message
}

type rcpt struct {
	addr string
	args []string
}

// NewSession starts a session for a client; nothing is sent until Mail.
func (c *Chain) NewSession(info Info, log *slog.Logger) *Session {
	if log == nil {
		log = c.log
	}
	if info.ClientName == "" {
		info.ClientName = "unknown"
	}
	return &Session{c: c, info: info, log: log}
}

// SetTLS records the TLS parameters of the session (sent at HELO).
func (s *Session) SetTLS(version, cipher string, bits int) {
	s.info.TLSVersion, s.info.Cipher, s.info.CipherBits = version, cipher, bits
}

// SetAuth records the authenticated user (sent at MAIL).
func (s *Session) SetAuth(mech, user string) { s.info.AuthType, s.info.AuthUser = mech, user }

// stage runs one protocol step against mc with its metrics.
func (s *Session) stage(mc *mconn, name string, f func() (*gomilter.Action, error)) (*gomilter.Action, error) {
	metrics.MilterCalls.WithLabelValues(mc.name(), name).Inc()
	start := time.Now()
	act, err := f()
	metrics.MilterLatency.WithLabelValues(mc.name(), name).Observe(time.Since(start).Seconds())
	return act, err
}

// fail applies mc's default action after err; it returns the tempfail
// reply, or nil when the milter is to be left out.
func (s *Session) fail(mc *mconn, stage string, err error) error {
	reason := "protocol"
	var ne net.Error
	switch {
	case mc.cs == nil && stage == "connect":
		reason = "connect"
	case errors.As(err, &ne) && ne.Timeout():
		reason = "timeout"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, new(*net.OpError)):
		reason = "io"
	}
	action := mc.m.cfg.DefaultAction
	metrics.MilterFailures.WithLabelValues(mc.name(), reason, action).Inc()
	s.log.Warn("milter failed", "milter", mc.name(), "stage", stage, "reason", reason, "default_action", action,
		"queue_id", s.queueID, "err", err)
	if mc.dc != nil {
		mc.dc.Close()
	}
	mc.inTx = false
	if action == "accept" {
		mc.st = stDone
		return nil
	}
	mc.st = stFailed
	return tempfailReply("")
}

// verdict turns a milter's reply to a stage into what happens next: nil
// to go on, or the *Reply to give. Refusals at connect and HELO are kept
// for every MAIL of the session.
func (s *Session) verdict(mc *mconn, stage string, act *gomilter.Action) error {
	name := mc.name()
	count := func(a string) { metrics.MilterActions.WithLabelValues(name, a).Inc() }
	envStage := stage == "connect" || stage == "helo"
	var r *Reply
	switch act.Code {
	case gomilter.ActContinue:
		count("continue")
		return nil
	case gomilter.ActAccept:
		count("accept")
		s.log.Debug("milter accepted", "milter", name, "stage", stage, "queue_id", s.queueID)
		if envStage {
			mc.st = stDone
		} else {
			mc.st, mc.inTx = stSkipMsg, false
		}
		return nil
	case gomilter.ActDiscard:
		count("discard")
		s.log.Info("milter discards the message", "milter", name, "stage", stage, "queue_id", s.queueID)
		s.discard = name
		if envStage {
			// Discarding at connect or HELO discards every message of
			// the session.
			s.discardAll, mc.st = name, stDone
		} else {
			mc.st, mc.inTx = stSkipMsg, false
		}
		return nil
	case gomilter.ActReject:
		count("reject")
		r = rejectReply(name)
	case gomilter.ActTempFail:
		count("tempfail")
		r = tempfailReply(name)
	case gomilter.ActReplyCode:
		r = parseReply(name, act.SMTPCode, act.SMTPText)
		if r.Temporary() {
			count("tempfail")
		} else {
			count("reject")
		}
	default:
		return s.fail(mc, stage, errors.New("unexpected reply code "+strconv.QuoteRune(rune(act.Code))))
	}
	s.log.Info("milter refused", "milter", name, "stage", stage, "queue_id", s.queueID, "code", r.Code, "text", r.Text)
	if envStage {
		s.connReject = r
		mc.st = stDone
	} else if stage != "rcpt" {
		mc.st, mc.inTx = stSkipMsg, false
	}
	return r
}

// open connects to every milter and runs connect and HELO.
func (s *Session) open() error {
	s.opened = true
	for _, m := range s.c.milters {
		mc := &mconn{m: m}
		d := &dialer{timeout: m.cfg.ConnectTimeout.D(), progress: func() {
			metrics.MilterActions.WithLabelValues(m.cfg.Name, "progress").Inc()
		}}
		cl := gomilter.NewClientWithOptions(m.network, m.addr, gomilter.ClientOptions{
			Dialer: d, ActionMask: offerActions, ProtocolMask: offerProtocol})
		start := time.Now()
		cs, err := cl.Session()
		metrics.MilterCalls.WithLabelValues(m.cfg.Name, "negotiate").Inc()
		metrics.MilterLatency.WithLabelValues(m.cfg.Name, "negotiate").Observe(time.Since(start).Seconds())
		mc.dc = d.conn
		s.connsMu.Lock()
		s.conns = append(s.conns, mc)
		s.connsMu.Unlock()
		if err != nil {
			if r := s.fail(mc, "connect", err); r != nil {
				return r
			}
			continue
		}
		mc.cs = cs
		mc.dc.timeout = m.cfg.CommandTimeout.D()
		s.log.Debug("milter connected", "milter", m.cfg.Name, "actions", uint32(cs.ActionOpts), "protocol", uint32(cs.ProtocolOpts))
		if err := s.connectHelo(mc); err != nil {
			return err
		}
	}
	return nil
}

func (s *Session) connectHelo(mc *mconn) error {
	i := s.info
	family, port, addr := gomilter.FamilyUnknown, uint16(0), ""
	if ip := net.ParseIP(i.ClientAddr); ip != nil {
		family, port, addr = gomilter.FamilyInet, uint16(i.ClientPort), ip.String()
		if ip.To4() == nil {
			family = gomilter.FamilyInet6
		}
	}
	macros := pairs("j", i.Hostname, "_", i.ClientName+" ["+i.ClientAddr+"]", "{daemon_name}", i.DaemonName,
		"{daemon_addr}", i.DaemonAddr, "v", "Posthorn", "{client_addr}", i.ClientAddr,
		"{client_port}", strconv.Itoa(i.ClientPort), "{client_name}", i.ClientName)
	act, err := s.stage(mc, "connect", func() (*gomilter.Action, error) {
		if err := mc.cs.Macros(gomilter.CodeConn, macros...); err != nil {
			return nil, err
		}
		return mc.cs.Conn(i.ClientName, family, port, addr)
	})
	if err != nil {
		return s.fail(mc, "connect", err)
	}
	if err := s.verdict(mc, "connect", act); err != nil || mc.st != stOpen {
		return err
	}
	macros = nil
	if i.TLSVersion != "" {
		macros = pairs("{tls_version}", i.TLSVersion, "{cipher}", i.Cipher, "{cipher_bits}", strconv.Itoa(i.CipherBits))
	}
	act, err = s.stage(mc, "helo", func() (*gomilter.Action, error) {
		if len(macros) > 0 {
			if err := mc.cs.Macros(gomilter.CodeHelo, macros...); err != nil {
				return nil, err
			}
		}
		return mc.cs.Helo(i.Helo)
	})
	if err != nil {
		return s.fail(mc, "helo", err)
	}
	return s.verdict(mc, "helo", act)
}

// pairs keeps the macro name/value pairs whose value is not empty.
func pairs(kv ...string) []string {
	var out []string
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			out = append(out, kv[i], kv[i+1])
		}
	}
	return out
}

// Mail starts a transaction: it connects first if this is the session's
// first MAIL. queueID is the ID the message will have (macro i). An error
// is a *Reply refusing the MAIL command.
func (s *Session) Mail(queueID, from string, args []string) error {
	s.busy.Lock()
	defer s.busy.Unlock()
	if s.closed.Load() {
		return tempfailReply("")
	}
	s.abort()
	s.queueID, s.from, s.fromArgs, s.rcpts, s.discard = queueID, from, args, nil, s.discardAll
	if !s.opened {
		if err := s.open(); err != nil {
			return err
		}
	}
	if s.connReject != nil {
		return s.connReject
	}
	for _, mc := range s.conns {
		if mc.st == stFailed {
			return tempfailReply("")
		}
	}
	for _, mc := range s.conns {
		if err := s.mail(mc); err != nil {
			return err
		}
	}
	return nil
}

func (s *Session) mail(mc *mconn) error {
	if mc.st == stSkipMsg {
		mc.st = stOpen
	}
	if mc.st != stOpen {
		return nil
	}
	macros := pairs("i", s.queueID, "{auth_type}", s.info.AuthType, "{auth_authen}", s.info.AuthUser, "{mail_addr}", s.from)
	act, err := s.stage(mc, "mail", func() (*gomilter.Action, error) {
		if err := mc.cs.Macros(gomilter.CodeMail, macros...); err != nil {
			return nil, err
		}
		return mc.cs.Mail(s.from, s.fromArgs)
	})
	if err != nil {
		return s.fail(mc, "mail", err)
	}
	mc.inTx = true
	return s.verdict(mc, "mail", act)
}

// Rcpt shows one recipient to the milters; an error is a *Reply refusing
// this recipient.
func (s *Session) Rcpt(to string, args []string) error {
	s.busy.Lock()
	defer s.busy.Unlock()
	if s.closed.Load() {
		return tempfailReply("")
	}
	for _, mc := range s.conns {
		if err := s.rcpt(mc, to, args); err != nil {
			return err
		}
	}
	s.rcpts = append(s.rcpts, rcpt{to, args})
	return nil
}

func (s *Session) rcpt(mc *mconn, to string, args []string) error {
	if mc.st != stOpen {
		if mc.st == stFailed {
			return tempfailReply("")
		}
		return nil
	}
	act, err := s.stage(mc, "rcpt", func() (*gomilter.Action, error) {
		if err := mc.cs.Macros(gomilter.CodeRcpt, pairs("i", s.queueID, "{rcpt_addr}", to)...); err != nil {
			return nil, err
		}
		return mc.cs.Rcpt(to, args)
	})
	if err != nil {
		return s.fail(mc, "rcpt", err)
	}
	return s.verdict(mc, "rcpt", act)
}

// Abort ends an unfinished transaction (RSET, a failed DATA, a new MAIL).
func (s *Session) Abort() {
	s.busy.Lock()
	defer s.busy.Unlock()
	if !s.closed.Load() {
		s.abort()
	}
}

func (s *Session) abort() {
	for _, mc := range s.conns {
		if mc.inTx && mc.st == stOpen || mc.inTx && mc.st == stSkipMsg {
			mc.inTx = false
			mc.dc.timeout = mc.m.cfg.CommandTimeout.D()
			if err := mc.cs.Abort(); err != nil {
				s.fail(mc, "abort", err)
			}
		}
	}
}

// Close ends the session with every milter. When a stage is under way in
// another goroutine (server shutdown), it only closes the connections,
// which ends that stage with an error.
func (s *Session) Close() {
	if s.closed.Swap(true) {
		return
	}
	if !s.busy.TryLock() {
		s.connsMu.Lock()
		for _, mc := range s.conns {
			if mc.dc != nil {
				mc.dc.Close()
			}
		}
		s.connsMu.Unlock()
		return
	}
	defer s.busy.Unlock()
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	for _, mc := range s.conns {
		if mc.cs == nil || mc.st == stFailed || mc.dc == nil {
			continue
		}
		mc.dc.timeout = mc.m.cfg.CommandTimeout.D()
		mc.cs.Close()
		mc.dc.Close()
	}
	s.conns = nil
}

// Local starts a session for a local submission, which has no SMTP
// session: connect (as localhost), HELO, MAIL and RCPT at once; the caller
// goes on with Content (and Rescan) and closes the session. A refused
// recipient refuses the message.
func (c *Chain) Local(info Info, log *slog.Logger, queueID, from string, rcpts []string) (*Session, error) {
	s := c.NewSession(info, log)
	if err := s.Mail(queueID, from, nil); err != nil {
		s.Close()
		return nil, err
	}
	for _, r := range rcpts {
		if err := s.Rcpt(r, nil); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Rescans reports whether a milter of the session wants to see the
// message again after the inbound plugins changed it.
func (s *Session) Rescans() bool { return s != nil && s.c.Rescans() }
