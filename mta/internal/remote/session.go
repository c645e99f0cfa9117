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
}

func (c *conn) close() {
	c.c.Close()
}

// dialSpec is what a connection must satisfy.
type dialSpec struct {
	host     string // MX host name, for SNI and certificate checks
	nexthop  string // destination domain
	addr     string // IP:port to dial
	policy   tlspolicy.Policy
	implicit bool // TLS from the first byte (smarthost on 465)
	auth     sasl.Client
	dane     *dane.Result // usable TLSA records when DANE authenticates this host
	// observe checks, without enforcing, what MTA-STS verify would say.
	observe bool
	// requireTLS: the message carries REQUIRETLS: the host must offer it.
	// askRequireTLS: ask for it where offered (secure aliases).
	requireTLS, askRequireTLS bool
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
	return fmt.Sprintf("%s|%s|%s|%v|%s|%s|%v|%s|%v|%v|%v", d.addr, d.host, d.policy.Level, d.policy.Match, fp, d.nexthop, d.implicit, tlsa,
		d.observe, d.requireTLS, d.askRequireTLS)
}

// dial connects, says EHLO and negotiates TLS as the policy demands. Only
// level may falls back to plaintext (after a failed handshake it
// reconnects without STARTTLS, as Postfix does); every other level
// either gets TLS that satisfies it or no connection.
func (t *Transport) dial(ctx context.Context, d dialSpec) (*conn, error) {
	c, err := t.dialOnce(ctx, d, true)
	if err != nil && d.policy.Level == tlspolicy.May || err != nil && d.policy.Level == tlspolicy.Dane {
		var ae *attemptError
		if errors.As(err, &ae) && ae.status == "4.7.5" {
			t.log.Info("TLS handshake failed at level may; retrying in plaintext", "host", d.host, "addr", d.addr, "err", ae.diag)
			return t.dialOnce(ctx, d, false)
		}
	}
	return c, err
}

func (t *Transport) dialOnce(ctx context.Context, d dialSpec, tryTLS bool) (*conn, error) {
	if !d.policy.Level.Valid() {
		// Never reached from config (levels are checked at load), but a
		// policy without a level must not mean "no TLS".
		return nil, tempErr("4.7.5", "no valid TLS level for %s (%v, from %s); not connecting", d.host, d.policy.Level, d.policy.Source)
	}
	dctx, cancel := context.WithTimeout(ctx, t.connectTimeout)
	defer cancel()
	nd := net.Dialer{}
	raw, err := nd.DialContext(dctx, "tcp", d.addr)
	if err != nil {
		return nil, tempErr("4.4.1", "connect to %s[%s]: %s", d.host, d.addr, oneLine(err))
	}
	var info tlsInfo
	if d.implicit {
		tc := tls.Client(raw, t.tlsConfig(d, &info))
		tc.SetDeadline(time.Now().Add(t.commandTimeout))
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			ae := tempErr("4.7.5", "TLS handshake with %s[%s] failed: %s", d.host, d.addr, oneLine(err))
			ae.cause = err
			return nil, ae
		}
		tc.SetDeadline(time.Time{})
		recordTLS(&info, tc.ConnectionState())
		raw = tc
	}
	level := d.policy.Level
	wantTLS := !d.implicit && level != tlspolicy.None && tryTLS
	next, op, err := open(dctx, raw, t.helo, wantTLS, t.tlsConfig(d, &info), t.commandTimeout)
	if err != nil {
		raw.Close()
		var te *tlsError
		if errors.As(err, &te) {
			ae := tempErr("4.7.5", "TLS with %s[%s] failed at level %s: %s", d.host, d.addr, level, oneLine(err))
			ae.cause = te.err
			return nil, ae
		}
		return nil, replyErr(d, "greeting/EHLO/STARTTLS", err)
	}
	if tc, ok := next.(*greetedConn).Conn.(*tls.Conn); ok {
		recordTLS(&info, tc.ConnectionState())
	} else if d.observe {
		info.observed = tempErr("4.7.4", "MTA-STS (testing): %s did not offer STARTTLS", d.host)
	}
	if level.RequiresTLS() && !info.used {
		raw.Close()
		if !op.starttls {
			return nil, tempErr("4.7.4", "TLS is required (level %s), but %s[%s] did not offer STARTTLS", level, d.host, d.addr)
		}
		return nil, tempErr("4.7.4", "TLS is required (level %s), but the session with %s[%s] is not encrypted", level, d.host, d.addr)
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
	return &conn{c: c, raw: raw, key: d.key(), host: d.host, addr: d.addr, tls: info, spec: d, wire: next}, nil
}

func recordTLS(info *tlsInfo, cs tls.ConnectionState) {
	info.used = true
	info.version = strings.Replace(tls.VersionName(cs.Version), "TLS 1.", "TLSv1.", 1)
	info.cipher = tls.CipherSuiteName(cs.CipherSuite)
}

// tlsConfig builds the client TLS config for a level. Certificate checks
// are done in VerifyConnection so that each level checks exactly what it
// promises: nothing (may, encrypt), a pinned digest (fingerprint), or a
// PKIX chain plus the names the policy allows (verify, secure).
func (t *Transport) tlsConfig(d dialSpec, info *tlsInfo) *tls.Config {
	p := d.policy
	cfg := &tls.Config{
		ServerName:         strings.TrimSuffix(d.host, "."),
		InsecureSkipVerify: true, // checked below, per level
		MinVersion:         tls.VersionTLS12,
	}
	if d.dane != nil {
		// RFC 7672 §8.1: SNI is the TLSA base domain; the chain must
		// match a usable TLSA record.
		cfg.ServerName = d.dane.Base
		cfg.VerifyConnection = dane.VerifyConnection(d.dane.Records, d.dane.Names, func(usage uint8) {
			info.verified = fmt.Sprintf("dane-usage-%d", usage)
		})
		return cfg
	}
	switch p.Level {
	case tlspolicy.None, tlspolicy.May, tlspolicy.Dane, tlspolicy.Encrypt, tlspolicy.DaneOnly:
		// may, dane and dane-only without usable TLSA (acting as may and
		// encrypt), encrypt: any certificate.
		cfg.MinVersion = tls.VersionTLS10
		if d.observe {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if err := t.pkixCheck(cs, []string{strings.TrimSuffix(d.host, ".")}); err != nil {
					info.observed = &attemptError{status: "4.7.5", diag: "MTA-STS (testing): " + oneLine(err), cause: err}
				}
				return nil
			}
		}
		return cfg
	}
	// fingerprint, verify, secure; anything else (an unset level) fails
	// every handshake.
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no certificate")
		}
		leaf := cs.PeerCertificates[0]
		switch p.Level {
		case tlspolicy.Fingerprint:
			if !tlspolicy.FingerprintMatches(leaf, p.Fingerprints) {
				return errors.New("certificate fingerprint does not match the policy")
			}
			info.verified = "fingerprint"
			return nil
		case tlspolicy.Verify, tlspolicy.Secure:
			if err := t.pkixCheck(cs, p.MatchNames(d.nexthop, d.host)); err != nil {
				return err
			}
			info.verified = "pkix"
			return nil
		}
		return fmt.Errorf("level %s cannot be checked", p.Level)
	}
	return cfg
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
