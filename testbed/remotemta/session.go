package remotemta

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

const (
	idleTimeout  = 60 * time.Second
	writeTimeout = 30 * time.Second
	maxLine      = 4096
	maxRcpts     = 1000
	defaultMax   = 64 << 20
)

var errLineTooLong = errors.New("line too long")

type session struct {
	m    *MTA
	rec  *Connection
	raw  net.Conn
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer

	tlsState *tls.ConnectionState
	sni      string

	rejected bool // greeting was a 5xx: only QUIT works
	helo     string
	ehlo     bool
	authUser string
	nmsgs    int

	// transaction
	inTx       bool
	from       string
	mailParams map[string]string
	rcpts      []Rcpt
	bdat       []byte
	bdatActive bool
	bdatBig    bool
}

func newSession(m *MTA, c net.Conn, rec *Connection) *session {
	s := &session{m: m, rec: rec, raw: c}
	s.setConn(c)
	return s
}

func (s *session) setConn(c net.Conn) {
	s.conn = c
	s.r = bufio.NewReaderSize(c, maxLine)
	s.w = bufio.NewWriter(c)
}

func (s *session) log(line string) {
	s.m.mu.Lock()
	s.rec.Log = append(s.rec.Log, line)
	s.m.mu.Unlock()
}

// reply writes an SMTP reply; enhanced may be "".
func (s *session) reply(code int, enhanced, text string) {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		if enhanced != "" {
			l = enhanced + " " + l
		}
		line := strconv.Itoa(code) + sep + l
		s.log("S: " + line)
		s.w.WriteString(line + "\r\n")
	}
}

// replyLines writes a multi-line reply whose lines are given.
func (s *session) replyLines(code int, lines []string) {
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		line := strconv.Itoa(code) + sep + l
		s.log("S: " + line)
		s.w.WriteString(line + "\r\n")
	}
}

// scripted sends r; it reports whether the connection must close.
func (s *session) scripted(r *Reply) (closeConn bool) {
	s.reply(r.Code, r.Enhanced, r.Text)
	return r.Close || r.Code == 421
}

func (s *session) flush() error {
	s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return s.w.Flush()
}

func (s *session) tlsConfig() *tls.Config {
	cfg := s.m.tls.Clone()
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		s.sni = h.ServerName
		return nil, nil
	}
	return cfg
}

func (s *session) handshake(cfg *tls.Config) bool {
	tc := tls.Server(s.raw, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	err := tc.Handshake()
	tc.SetDeadline(time.Time{})
	s.m.mu.Lock()
	s.rec.ServerName = s.sni
	if err != nil {
		s.rec.TLSError = err.Error()
	}
	s.m.mu.Unlock()
	if err != nil {
		s.log("-- TLS handshake failed: " + err.Error())
		return false
	}
	st := tc.ConnectionState()
	s.tlsState = &st
	s.m.mu.Lock()
	s.rec.TLS = true
	s.rec.TLSVersion = st.Version
	s.rec.TLSCipher = st.CipherSuite
	s.rec.ServerName = st.ServerName
	s.m.mu.Unlock()
	s.log("-- TLS " + tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite))
	s.setConn(tc)
	return true
}

func (s *session) serve() {
	if s.m.cfg.Mode == ImplicitTLS {
		if !s.handshake(s.tlsConfig()) {
			return
		}
	}
	if !s.m.delay(StageConnect) {
		return
	}
	if r := s.m.takeReply(StageConnect, ""); r != nil && r.Code/100 != 2 {
		if s.scripted(r) {
			s.flush()
			return
		}
		s.rejected = true
	} else if r != nil {
		s.reply(r.Code, "", r.Text)
	} else {
		s.reply(220, "", s.m.host+" ESMTP Posthorn testbed")
	}
	for {
		if s.r.Buffered() == 0 {
			if err := s.flush(); err != nil {
				return
			}
		}
		s.conn.SetReadDeadline(time.Now().Add(idleTimeout))
		line, err := s.readLine()
		if err == errLineTooLong {
			s.reply(500, "5.5.2", "Line too long")
			s.flush()
			return
		}
		if err != nil {
			return
		}
		if !s.handle(line) {
			s.flush()
			return
		}
	}
}

func (s *session) readLine() (string, error) {
	line, err := s.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return "", errLineTooLong
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

func (s *session) resetTx() {
	s.inTx = false
	s.from = ""
	s.mailParams = nil
	s.rcpts = nil
	s.bdat = nil
	s.bdatActive = false
	s.bdatBig = false
}

func (s *session) isTLS() bool { return s.tlsState != nil }

func (s *session) authOffered() bool {
	return s.m.cfg.AuthUser != "" && (s.isTLS() || s.m.cfg.AuthBeforeTLS)
}

// handle runs one command; false means close the connection.
func (s *session) handle(line string) bool {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	arg = strings.TrimSpace(arg)
	if verb == "AUTH" {
		f := strings.Fields(arg)
		if len(f) > 1 {
			s.log("C: AUTH " + f[0] + " ***")
		} else {
			s.log("C: " + line)
		}
	} else {
		s.log("C: " + line)
	}
	if s.rejected {
		if verb == "QUIT" {
			s.reply(221, "", "Bye")
			return false
		}
		s.reply(503, "", "No service, only QUIT")
		return true
	}
	switch verb {
	case "EHLO", "HELO":
		return s.cmdHelo(verb, arg)
	case "STARTTLS":
		return s.cmdStartTLS(arg)
	case "AUTH":
		return s.cmdAuth(arg)
	case "MAIL":
		return s.cmdMail(arg)
	case "RCPT":
		return s.cmdRcpt(arg)
	case "DATA":
		return s.cmdData(arg)
	case "BDAT":
		return s.cmdBdat(arg)
	case "RSET":
		s.resetTx()
		s.reply(250, "2.0.0", "OK")
	case "NOOP":
		s.reply(250, "2.0.0", "OK")
	case "VRFY":
		s.reply(252, "2.5.0", "Cannot VRFY, but will accept")
	case "QUIT":
		s.reply(221, "2.0.0", "Bye")
		return false
	default:
		s.reply(500, "5.5.2", "Command unrecognized")
	}
	return true
}

func (s *session) cmdHelo(verb, arg string) bool {
	if arg == "" || strings.ContainsAny(arg, " \t") {
		s.reply(501, "5.5.4", "Syntax: "+verb+" hostname")
		return true
	}
	if !s.m.delay(StageHelo) {
		return false
	}
	r := s.m.takeReply(StageHelo, "")
	if r != nil && r.Code/100 != 2 {
		return !s.scripted(r)
	}
	s.resetTx()
	s.helo = arg
	s.ehlo = verb == "EHLO"
	s.m.mu.Lock()
	s.rec.Helo = arg
	s.m.mu.Unlock()
	greet := s.m.host + " Hello " + arg
	if r != nil && r.Text != "" {
		greet = r.Text
	}
	if !s.ehlo {
		s.reply(250, "", greet)
		return true
	}
	c := s.m.cfg
	lines := []string{greet}
	if !c.NoPIPELINING {
		lines = append(lines, "PIPELINING")
	}
	switch {
	case c.NoSIZE:
	case c.SizeLimit > 0:
		lines = append(lines, "SIZE "+strconv.FormatInt(c.SizeLimit, 10))
	default:
		lines = append(lines, "SIZE")
	}
	if !c.No8BITMIME {
		lines = append(lines, "8BITMIME")
	}
	if c.SMTPUTF8 {
		lines = append(lines, "SMTPUTF8")
	}
	if c.DSN {
		lines = append(lines, "DSN")
	}
	if c.REQUIRETLS && s.isTLS() {
		lines = append(lines, "REQUIRETLS")
	}
	if c.CHUNKING {
		lines = append(lines, "CHUNKING")
	}
	if s.m.tls != nil && !s.isTLS() && c.Mode != ImplicitTLS {
		lines = append(lines, "STARTTLS")
	}
	if s.authOffered() {
		lines = append(lines, "AUTH PLAIN")
	}
	lines = append(lines, "ENHANCEDSTATUSCODES")
	s.replyLines(250, lines)
	return true
}

func (s *session) cmdStartTLS(arg string) bool {
	switch {
	case s.m.tls == nil || s.m.cfg.Mode == ImplicitTLS:
		s.reply(502, "5.5.1", "STARTTLS not supported")
		return true
	case s.isTLS():
		s.reply(503, "5.5.1", "TLS already active")
		return true
	case arg != "":
		s.reply(501, "5.5.4", "Syntax: STARTTLS")
		return true
	case !s.ehlo:
		s.reply(503, "5.5.1", "Send EHLO first")
		return true
	}
	if !s.m.delay(StageStartTLS) {
		return false
	}
	if r := s.m.takeReply(StageStartTLS, ""); r != nil {
		return !s.scripted(r)
	}
	s.reply(220, "2.0.0", "Ready to start TLS")
	if s.flush() != nil {
		return false
	}
	if n := s.r.Buffered(); n > 0 {
		// RFC 3207 section 5 / CVE-2011-0411: never act on plaintext
		// pipelined after STARTTLS.
		s.log(fmt.Sprintf("-- discarded %d bytes pipelined after STARTTLS", n))
	}
	if s.m.cfg.Mode == STARTTLSBroken {
		switch s.m.cfg.Break {
		case BreakGarbage:
			s.raw.SetWriteDeadline(time.Now().Add(writeTimeout))
			s.raw.Write([]byte("this is not a TLS ServerHello\r\n\x00\x01\x02\x03 garbage garbage\r\n"))
			s.log("-- broke TLS handshake with garbage")
		case BreakAlert:
			cfg := &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
				s.sni = h.ServerName
				return nil, errors.New("remotemta: handshake broken on purpose")
			}}
			s.handshake(cfg)
		default:
			s.log("-- broke TLS handshake by closing")
		}
		return false
	}
	if !s.handshake(s.tlsConfig()) {
		return false
	}
	// RFC 3207: forget everything learnt before TLS.
	s.resetTx()
	s.helo = ""
	s.ehlo = false
	s.authUser = ""
	return true
}

func (s *session) cmdAuth(arg string) bool {
	switch {
	case !s.authOffered():
		s.reply(503, "5.5.1", "AUTH not available")
		return true
	case !s.ehlo:
		s.reply(503, "5.5.1", "Send EHLO first")
		return true
	case s.authUser != "":
		s.reply(503, "5.5.1", "Already authenticated")
		return true
	case s.inTx:
		s.reply(503, "5.5.1", "AUTH not allowed during a mail transaction")
		return true
	}
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 {
		s.reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
		return true
	}
	if strings.ToUpper(f[0]) != "PLAIN" {
		s.reply(504, "5.5.4", "Unsupported authentication mechanism")
		return true
	}
	var resp string
	if len(f) == 2 {
		resp = f[1]
	} else {
		s.reply(334, "", "")
		if s.flush() != nil {
			return false
		}
		line, err := s.readLine()
		if err != nil {
			return false
		}
		s.log("C: ***")
		resp = line
	}
	if resp == "*" {
		s.reply(501, "5.0.0", "Authentication cancelled")
		return true
	}
	if resp == "=" {
		resp = ""
	}
	raw, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		s.reply(501, "5.5.2", "Bad base64")
		return true
	}
	parts := strings.Split(string(raw), "\x00")
	if !s.m.delay(StageAuth) {
		return false
	}
	if r := s.m.takeReply(StageAuth, ""); r != nil {
		return !s.scripted(r)
	}
	if len(parts) != 3 || parts[1] != s.m.cfg.AuthUser || parts[2] != s.m.cfg.AuthPassword {
		s.reply(535, "5.7.8", "Authentication credentials invalid")
		return true
	}
	s.authUser = parts[1]
	s.m.mu.Lock()
	s.rec.AuthUser = parts[1]
	s.m.mu.Unlock()
	s.reply(235, "2.7.0", "Authentication successful")
	return true
}

// parsePath parses "<addr> params..." after "FROM:"/"TO:".
func parsePath(s string) (addr string, params map[string]string, err error) {
	s = strings.TrimLeft(s, " ")
	if !strings.HasPrefix(s, "<") {
		return "", nil, errors.New("path must be in angle brackets")
	}
	end := strings.IndexByte(s, '>')
	if end < 0 {
		return "", nil, errors.New("missing >")
	}
	addr = s[1:end]
	if i := strings.IndexByte(addr, ':'); i >= 0 && strings.HasPrefix(addr, "@") {
		addr = addr[i+1:] // source route
	}
	params = map[string]string{}
	for _, p := range strings.Fields(s[end+1:]) {
		k, v, _ := strings.Cut(p, "=")
		k = strings.ToUpper(k)
		if _, dup := params[k]; dup {
			return "", nil, errors.New("duplicate parameter " + k)
		}
		params[k] = v
	}
	return addr, params, nil
}

func decodeXtext(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '+' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("bad xtext")
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", errors.New("bad xtext")
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func (s *session) cmdMail(arg string) bool {
	c := s.m.cfg
	switch {
	case s.helo == "":
		s.reply(503, "5.5.1", "Send EHLO/HELO first")
		return true
	case s.inTx:
		s.reply(503, "5.5.1", "Nested MAIL command")
		return true
	case c.AuthRequired && s.authUser == "":
		s.reply(530, "5.7.0", "Authentication required")
		return true
	case c.MaxMessagesPerConn > 0 && s.nmsgs >= c.MaxMessagesPerConn:
		s.reply(421, "4.7.0", "Too many messages in this connection")
		return false
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		s.reply(501, "5.5.2", "Syntax: MAIL FROM:<address>")
		return true
	}
	from, params, err := parsePath(rest)
	if err != nil {
		s.reply(501, "5.5.2", "Syntax: MAIL FROM:<address>: "+err.Error())
		return true
	}
	unsupported := func(k string) bool {
		s.reply(555, "5.5.4", k+" parameter not supported")
		return true
	}
	for k, v := range params {
		switch k {
		case "SIZE":
			if c.NoSIZE {
				return unsupported(k)
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				s.reply(501, "5.5.4", "Bad SIZE value")
				return true
			}
			if c.SizeLimit > 0 && n > c.SizeLimit {
				s.reply(552, "5.3.4", "Message size exceeds fixed limit")
				return true
			}
		case "BODY":
			switch strings.ToUpper(v) {
			case "7BIT":
			case "8BITMIME":
				if c.No8BITMIME {
					return unsupported("BODY=8BITMIME")
				}
			case "BINARYMIME":
				return unsupported("BODY=BINARYMIME")
			default:
				s.reply(501, "5.5.4", "Bad BODY value")
				return true
			}
		case "SMTPUTF8":
			if !c.SMTPUTF8 {
				return unsupported(k)
			}
		case "REQUIRETLS":
			if !c.REQUIRETLS || !s.isTLS() {
				return unsupported(k)
			}
		case "RET":
			if !c.DSN {
				return unsupported(k)
			}
			if u := strings.ToUpper(v); u != "FULL" && u != "HDRS" {
				s.reply(501, "5.5.4", "Bad RET value")
				return true
			}
		case "ENVID":
			if !c.DSN {
				return unsupported(k)
			}
			if _, err := decodeXtext(v); err != nil {
				s.reply(501, "5.5.4", "Bad ENVID value")
				return true
			}
		case "AUTH":
		default:
			return unsupported(k)
		}
	}
	if !s.m.delay(StageMail) {
		return false
	}
	if r := s.m.takeReply(StageMail, ""); r != nil && r.Code/100 != 2 {
		return !s.scripted(r)
	}
	s.inTx = true
	s.from = from
	s.mailParams = params
	s.reply(250, "2.1.0", "Sender OK")
	return true
}

func (s *session) cmdRcpt(arg string) bool {
	c := s.m.cfg
	if !s.inTx {
		s.reply(503, "5.5.1", "Need MAIL before RCPT")
		return true
	}
	if s.bdatActive {
		s.reply(503, "5.5.1", "RCPT not allowed during BDAT")
		return true
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		s.reply(501, "5.5.2", "Syntax: RCPT TO:<address>")
		return true
	}
	to, params, err := parsePath(rest)
	if err != nil || to == "" {
		s.reply(501, "5.1.3", "Bad recipient address syntax")
		return true
	}
	rc := Rcpt{Addr: to, Params: params}
	for k, v := range params {
		switch k {
		case "NOTIFY":
			if !c.DSN {
				s.reply(555, "5.5.4", "NOTIFY parameter not supported")
				return true
			}
			rc.Notify = strings.Split(strings.ToUpper(v), ",")
		case "ORCPT":
			if !c.DSN {
				s.reply(555, "5.5.4", "ORCPT parameter not supported")
				return true
			}
			d, err := decodeXtext(v)
			if err != nil || !strings.Contains(d, ";") {
				s.reply(501, "5.5.4", "Bad ORCPT value")
				return true
			}
			rc.ORcpt = d
		default:
			s.reply(555, "5.5.4", k+" parameter not supported")
			return true
		}
	}
	if len(s.rcpts) >= maxRcpts {
		s.reply(452, "4.5.3", "Too many recipients")
		return true
	}
	if !s.m.delay(StageRcpt) {
		return false
	}
	if r := s.m.takeReply(StageRcpt, to); r != nil && r.Code/100 != 2 {
		return !s.scripted(r)
	}
	s.rcpts = append(s.rcpts, rc)
	s.reply(250, "2.1.5", "Recipient OK")
	return true
}

func (s *session) maxSize() int64 {
	if s.m.cfg.SizeLimit > 0 {
		return s.m.cfg.SizeLimit
	}
	if s.m.cfg.MaxMessageBytes > 0 {
		return s.m.cfg.MaxMessageBytes
	}
	return defaultMax
}

func (s *session) cmdData(arg string) bool {
	switch {
	case arg != "":
		s.reply(501, "5.5.4", "Syntax: DATA")
		return true
	case !s.inTx:
		s.reply(503, "5.5.1", "Need MAIL before DATA")
		return true
	case s.bdatActive:
		s.reply(503, "5.5.1", "DATA not allowed after BDAT")
		return true
	case len(s.rcpts) == 0:
		s.reply(554, "5.5.1", "No valid recipients")
		return true
	}
	if !s.m.delay(StageDataCmd) {
		return false
	}
	if r := s.m.takeReply(StageDataCmd, ""); r != nil {
		s.resetTx()
		return !s.scripted(r)
	}
	s.reply(354, "", "End data with <CR><LF>.<CR><LF>")
	if s.flush() != nil {
		return false
	}
	s.conn.SetReadDeadline(time.Now().Add(idleTimeout))
	data, tooBig, err := s.readData(s.maxSize())
	if err != nil {
		return false
	}
	return s.finish(data, tooBig, false)
}

// readData reads a dot-terminated message: only <CRLF>.<CRLF> ends it;
// a leading dot is removed from lines that start after a CRLF.
func (s *session) readData(max int64) ([]byte, bool, error) {
	var buf bytes.Buffer
	tooBig := false
	bol, prevCR := true, false
	for {
		seg, err := s.r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return nil, false, err
		}
		complete := err == nil
		if bol && complete && string(seg) == ".\r\n" {
			return buf.Bytes(), tooBig, nil
		}
		if bol && len(seg) > 0 && seg[0] == '.' {
			seg = seg[1:]
		}
		if int64(buf.Len()+len(seg)) > max {
			tooBig = true
		} else {
			buf.Write(seg)
		}
		if complete {
			n := len(seg)
			bol = (n >= 2 && seg[n-2] == '\r') || (n == 1 && prevCR)
			prevCR = false
		} else {
			bol = false
			prevCR = len(seg) > 0 && seg[len(seg)-1] == '\r'
		}
		s.conn.SetReadDeadline(time.Now().Add(idleTimeout))
	}
}

// finish ends a transaction after the message data was read.
func (s *session) finish(data []byte, tooBig, chunked bool) bool {
	defer s.resetTx()
	if tooBig {
		s.reply(552, "5.3.4", "Message size exceeds fixed limit")
		return true
	}
	if !s.m.delay(StageData) {
		return false
	}
	r := s.m.takeReply(StageData, "")
	if r != nil && r.Code/100 != 2 {
		return !s.scripted(r)
	}
	s.nmsgs++
	msg := Message{
		ConnID:     s.rec.ID,
		Seq:        s.nmsgs,
		Helo:       s.helo,
		From:       s.from,
		Rcpts:      s.rcpts,
		MailParams: s.mailParams,
		Data:       append([]byte(nil), data...),
		Chunked:    chunked,
		AuthUser:   s.authUser,
		Received:   time.Now(),
		ServerName: s.sni,
	}
	p := s.mailParams
	msg.Body = strings.ToUpper(p["BODY"])
	msg.Size, _ = strconv.ParseInt(p["SIZE"], 10, 64)
	_, msg.SMTPUTF8 = p["SMTPUTF8"]
	_, msg.RequireTLS = p["REQUIRETLS"]
	msg.Ret = strings.ToUpper(p["RET"])
	msg.EnvID, _ = decodeXtext(p["ENVID"])
	if st := s.tlsState; st != nil {
		msg.TLS = true
		msg.TLSVersion = st.Version
		msg.TLSCipher = st.CipherSuite
		msg.ServerName = st.ServerName
	}
	s.m.mu.Lock()
	s.rec.Messages++
	s.m.mu.Unlock()
	s.m.addMessage(msg)
	id := fmt.Sprintf("%d.%d", s.rec.ID, s.nmsgs)
	text := "OK: queued as " + id
	if r != nil && r.Text != "" {
		text = r.Text
	}
	s.reply(250, "2.0.0", text)
	return r == nil || !r.Close
}

func (s *session) cmdBdat(arg string) bool {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 || (len(f) == 2 && !strings.EqualFold(f[1], "LAST")) {
		s.reply(501, "5.5.4", "Syntax: BDAT size [LAST]")
		return false // cannot know how many bytes follow
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || n < 0 {
		s.reply(501, "5.5.4", "Bad chunk size")
		return false
	}
	last := len(f) == 2
	// The chunk is read in any case, so the dialogue stays in step.
	max := s.maxSize()
	keep := s.inTx && len(s.rcpts) > 0 && !s.bdatBig && int64(len(s.bdat))+n <= max
	s.conn.SetReadDeadline(time.Now().Add(idleTimeout))
	if keep {
		start := len(s.bdat)
		s.bdat = append(s.bdat, make([]byte, n)...)
		if _, err := io.ReadFull(s.r, s.bdat[start:]); err != nil {
			return false
		}
	} else if _, err := io.CopyN(io.Discard, s.r, n); err != nil {
		return false
	}
	switch {
	case !s.inTx:
		s.reply(503, "5.5.1", "Need MAIL before BDAT")
		return true
	case len(s.rcpts) == 0:
		s.reply(554, "5.5.1", "No valid recipients")
		return true
	}
	if !keep {
		s.bdatBig = true
	}
	if !s.bdatActive {
		s.bdatActive = true
		if !s.m.delay(StageDataCmd) {
			return false
		}
		if r := s.m.takeReply(StageDataCmd, ""); r != nil {
			s.resetTx()
			return !s.scripted(r)
		}
	}
	if !last {
		s.reply(250, "2.0.0", fmt.Sprintf("%d octets received", n))
		return true
	}
	return s.finish(s.bdat, s.bdatBig, true)
}
