package daemon

import (
	"net"
	"sync"
)

// socket is one bound SMTP port that outlives a reload. A single loop
// accepts connections and hands each to whichever view asks first; the
// listener of each config generation serves its own view. A reload
// starts the new listener on a new view and closes the old view, which
// ends the old listener's Serve without touching its open sessions or
// the port: no connection is refused or dropped in between.
type socket struct {
	addr  string // as configured (may be port 0)
	ln    net.Listener
	conns chan net.Conn

	closeOnce sync.Once
	closing   chan struct{}
}

func newSocket(addr string, ln net.Listener) *socket {
	s := &socket{addr: addr, ln: ln, conns: make(chan net.Conn), closing: make(chan struct{})}
	go s.loop()
	return s
}

func (s *socket) loop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			s.close()
			return
		}
		select {
		case s.conns <- c:
		case <-s.closing:
			c.Close()
			return
		}
	}
}

// close unbinds the port. Views then fail Accept.
func (s *socket) close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.ln.Close()
	})
}

// view is a net.Listener on the socket whose Close leaves the port open.
func (s *socket) view() net.Listener {
	return &socketView{s: s, closed: make(chan struct{})}
}

type socketView struct {
	s      *socket
	once   sync.Once
	closed chan struct{}
}

func (v *socketView) Accept() (net.Conn, error) {
	select {
	case <-v.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-v.s.conns:
		return c, nil
	case <-v.closed:
		return nil, net.ErrClosed
	case <-v.s.closing:
		return nil, net.ErrClosed
	}
}

func (v *socketView) Close() error {
	v.once.Do(func() { close(v.closed) })
	return nil
}

func (v *socketView) Addr() net.Addr { return v.s.ln.Addr() }
