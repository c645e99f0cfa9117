package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/dane"
	"github.com/posthorn/posthorn/mta/internal/tlspolicy"
)

// attemptError is why one connection attempt gave no transaction. The
// delivery goes on to the next address or MX host (RFC 5321 §5.1).
type attemptError struct {
	status string // enhanced status for the recipients if this stays the last word
	diag   string
	// permanent: no other MX would do better (e.g. 5xx greeting is not
	// that; only local decisions like "message too big" are).
	permanent bool
	// cause is the underlying TLS or certificate error, for TLS-RPT.
	cause error
	// ours: only our own side (secure alias, policy map, REQUIRETLS)
	// demanded what failed; TLS-RPT leaves it out of the recipient's
	// report. dnssec: a failed or bogus DNSSEC lookup.
	ours, dnssec bool
	// localIP is the address we connected from, if we connected.
	localIP string
}

func (e *attemptError) Error() string { return e.diag }

func tempErr(status, format string, a ...any) *attemptError {
	return &attemptError{status: status, diag: fmt.Sprintf(format, a...)}
}

// tlsInfo records what TLS a session used.
type tlsInfo struct {
	used     bool
	version  string
	cipher   string
	verified string // how the peer was authenticated: "", "pkix", "fingerprint"
	// observed: what an MTA-STS policy in testing mode would have
	// refused (recorded for TLS-RPT, delivery goes on).
	observed *attemptError
}

func (t tlsInfo) String() string {
	if !t.used {
		return "plaintext"
	}
	s := t.version + " " + t.cipher
	if t.verified != "" {
		s += " verified=" + t.verified
	}
	return s
}

// conn is one SMTP client connection, possibly reused.
type conn struct {
	c       *smtp.Client
	raw     net.Conn
	key     string
	host    string // MX host name (or smarthost)
	addr    string // IP:port
	tls     tlsInfo
	msgs    int
	lastUse time.Time
	spec    dialSpec
	// wire is the connection go-smtp's client speaks on (TLS if any);
	// the pipelined transaction writes and reads there too.
	wire            net.Conn
	ext8bit, extDSN bool
	localIP         string
	// txnOpen: a mail transaction may still be open on the server: the
	// last pipelined one ended before its end-of-data reply (MAIL, every
	// RCPT or the DATA command refused). The next pipelined transaction
	// puts RSET in front of its MAIL. A completed transaction needs no
	// RSET: the end of the data ends it, whatever the reply (RFC 5321
	// §4.1.1.4).
	txnOpen bool
	// unusable: the connection is in a state no command can follow (the
	// DATA phase was left unfinished); it is closed, never reused.
	unusable bool
}

func (c *conn) close() {
	c.c.Close()
}

// dialSpec is what a connection must satisfy.
type dialSpec struct {
	host     string // MX host name, for SNI and certificate checks
	nexthop  string // destination domain
	addr     string // IP:port to dial
	policy   tlspolicy.Effective
	implicit bool // TLS from the first byte (smarthost on 465)
	auth     sasl.Client
	dane     *dane.Result // usable TLSA records when DANE authenticates this host
	// requireTLS: the message carries REQUIRETLS: the host must offer it.
	// askRequireTLS: ask for it where offered (secure aliases).
	requireTLS, askRequireTLS bool
	// source is the local address to connect from ("" for any).
	source string
}

func (d dialSpec) key() string {
	fp := ""
	for _, f := range d.policy.Fingerprints {
		fp += fmt.Sprintf("%x,", f)
	}
	tlsa := ""
	if d.dane != nil {
		for _, r := range d.dane.Records {
			tlsa += r.String() + ","
		}
	}
	p := d.policy
	return fmt.Sprintf("%s|%s|%s|%v|%v|%v|%v|%v|%s|%s|%v|%s|%v|%v|%s", d.addr, d.host, p.Level, p.TryTLS, p.RequireTLS, p.DANE, p.PKIX, p.ObservePKIX,
		fp, d.nexthop, d.implicit, tlsa, d.requireTLS, d.askRequireTLS, d.source)
}

// dial connects, says EHLO and negotiates TLS as the policy demands. Only
// level may falls back to plaintext (after a failed handshake it
// reconnects without STARTTLS, as Postfix does); every other level
// either gets TLS that satisfies it or no connection.
func (t *Transport) dial(ctx context.Context, d dialSpec) (*conn, error) {
	c, err := t.dialOnce(ctx, d, true)
	if err != nil && d.policy.TryTLS && !d.policy.RequireTLS && d.policy.Refuse == nil {
		var ae *attemptError
		if errors.As(err, &ae) && ae.status == "4.7.5" {
			t.log.Info("TLS handshake failed at level may; retrying in plaintext", "host", d.host, "addr", d.addr, "err", ae.diag)
			return t.dialOnce(ctx, d, false)
		}
	}
	return c, err
}

func (t *Transport) dialOnce(ctx context.Context, d dialSpec, tryTLS bool) (*conn, error) {
	if !d.policy.Level.Valid() || d.policy.Refuse != nil {
		// Never reached (levels are checked at load, refusals before
		// dialling), but a policy without a level must not mean "no TLS".
		return nil, tempErr("4.7.5", "no valid TLS policy for %s (level %v); not connecting", d.host, d.policy.Level)
	}
	dctx, cancel := context.WithTimeout(ctx, t.connectTimeout)
	defer cancel()
	raw, err := dialerFrom(d.source).DialContext(dctx, "tcp", d.addr)
	if err != nil {
		return nil, tempErr("4.4.1", "connect to %s[%s]: %s", d.host, d.addr, oneLine(err))
	}
	localIP := ""
	if la, ok := raw.LocalAddr().(*net.TCPAddr); ok {
		localIP = la.IP.String()
	}
	var info tlsInfo
	if d.implicit {
		tc := tls.Client(raw, t.tlsConfig(d, &info))
		tc.SetDeadline(time.Now().Add(t.commandTimeout))
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			ae := tempErr("4.7.5", "TLS handshake with %s[%s] failed: %s", d.host, d.addr, oneLine(err))
			ae.cause, ae.localIP = err, localIP
			markOurs(ae, err)
			return nil, ae
		}
		tc.SetDeadline(time.Time{})
		recordTLS(&info, tc.ConnectionState())
		raw = tc
	}
	level := d.policy.Level
	wantTLS := !d.implicit && d.policy.TryTLS && tryTLS
	next, op, err := open(dctx, raw, t.helo, wantTLS, t.tlsConfig(d, &info), t.commandTimeout)
	if err != nil {
		raw.Close()
		var te *tlsError
		if errors.As(err, &te) {
			ae := tempErr("4.7.5", "TLS with %s[%s] failed at level %s: %s", d.host, d.addr, level, oneLine(err))
			ae.cause, ae.localIP = te.err, localIP
			markOurs(ae, te.err)
			return nil, ae
		}
		ae := replyErr(d, "greeting/EHLO/STARTTLS", err)
		ae.localIP = localIP
		return nil, ae
	}
	if tc, ok := next.(*greetedConn).Conn.(*tls.Conn); ok {
		recordTLS(&info, tc.ConnectionState())
	} else if d.policy.ObservePKIX {
		info.observed = tempErr("4.7.4", "MTA-STS (testing): %s did not offer STARTTLS", d.host)
	}
	if d.policy.RequireTLS && !info.used {
		raw.Close()
		var ae *attemptError
		if !op.starttls {
			ae = tempErr("4.7.4", "TLS is required (%s), but %s[%s] did not offer STARTTLS", level, d.host, d.addr)
		} else {
			ae = tempErr("4.7.4", "TLS is required (%s), but the session with %s[%s] is not encrypted", level, d.host, d.addr)
		}
		ae.localIP, ae.ours = localIP, !d.policy.RecipientTLS
		return nil, ae
	}
	c := smtp.NewClient(next)
	c.CommandTimeout = t.commandTimeout
	c.SubmissionTimeout = t.dataTimeout
	if err := c.Hello(t.helo); err != nil {
		c.Close()
		return nil, replyErr(d, "EHLO", err)
	}
	if d.auth != nil {
		if !info.used {
			c.Close()
			return nil, tempErr("4.7.4", "refusing to send credentials to %s[%s] without TLS", d.host, d.addr)
		}
		if err := c.Auth(d.auth); err != nil {
			c.Close()
			return nil, replyErr(d, "AUTH", err)
		}
	}
	return &conn{c: c, raw: raw, key: d.key(), host: d.host, addr: d.addr, tls: info, spec: d, wire: next, localIP: localIP}, nil
}

func recordTLS(info *tlsInfo, cs tls.ConnectionState) {
	info.used = true
	info.version = strings.Replace(tls.VersionName(cs.Version), "TLS 1.", "TLSv1.", 1)
	info.cipher = tls.CipherSuiteName(cs.CipherSuite)
}

// tlsConfig builds the client TLS config for an effective policy. The
// certificate checks run in VerifyConnection, and every demand of the
// policy is checked: the host's TLSA records (DANE), each set of names
// a PKIX-valid chain must carry (verify, secure, MTA-STS), the pinned
// fingerprints. Without any, any certificate is accepted (may,
// encrypt, unusable TLSA).
func (t *Transport) tlsConfig(d dialSpec, info *tlsInfo) *tls.Config {
	p := d.policy
	cfg := &tls.Config{
		ServerName:         strings.TrimSuffix(d.host, "."),
		InsecureSkipVerify: true, // checked below, per demand
		MinVersion:         tls.VersionTLS12,
	}
	type check struct {
		ours  bool // not a policy the recipient published
		label string
		fn    func(tls.ConnectionState) error
	}
	var checks []check
	if p.DANE {
		if d.dane == nil || len(d.dane.Records) == 0 {
			checks = append(checks, check{false, "dane", func(tls.ConnectionState) error { return dane.ErrNoUsable }})
		} else {
			// RFC 7672 §8.1: SNI is the TLSA base domain; the chain must
			// match a usable TLSA record.
			cfg.ServerName = d.dane.Base
			usage := ""
			vc := dane.VerifyConnection(d.dane.Records, d.dane.Names, func(u uint8) { usage = fmt.Sprintf("dane-usage-%d", u) })
			checks = append(checks, check{false, "dane", func(cs tls.ConnectionState) error {
				if err := vc(cs); err != nil {
					return err
				}
				info.verified = joinVerified(info.verified, usage)
				return nil
			}})
		}
	}
	for _, n := range p.PKIX {
		names := n.Names
		checks = append(checks, check{!strings.HasPrefix(n.Source, "MTA-STS"), "pkix", func(cs tls.ConnectionState) error {
			return t.pkixCheck(cs, names)
		}})
	}
	if len(p.Fingerprints) > 0 {
		checks = append(checks, check{true, "fingerprint", func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !tlspolicy.FingerprintMatches(cs.PeerCertificates[0], p.Fingerprints) {
				return errors.New("certificate fingerprint does not match the policy")
			}
			return nil
		}})
	}
	if len(checks) == 0 {
		// Opportunistic or unauthenticated TLS: any certificate.
		cfg.MinVersion = tls.VersionTLS10
		if p.ObservePKIX {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if err := t.pkixCheck(cs, []string{strings.TrimSuffix(d.host, ".")}); err != nil {
					info.observed = &attemptError{status: "4.7.5", diag: "MTA-STS (testing): " + oneLine(err), cause: err}
				}
				return nil
			}
		}
		return cfg
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no certificate")
		}
		for _, c := range checks {
			if err := c.fn(cs); err != nil {
				return &requirementError{ours: c.ours, err: err}
			}
			if c.label != "dane" {
				info.verified = joinVerified(info.verified, c.label)
			}
		}
		return nil
	}
	return cfg
}

// requirementError is a failed certificate check, with whether only our
// own side demanded it.
type requirementError struct {
	ours bool
	err  error
}

func (e *requirementError) Error() string { return e.err.Error() }
func (e *requirementError) Unwrap() error { return e.err }

// markOurs flags an attempt error whose cause is a check only our own
// side demanded.
func markOurs(ae *attemptError, err error) {
	var re *requirementError
	if errors.As(err, &re) && re.ours {
		ae.ours = true
	}
}

func joinVerified(have, add string) string {
	if have == "" {
		return add
	}
	if strings.Contains("+"+have+"+", "+"+add+"+") {
		return have
	}
	return have + "+" + add
}

// pkixCheck validates the presented chain against our roots and the names.
func (t *Transport) pkixCheck(cs tls.ConnectionState, names []string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: t.roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("certificate not trusted: %w", err)
	}
	if !tlspolicy.CertMatchesName(leaf, names) {
		return x509.HostnameError{Certificate: leaf, Host: strings.Join(names, ",")}
	}
	return nil
}

// replyErr turns a failed command into an attempt error: a 4xx or 5xx
// greeting/EHLO means "try the next host"; so does a dropped connection.
func replyErr(d dialSpec, stage string, err error) *attemptError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		st := enhanced(se)
		if se.Code >= 500 {
			st = "4" + st[1:] // another MX may accept; the queue retries
		}
		return &attemptError{status: st, diag: fmt.Sprintf("%s[%s] said at %s: %d %s %s", d.host, d.addr, stage, se.Code, enhancedString(se), oneLine(errors.New(se.Message)))}
	}
	return tempErr("4.4.2", "%s[%s]: lost connection at %s: %s", d.host, d.addr, stage, oneLine(err))
}

// enhanced is the reply's enhanced status code, or one derived from the
// basic code (RFC 3463).
func enhanced(se *smtp.SMTPError) string {
	ec := se.EnhancedCode
	if ec != smtp.NoEnhancedCode && ec != smtp.EnhancedCodeNotSet && ec[0] >= 2 && ec[0] <= 5 {
		return fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
	}
	return fmt.Sprintf("%d.0.0", se.Code/100)
}

func enhancedString(se *smtp.SMTPError) string {
	ec := se.EnhancedCode
	if ec != smtp.NoEnhancedCode && ec != smtp.EnhancedCodeNotSet {
		return fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
	}
	return ""
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

var _ = io.EOF
