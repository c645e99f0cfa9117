package smtpd

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// Texts of the replies a connection gets before go-smtp sees it.
const (
	replyTooMany     = "421 4.7.0 Too many connections, try again later\r\n"
	replyTooFast     = "421 4.7.0 Too many connections from your address, try again later\r\n"
	replyAuthBlocked = "421 4.7.0 Too many failed authentications from your address, try again later\r\n"
	rateWindow       = time.Minute
	maxRateClient    = 100000 // addresses remembered for the rate limit
)

// limitListener enforces the session limits before go-smtp sees a
// connection: at most perIP sessions from one address, at most max in all
// of which the last reserve are kept for privileged clients (client
// networks and addresses that authenticated recently), and at most rate
// new connections a minute from one address (Postfix's
// smtpd_client_connection_rate_limit). Privileged clients are exempt from
// the per-address limits. Connections over a limit get a 421 and are
// closed (RFC 5321 §3.8).
type limitListener struct {
	net.Listener
	perIP, max, reserve, rate int
	cmdTimeout                time.Duration
	dataTimeout               time.Duration
	maxCmdBytes               int
	plaintext                 bool // false under implicit TLS
	privileged                func(net.IP) bool
	blocked                   func(net.IP) bool // refused outright (AUTH-blocked, on submission)
	onReject                  func(reason, client string)
	onCount                   func(open, peak int) // called with mu held, after each change
	now                       func() time.Time

	*SessionCount
}

// SessionCount is what the session limits count: the open sessions, in
// all and per client address, and the recent connections per address.
// The daemon gives the listeners of every config generation on one port
// the same SessionCount, so that while a reload hands the port over, the
// sessions the old listener drains and those the new one opens count
// against one max_sessions.
type SessionCount struct {
	mu     sync.Mutex
	byIP   map[string]int
	rates  map[string]*rateCount
	active int
	peak   int // most sessions open at once
}

// NewSessionCount returns an empty count.
func NewSessionCount() *SessionCount {
	return &SessionCount{byIP: map[string]int{}, rates: map[string]*rateCount{}}
}

// Active is the number of open sessions.
func (c *SessionCount) Active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active
}

type rateCount struct {
	n     int
	since time.Time
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := hostOf(c.RemoteAddr())
		priv := l.privileged != nil && l.privileged(net.ParseIP(ip))
		l.mu.Lock()
		reason := ""
		switch {
		case l.max > 0 && l.active >= l.max:
			reason = "max_sessions"
		case !priv && l.max > 0 && l.active >= l.max-l.reserve:
			reason = "reserved_sessions"
		case !priv && l.perIP > 0 && l.byIP[ip] >= l.perIP:
			reason = "max_sessions_per_ip"
		case !priv && l.rate > 0 && l.overRate(ip):
			reason = "max_connection_rate_per_ip"
		case l.blocked != nil && l.blocked(net.ParseIP(ip)):
			reason = "auth_blocked"
		default:
			l.active++
			l.byIP[ip]++
			l.peak = max(l.peak, l.active)
			l.counted()
		}
		l.mu.Unlock()
		if reason != "" {
			if l.onReject != nil {
				l.onReject(reason, ip)
			}
			text := replyTooMany
			switch reason {
			case "max_connection_rate_per_ip":
				text = replyTooFast
			case "auth_blocked":
				text = replyAuthBlocked
			}
			go func() {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if l.plaintext {
					c.Write([]byte(text))
				}
				c.Close()
			}()
			continue
		}
		tc := &timeoutConn{Conn: c, cmd: l.cmdTimeout, data: l.dataTimeout, maxCmdBytes: l.maxCmdBytes,
			plaintext: l.plaintext}
		tc.start(time.Now())
		tc.release = func() {
			l.mu.Lock()
			l.active--
			if l.byIP[ip]--; l.byIP[ip] <= 0 {
				delete(l.byIP, ip)
			}
			l.counted()
			l.mu.Unlock()
		}
		return tc, nil
	}
}

// counted reports the open and peak counts; l.mu is held.
func (l *limitListener) counted() {
	if l.onCount != nil {
		l.onCount(l.active, l.peak)
	}
}

// overRate counts a connection from ip and reports whether it is over the
// rate; l.mu is held.
func (l *limitListener) overRate(ip string) bool {
	now := l.now()
	if len(l.rates) >= maxRateClient {
		for k, rc := range l.rates {
			if now.Sub(rc.since) >= rateWindow {
				delete(l.rates, k)
			}
		}
		if len(l.rates) >= maxRateClient {
			clear(l.rates) // under a flood from that many addresses, forget
		}
	}
	rc := l.rates[ip]
	if rc == nil || now.Sub(rc.since) >= rateWindow {
		rc = &rateCount{since: now}
		l.rates[ip] = rc
	}
	rc.n++
	return rc.n > l.rate
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// timeoutConn is the connection under go-smtp (and under TLS, when there
// is TLS). It holds the session to deadlines that do not move with every
// byte: a command (or the TLS handshake) must arrive whole within the
// command timeout of the previous reply, and the whole DATA or BDAT phase
// within the data timeout (Data switches the phase). Once a deadline has
// passed, every further read fails, so go-smtp answers 421 and hangs up.
// go-smtp's own deadlines are off, so SetReadDeadline from above is
// ignored.
//
// go-smtp's command line limit is off too, because it also applies to
// message data; instead a client may send at most maxCmdBytes in command
// mode before the server has replied, which bounds what a command line can
// cost in memory whether or not TLS is on. Over that, reads fail with
// smtp.ErrTooLongLine and go-smtp answers 500 and hangs up.
//
// After a STARTTLS whose handshake fails, it closes the connection instead
// of letting go-smtp go on in plaintext (RFC 3207 §4.1). (Bare CRs and LFs
// in the data, "<LF>.<CR>X" included, are checkedReader's, above go-smtp's
// DATA reader: the same with and without TLS.)
type timeoutConn struct {
	net.Conn
	cmd, data   time.Duration
	maxCmdBytes int
	release     func()
	closed      atomic.Bool

	mu         sync.Mutex
	inData     bool
	phaseStart time.Time // last reply in command mode; start of DATA in data mode
	sinceReply int       // bytes read in command mode since the last reply
	expired    error     // the timeout error once a deadline has passed
	plaintext  bool      // no TLS yet: watching for "220 Ready to start TLS"
	starttls   bool      // "220 Ready to start TLS" written
	hangUp     bool      // close once the next reply is written
}

// closeAfterReply makes the connection close right after the next reply.
func (c *timeoutConn) closeAfterReply() {
	c.mu.Lock()
	c.hangUp = true
	c.mu.Unlock()
}

func (c *timeoutConn) start(now time.Time) {
	c.mu.Lock()
	c.phaseStart = now
	c.mu.Unlock()
}

// setData switches between command and data mode.
func (c *timeoutConn) setData(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inData == on {
		return
	}
	c.inData = on
	c.phaseStart = time.Now()
	c.sinceReply = 0
}

func (c *timeoutConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.expired != nil {
		err := c.expired
		c.mu.Unlock()
		return 0, err
	}
	var deadline time.Time
	if c.inData {
		if c.data > 0 {
			deadline = c.phaseStart.Add(c.data)
		}
	} else {
		if c.maxCmdBytes > 0 && c.sinceReply > c.maxCmdBytes {
			c.mu.Unlock()
			return 0, smtp.ErrTooLongLine
		}
		if c.cmd > 0 {
			deadline = c.phaseStart.Add(c.cmd)
		}
	}
	c.mu.Unlock()
	c.Conn.SetReadDeadline(deadline)
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if !c.inData {
		c.sinceReply += n
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.expired = err
	}
	c.mu.Unlock()
	return n, err
}

var startTLSReply = []byte("Ready to start TLS")

func (c *timeoutConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.starttls && len(p) > 0 && p[0] >= '0' && p[0] <= '9' {
		// After "220 Ready to start TLS" every byte we write is TLS,
		// unless the handshake failed and go-smtp answers in
		// plaintext: hang up instead (RFC 3207 §4.1).
		c.mu.Unlock()
		c.Close()
		return 0, net.ErrClosed
	}
	if c.plaintext && bytes.HasPrefix(p, []byte("220 ")) && bytes.Contains(p, startTLSReply) {
		c.starttls, c.plaintext = true, false
	}
	if !c.inData {
		c.phaseStart = time.Now()
		c.sinceReply = 0
	}
	hangUp := c.hangUp
	c.mu.Unlock()
	if c.cmd > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.cmd))
	}
	n, err := c.Conn.Write(p)
	if hangUp {
		c.Close()
	}
	return n, err
}

func (c *timeoutConn) SetReadDeadline(time.Time) error { return nil }

// Close closes the connection and then gives its session slot back, so a
// new connection is never let in while this one is still open.
func (c *timeoutConn) Close() error {
	first := c.closed.CompareAndSwap(false, true)
	err := c.Conn.Close()
	if first && c.release != nil {
		c.release()
	}
	return err
}

// underlying finds our timeoutConn below a TLS connection.
func underlying(c net.Conn) *timeoutConn {
	for i := 0; i < 4 && c != nil; i++ {
		if tc, ok := c.(*timeoutConn); ok {
			return tc
		}
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = nc.NetConn()
	}
	return nil
}
