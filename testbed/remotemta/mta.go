package remotemta

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/testbed/ca"
)

// Rcpt is one accepted recipient with its RCPT parameters.
type Rcpt struct {
	Addr   string
	Notify []string // NOTIFY= values (upper case), nil if absent
	ORcpt  string   // ORCPT= value as sent (xtext decoded), e.g. "rfc822;a@b"
	Params map[string]string
}

// Message is one accepted message.
type Message struct {
	ConnID int    // the Connection it came in on
	Seq    int    // 1-based number of the message within its connection
	Helo   string // EHLO/HELO name
	From   string // reverse path without brackets ("" for <>)
	Rcpts  []Rcpt // accepted recipients

	// MAIL parameters.
	Body       string // BODY= value (upper case), "" if absent
	Size       int64  // SIZE= value, 0 if absent
	SMTPUTF8   bool
	RequireTLS bool
	Ret        string // RET= (upper case)
	EnvID      string // ENVID= (xtext decoded)
	MailParams map[string]string

	Data    []byte // as received: dot-unstuffed, CRLF kept
	Chunked bool   // sent with BDAT

	TLS        bool
	TLSVersion uint16
	TLSCipher  uint16
	ServerName string // SNI sent by the client
	AuthUser   string // authenticated user, "" if none

	Received time.Time
}

// To returns the recipient addresses.
func (m Message) To() []string {
	var out []string
	for _, r := range m.Rcpts {
		out = append(out, r.Addr)
	}
	return out
}

// Connection is the record of one SMTP connection.
type Connection struct {
	ID         int
	Remote     string
	Start, End time.Time // End is zero while open
	Helo       string
	TLS        bool
	TLSVersion uint16
	TLSCipher  uint16
	ServerName string
	TLSError   string // handshake error, if any
	AuthUser   string
	Messages   int      // accepted messages
	Log        []string // "C: ..." and "S: ..." lines (AUTH data redacted)
}

// MTA is a running remote SMTP server.
type MTA struct {
	cfg  Config
	host string
	ln   net.Listener
	ca   *ca.CA
	cert tls.Certificate
	tls  *tls.Config // nil for NoSTARTTLS

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup

	mu        sync.Mutex
	replies   [numStages]*Reply
	rcptReply map[string]*Reply
	delays    [numStages]time.Duration
	messages  []Message
	conns     []*Connection
	live      map[net.Conn]struct{}
	changed   chan struct{} // closed and replaced when messages change
}

// Start starts a remote MTA on 127.0.0.1 on a free port.
func Start(cfg Config) (*MTA, error) {
	m := &MTA{
		cfg:       cfg,
		host:      cfg.hostname(),
		closed:    make(chan struct{}),
		rcptReply: make(map[string]*Reply),
		live:      make(map[net.Conn]struct{}),
		changed:   make(chan struct{}),
	}
	for s, r := range cfg.Replies {
		r := r
		m.replies[s] = &r
	}
	for s, d := range cfg.Delays {
		m.delays[s] = d
	}
	if err := m.setupTLS(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m.ln = ln
	m.wg.Add(1)
	go m.accept()
	return m, nil
}

func (m *MTA) setupTLS() error {
	if m.cfg.Mode == NoSTARTTLS {
		return nil
	}
	m.ca = m.cfg.CA
	if m.ca == nil && m.cfg.Certificate == nil && m.cfg.Mode != STARTTLSSelfSigned {
		c, err := ca.New("remotemta CA")
		if err != nil {
			return err
		}
		m.ca = c
	}
	var err error
	switch {
	case m.cfg.Certificate != nil:
		m.cert = *m.cfg.Certificate
	case m.cfg.Mode == STARTTLSSelfSigned:
		m.cert, err = ca.SelfSigned(m.host)
	case m.cfg.Mode == STARTTLSWrongName:
		m.cert, err = m.ca.Issue(WrongName)
	default:
		m.cert, err = m.ca.Issue(m.host)
	}
	if err != nil {
		return err
	}
	m.tls = &tls.Config{
		Certificates: []tls.Certificate{m.cert},
		MinVersion:   m.cfg.TLSMinVersion,
		MaxVersion:   m.cfg.TLSMaxVersion,
	}
	return nil
}

// Addr returns "127.0.0.1:PORT".
func (m *MTA) Addr() string { return m.ln.Addr().String() }

// Port returns the port.
func (m *MTA) Port() int { return m.ln.Addr().(*net.TCPAddr).Port }

// Hostname returns the server's name (greeting, certificate).
func (m *MTA) Hostname() string { return m.host }

// Mode returns the TLS mode.
func (m *MTA) Mode() Mode { return m.cfg.Mode }

// CA returns the CA that issued the server certificate (nil for
// NoSTARTTLS, STARTTLSSelfSigned, or when Config.Certificate was given
// without a CA).
func (m *MTA) CA() *ca.CA { return m.ca }

// Certificate returns the served certificate (zero for NoSTARTTLS), e.g.
// to compute TLSA data from Certificate().Leaf.
func (m *MTA) Certificate() tls.Certificate { return m.cert }

// Close stops the server and closes open connections.
func (m *MTA) Close() error {
	m.closeOnce.Do(func() {
		close(m.closed)
		m.ln.Close()
		m.mu.Lock()
		for c := range m.live {
			c.Close()
		}
		m.mu.Unlock()
		m.wg.Wait()
	})
	return nil
}

// SetReply scripts the reply at stage (replacing an earlier one).
func (m *MTA) SetReply(stage Stage, r Reply) {
	m.mu.Lock()
	m.replies[stage] = &r
	m.mu.Unlock()
}

// ClearReply returns stage to normal behaviour.
func (m *MTA) ClearReply(stage Stage) {
	m.mu.Lock()
	m.replies[stage] = nil
	m.mu.Unlock()
}

// SetRcptReply scripts the reply to RCPT TO for one address (matched case
// insensitively); it takes precedence over a StageRcpt reply.
func (m *MTA) SetRcptReply(addr string, r Reply) {
	m.mu.Lock()
	m.rcptReply[strings.ToLower(addr)] = &r
	m.mu.Unlock()
}

// ClearRcptReply removes the reply scripted for addr.
func (m *MTA) ClearRcptReply(addr string) {
	m.mu.Lock()
	delete(m.rcptReply, strings.ToLower(addr))
	m.mu.Unlock()
}

// SetDelay makes the server wait d before its reply at stage (0 removes).
func (m *MTA) SetDelay(stage Stage, d time.Duration) {
	m.mu.Lock()
	m.delays[stage] = d
	m.mu.Unlock()
}

// takeReply returns the scripted reply for stage (and addr for RCPT),
// counting down Times.
func (m *MTA) takeReply(stage Stage, addr string) *Reply {
	m.mu.Lock()
	defer m.mu.Unlock()
	slot := &m.replies[stage]
	var r *Reply
	if stage == StageRcpt {
		if x := m.rcptReply[strings.ToLower(addr)]; x != nil {
			r = x
			if r.Times > 0 {
				r.Times--
				if r.Times == 0 {
					delete(m.rcptReply, strings.ToLower(addr))
				}
			}
			c := *r
			return &c
		}
	}
	r = *slot
	if r == nil {
		return nil
	}
	c := *r
	if r.Times > 0 {
		r.Times--
		if r.Times == 0 {
			*slot = nil
		}
	}
	return &c
}

// delay waits as scripted for stage; false means the server was closed.
func (m *MTA) delay(stage Stage) bool {
	m.mu.Lock()
	d := m.delays[stage]
	m.mu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-m.closed:
		return false
	}
}

// Messages returns the accepted messages so far.
func (m *MTA) Messages() []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Message(nil), m.messages...)
}

// WaitMessages waits until at least n messages were accepted, and returns
// them; on timeout it returns those there are and an error.
func (m *MTA) WaitMessages(n int, timeout time.Duration) ([]Message, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		m.mu.Lock()
		if len(m.messages) >= n {
			out := append([]Message(nil), m.messages...)
			m.mu.Unlock()
			return out, nil
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			msgs := m.Messages()
			return msgs, fmt.Errorf("remotemta %s: %d of %d messages after %v", m.Addr(), len(msgs), n, timeout)
		case <-m.closed:
			msgs := m.Messages()
			if len(msgs) >= n {
				return msgs, nil
			}
			return msgs, errors.New("remotemta: closed while waiting for messages")
		}
	}
}

// Connections returns the records of all connections so far (open ones
// included, End zero).
func (m *MTA) Connections() []Connection {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Connection, len(m.conns))
	for i, c := range m.conns {
		out[i] = *c
		out[i].Log = append([]string(nil), c.Log...)
	}
	return out
}

// Reset forgets recorded messages and connections.
func (m *MTA) Reset() {
	m.mu.Lock()
	m.messages = nil
	m.conns = nil
	m.mu.Unlock()
}

func (m *MTA) addMessage(msg Message) {
	m.mu.Lock()
	m.messages = append(m.messages, msg)
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
}

func (m *MTA) accept() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		m.mu.Lock()
		select {
		case <-m.closed:
			m.mu.Unlock()
			c.Close()
			return
		default:
		}
		m.live[c] = struct{}{}
		rec := &Connection{ID: len(m.conns) + 1, Remote: c.RemoteAddr().String(), Start: time.Now()}
		m.conns = append(m.conns, rec)
		m.wg.Add(1)
		m.mu.Unlock()
		go func() {
			defer m.wg.Done()
			s := newSession(m, c, rec)
			s.serve()
			c.Close()
			m.mu.Lock()
			delete(m.live, c)
			rec.End = time.Now()
			m.mu.Unlock()
		}()
	}
}
