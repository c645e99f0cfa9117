// Package remotemta runs fake remote SMTP servers on 127.0.0.1 for tests
// and demos: every TLS behaviour a delivering MTA meets on the internet
// (no STARTTLS, self-signed, valid, wrong name, broken handshake, implicit
// TLS), scripted replies and delays per stage, optional extensions, and a
// record of everything received.
//
// The server speaks SMTP as in RFC 5321 (strict <CRLF>.<CRLF> end of data,
// dot-unstuffing, pipelining per RFC 2920) with STARTTLS (RFC 3207),
// implicit TLS (RFC 8314), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8
// (RFC 6531), DSN (RFC 3461), CHUNKING/BDAT (RFC 3030), REQUIRETLS
// (RFC 8689, offered only under TLS), ENHANCEDSTATUSCODES (RFC 2034/3463)
// and AUTH PLAIN (RFC 4954, RFC 4616). The protocol engine is its own
// rather than go-smtp's server so that greetings, capabilities and TLS
// failures can be scripted exactly; tests use go-smtp's client against it.
package remotemta

import (
	"crypto/tls"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/posthorn/posthorn/testbed/ca"
)

// Mode is the server's TLS behaviour.
type Mode int

const (
	// NoSTARTTLS: plain SMTP, STARTTLS neither offered nor accepted.
	NoSTARTTLS Mode = iota
	// STARTTLSSelfSigned offers STARTTLS with a self-signed certificate
	// for Hostname.
	STARTTLSSelfSigned
	// STARTTLSValid offers STARTTLS with a certificate for Hostname issued
	// by Config.CA.
	STARTTLSValid
	// STARTTLSWrongName offers STARTTLS with a certificate from Config.CA
	// for a different name (WrongName).
	STARTTLSWrongName
	// STARTTLSBroken offers STARTTLS, answers 220, and then breaks the
	// handshake as Config.Break says.
	STARTTLSBroken
	// ImplicitTLS speaks TLS from the first byte (port 465 style) with a
	// certificate for Hostname from Config.CA.
	ImplicitTLS
)

func (m Mode) String() string {
	switch m {
	case NoSTARTTLS:
		return "no-starttls"
	case STARTTLSSelfSigned:
		return "starttls-self-signed"
	case STARTTLSValid:
		return "starttls-valid"
	case STARTTLSWrongName:
		return "starttls-wrong-name"
	case STARTTLSBroken:
		return "starttls-broken"
	case ImplicitTLS:
		return "implicit-tls"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Break says how STARTTLSBroken breaks the handshake.
type Break int

const (
	// BreakClose closes the connection right after "220 Ready to start TLS".
	BreakClose Break = iota
	// BreakGarbage writes plain text where the ServerHello should be, then
	// closes.
	BreakGarbage
	// BreakAlert starts the handshake and aborts it with a TLS alert
	// (handshake_failure).
	BreakAlert
)

// WrongName is the name in STARTTLSWrongName certificates.
const WrongName = "wrong-name.invalid"

// Stage is a point in the SMTP dialogue where a reply or delay can be
// scripted.
type Stage int

const (
	StageConnect  Stage = iota // the greeting
	StageHelo                  // reply to EHLO/HELO
	StageStartTLS              // reply to STARTTLS (e.g. 454)
	StageAuth                  // reply to AUTH (after credentials)
	StageMail                  // reply to MAIL FROM
	StageRcpt                  // reply to RCPT TO (see also SetRcptReply)
	StageDataCmd               // reply to DATA (instead of 354) or first BDAT
	StageData                  // final reply after the message data
	numStages
)

func (s Stage) String() string {
	return [...]string{"connect", "helo", "starttls", "auth", "mail", "rcpt", "datacmd", "data"}[s]
}

// Reply is a scripted SMTP reply.
type Reply struct {
	Code     int    // e.g. 451, 550; a 2xx at StageConnect/StageHelo/StageData just changes the text
	Enhanced string // enhanced status code, e.g. "4.3.0"; optional
	Text     string // may contain "\n" for a multi-line reply
	// Close closes the connection after the reply (421 always does).
	Close bool
	// Times applies the reply to the next Times occurrences only, then
	// the stage behaves normally again; 0 means until changed.
	Times int
}

func (r Reply) String() string {
	return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
}

// Config configures a remote MTA. The zero value is a plain SMTP server
// without STARTTLS called "mx.testbed.test" that accepts everything.
type Config struct {
	Mode Mode
	// Hostname is the name in greeting and EHLO reply, and the "right
	// name" in certificates. Default "mx.testbed.test".
	Hostname string
	// CA issues the certificates of STARTTLSValid, STARTTLSWrongName and
	// ImplicitTLS; a new CA is made if nil (see MTA.CA).
	CA *ca.CA
	// Certificate, if set, is served instead of the one Mode implies (any
	// TLS mode), e.g. an expired one or one pinned by a TLSA record.
	Certificate *tls.Certificate
	// Break is the kind of failure of STARTTLSBroken.
	Break Break
	// TLSMinVersion/TLSMaxVersion limit the TLS versions offered.
	TLSMinVersion, TLSMaxVersion uint16

	// SizeLimit > 0 advertises "SIZE n" and rejects larger messages
	// (552 5.3.4); 0 advertises "SIZE" without a limit.
	SizeLimit int64
	// NoSIZE does not advertise SIZE (SIZE= is then rejected).
	NoSIZE bool
	// No8BITMIME does not advertise 8BITMIME (BODY=8BITMIME is rejected).
	No8BITMIME bool
	// NoPIPELINING does not advertise PIPELINING (the server still
	// copes with pipelined commands).
	NoPIPELINING bool
	SMTPUTF8     bool // advertise and accept SMTPUTF8
	DSN          bool // advertise DSN; accept RET, ENVID, NOTIFY, ORCPT
	REQUIRETLS   bool // advertise REQUIRETLS (only under TLS, RFC 8689)
	CHUNKING     bool // advertise CHUNKING (BDAT is accepted regardless)

	// AuthUser/AuthPassword enable AUTH PLAIN with these credentials.
	AuthUser, AuthPassword string
	// AuthBeforeTLS also offers AUTH on connections without TLS (normally
	// AUTH is offered only under TLS).
	AuthBeforeTLS bool
	// AuthRequired rejects MAIL without successful AUTH (530 5.7.0).
	AuthRequired bool

	// MaxMessagesPerConn > 0 answers MAIL with 421 4.7.0 and closes the
	// connection once that many messages were accepted on it.
	MaxMessagesPerConn int
	// MaxMessageBytes bounds what is kept of one message regardless of
	// SizeLimit (default 64 MiB); more is read and rejected with 552.
	MaxMessageBytes int64

	// Replies and Delays are scripted from the start (see SetReply,
	// SetDelay).
	Replies map[Stage]Reply
	Delays  map[Stage]time.Duration
}

func (c *Config) hostname() string {
	if c.Hostname == "" {
		return "mx.testbed.test"
	}
	return strings.TrimSuffix(c.Hostname, ".")
}
