package smtpd

import (
	"crypto/tls"
	"net"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/milter"
)

// The milter glue of a session: the milters see MAIL and RCPT after our
// own checks passed, and the message in the acceptor (Meta.Milters).

// milterMail starts the milters' transaction: the queue ID is reserved
// now, for their macro i.
func (s *session) milterMail(from string, opts *smtp.MailOptions) error {
	if s.l.milters == nil {
		return nil
	}
	if s.ms == nil {
		s.ms = s.l.milters.NewSession(s.milterInfo(), s.log)
	}
	if cs, ok := s.tlsState(); ok {
		s.ms.SetTLS(tlsVersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), cipherBits(cs.CipherSuite))
	}
	s.ms.SetAuth(s.authMech, s.authUser)
	s.queueID = s.l.acceptor.NewID()
	var args []string
	if opts.Size > 0 {
		args = append(args, "SIZE="+strconv.FormatInt(opts.Size, 10))
	}
	if opts.Body != "" {
		args = append(args, "BODY="+string(opts.Body))
	}
	if opts.UTF8 {
		args = append(args, "SMTPUTF8")
	}
	if opts.RequireTLS {
		args = append(args, "REQUIRETLS")
	}
	return s.ms.Mail(s.queueID, from, args)
}

func (s *session) milterRcpt(to string, opts *smtp.RcptOptions) error {
	if s.ms == nil {
		return nil
	}
	var args []string
	if len(opts.Notify) > 0 {
		var n []string
		for _, v := range opts.Notify {
			n = append(n, string(v))
		}
		args = append(args, "NOTIFY="+strings.Join(n, ","))
	}
	return s.ms.Rcpt(to, args)
}

func (s *session) milterInfo() milter.Info {
	port := 0
	if ta, ok := s.conn.Conn().RemoteAddr().(*net.TCPAddr); ok {
		port = ta.Port
	}
	daemonAddr := ""
	if ta, ok := s.conn.Conn().LocalAddr().(*net.TCPAddr); ok {
		daemonAddr = ta.IP.String()
	}
	return milter.Info{Hostname: s.l.hostname, DaemonName: s.l.name, DaemonAddr: daemonAddr,
		ClientAddr: s.ip.String(), ClientPort: port, Helo: s.conn.Hostname()}
}

// cipherBits is the symmetric key size of a TLS cipher suite (macro
// {cipher_bits}).
func cipherBits(id uint16) int {
	name := tls.CipherSuiteName(id)
	switch {
	case strings.Contains(name, "AES_128"):
		return 128
	case strings.Contains(name, "AES_256"), strings.Contains(name, "CHACHA20"):
		return 256
	}
	return 0
}
