package smtpd

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// limitListener enforces the session limits before go-smtp sees a
// connection: at most perIP sessions from one address and max in all.
// Connections over a limit get a 421 and are closed (RFC 5321 §3.8).
type limitListener struct {
	net.Listener
	perIP, max int
	cmdTimeout time.Duration
	dataTimout time.Duration
	onReject   func(reason string)

	mu     sync.Mutex
	byIP   map[string]int
	active int
}

func newLimitListener(l net.Listener, perIP, max int, cmd, data time.Duration, onReject func(string)) *limitListener {
	return &limitListener{Listener: l, perIP: perIP, max: max, cmdTimeout: cmd, dataTimout: data,
		onReject: onReject, byIP: map[string]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := hostOf(c.RemoteAddr())
		l.mu.Lock()
		reason := ""
		switch {
		case l.max > 0 && l.active >= l.max:
			reason = "max_sessions"
		case l.perIP > 0 && l.byIP[ip] >= l.perIP:
			reason = "max_sessions_per_ip"
		default:
			l.active++
			l.byIP[ip]++
		}
		l.mu.Unlock()
		if reason != "" {
			if l.onReject != nil {
				l.onReject(reason)
			}
			go func() {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte("421 4.7.0 Too many connections, try again later\r\n"))
				c.Close()
			}()
			continue
		}
		tc := &timeoutConn{Conn: c, cmd: l.cmdTimeout, data: l.dataTimout}
		tc.release = func() {
			l.mu.Lock()
			l.active--
			if l.byIP[ip]--; l.byIP[ip] <= 0 {
				delete(l.byIP, ip)
			}
			l.mu.Unlock()
		}
		return tc, nil
	}
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

// timeoutConn gives every read its own deadline: the command timeout while
// the client sends commands, the data timeout while it sends a message
// (Postfix's smtpd_timeout works the same way). go-smtp's own deadlines
// are switched off, so SetReadDeadline from above is ignored.
type timeoutConn struct {
	net.Conn
	cmd, data time.Duration
	inData    atomic.Bool
	release   func()
	closed    atomic.Bool
}

func (c *timeoutConn) Read(p []byte) (int, error) {
	d := c.cmd
	if c.inData.Load() {
		d = c.data
	}
	if d > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(d))
	}
	return c.Conn.Read(p)
}

func (c *timeoutConn) Write(p []byte) (int, error) {
	if c.cmd > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.cmd))
	}
	return c.Conn.Write(p)
}

func (c *timeoutConn) SetReadDeadline(time.Time) error { return nil }

func (c *timeoutConn) Close() error {
	if c.closed.CompareAndSwap(false, true) && c.release != nil {
		c.release()
	}
	return c.Conn.Close()
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
