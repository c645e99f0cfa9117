// Package mtasts is an HTTPS server on 127.0.0.1 that serves MTA-STS policy
// files (RFC 8461 section 3.3) at /.well-known/mta-sts.txt, chosen by the
// Host header "mta-sts.DOMAIN", with certificates for mta-sts.DOMAIN issued
// on the fly by a testbed CA. Policies and misbehaviours (HTTP status,
// redirect, huge or slow body, wrong content type, bad certificate) can be
// changed per domain while it runs.
//
// The server does not listen on port 443: a client under test must dial
// Addr for every mta-sts.* host name (see Client and DialContext). The
// _mta-sts TXT record (RFC 8461 section 3.1) belongs in the testbed DNS
// server, e.g. zone.TXT("_mta-sts", "v=STSv1; id=1").
package mtasts

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/testbed/ca"
)

// WellKnownPath is where RFC 8461 policies live.
const WellKnownPath = "/.well-known/mta-sts.txt"

// CertKind is the kind of certificate served for a domain.
type CertKind int

const (
	CertValid      CertKind = iota // issued by the CA for mta-sts.DOMAIN
	CertExpired                    // issued by the CA, expired
	CertWrongName                  // issued by the CA for another name
	CertSelfSigned                 // self-signed for mta-sts.DOMAIN
)

// Behaviour is a misbehaviour of one domain's policy host.
type Behaviour struct {
	// Status, if non-zero, is the HTTP status returned instead of the
	// policy (e.g. 404, 500).
	Status int
	// RedirectTo, if set, answers 301 with this Location (RFC 8461 says
	// clients must not follow it).
	RedirectTo string
	// HugeBody, if > 0, serves a body of that many bytes (a valid-looking
	// policy padded with comment-like filler) instead of the policy.
	HugeBody int
	// SlowBody, if > 0, spreads writing the body over this duration.
	SlowBody time.Duration
	// ContentType overrides "text/plain; charset=utf-8".
	ContentType string
	// Cert selects the certificate presented for mta-sts.DOMAIN.
	Cert CertKind
}

// Request is a request the server received.
type Request struct {
	Host   string // Host header, without port
	Path   string
	SNI    string // TLS server name
	Status int    // status answered
	Time   time.Time
}

// Server is a running MTA-STS policy server.
type Server struct {
	ca  *ca.CA
	ln  net.Listener
	srv *http.Server

	closeOnce sync.Once
	closed    chan struct{}

	mu        sync.Mutex
	policies  map[string]string
	behaviour map[string]Behaviour
	certs     map[certKey]*tls.Certificate
	requests  []Request
}

type certKey struct {
	name string
	kind CertKind
}

// Start starts a server on 127.0.0.1 on a free port. Certificates come from
// c; if c is nil a new CA is made (see CA).
func Start(c *ca.CA) (*Server, error) {
	if c == nil {
		var err error
		if c, err = ca.New("mtasts CA"); err != nil {
			return nil, err
		}
	}
	s := &Server{
		ca:        c,
		closed:    make(chan struct{}),
		policies:  make(map[string]string),
		behaviour: make(map[string]Behaviour),
		certs:     make(map[certKey]*tls.Certificate),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		TLSConfig:         &tls.Config{GetCertificate: s.getCertificate},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go s.srv.ServeTLS(ln, "", "")
	return s, nil
}

// Addr returns "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port returns the port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// CA returns the CA whose root the clients must trust.
func (s *Server) CA() *ca.CA { return s.ca }

// URL returns the policy URL for domain as RFC 8461 spells it, with the
// server's port: "https://mta-sts.DOMAIN:PORT/.well-known/mta-sts.txt".
func (s *Server) URL(domain string) string {
	return "https://mta-sts." + canonical(domain) + ":" + strconv.Itoa(s.Port()) + WellKnownPath
}

// Close stops the server.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err = s.srv.Shutdown(ctx); err != nil {
			err = s.srv.Close()
		}
	})
	return err
}

// SetPolicy sets the policy text served for domain (e.g. "example.org"),
// verbatim. See Policy for building one.
func (s *Server) SetPolicy(domain, text string) {
	s.mu.Lock()
	s.policies[canonical(domain)] = text
	s.mu.Unlock()
}

// RemovePolicy makes domain's policy URL answer 404.
func (s *Server) RemovePolicy(domain string) {
	s.mu.Lock()
	delete(s.policies, canonical(domain))
	s.mu.Unlock()
}

// SetBehaviour sets the misbehaviour of domain's policy host; the zero
// Behaviour is good behaviour.
func (s *Server) SetBehaviour(domain string, b Behaviour) {
	s.mu.Lock()
	s.behaviour[canonical(domain)] = b
	s.mu.Unlock()
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Policy returns an RFC 8461 policy text (CRLF line ends) for mode
// ("enforce", "testing" or "none"), max_age in seconds, and MX patterns
// (e.g. "mx.example.org", "*.example.net").
func Policy(mode string, maxAge int, mx ...string) string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + mode + "\r\n")
	for _, m := range mx {
		b.WriteString("mx: " + m + "\r\n")
	}
	b.WriteString("max_age: " + strconv.Itoa(maxAge) + "\r\n")
	return b.String()
}

// DialContext dials the server whatever the address asked for; plug it
// into an http.Transport so that https://mta-sts.DOMAIN/ reaches it.
func (s *Server) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, s.Addr())
}

// Client returns an HTTP client that trusts the server's CA, sends every
// request to the server, and does not follow redirects (as RFC 8461
// requires).
func (s *Server) Client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:     s.DialContext,
			TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool()},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

func canonical(domain string) string {
	return strings.TrimSuffix(strings.ToLower(domain), ".")
}

// domainOf returns DOMAIN for "mta-sts.DOMAIN", else "".
func domainOf(host string) string {
	host = canonical(host)
	if d, ok := strings.CutPrefix(host, "mta-sts."); ok {
		return d
	}
	return ""
}

func (s *Server) getCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := canonical(h.ServerName)
	if name == "" {
		name = "mta-sts.invalid"
	}
	s.mu.Lock()
	kind := s.behaviour[domainOf(name)].Cert
	key := certKey{name, kind}
	if c := s.certs[key]; c != nil {
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	var cert tls.Certificate
	var err error
	switch kind {
	case CertExpired:
		cert, err = s.ca.IssueWith(ca.LeafOptions{Expired: true}, name)
	case CertWrongName:
		cert, err = s.ca.Issue("wrong-name.invalid")
	case CertSelfSigned:
		cert, err = ca.SelfSigned(name)
	default:
		cert, err = s.ca.Issue(name)
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.certs[key] = &cert
	s.mu.Unlock()
	return &cert, nil
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = canonical(host)
	sni := ""
	if r.TLS != nil {
		sni = r.TLS.ServerName
	}
	domain := domainOf(host)
	s.mu.Lock()
	policy, ok := s.policies[domain]
	b := s.behaviour[domain]
	s.mu.Unlock()

	status := http.StatusOK
	defer func() {
		s.mu.Lock()
		s.requests = append(s.requests, Request{Host: host, Path: r.URL.Path, SNI: sni, Status: status, Time: time.Now()})
		s.mu.Unlock()
	}()

	switch {
	case r.URL.Path != WellKnownPath || domain == "" || (!ok && b.HugeBody == 0 && b.Status == 0 && b.RedirectTo == ""):
		status = http.StatusNotFound
		http.NotFound(w, r)
		return
	case b.RedirectTo != "":
		status = http.StatusMovedPermanently
		http.Redirect(w, r, b.RedirectTo, status)
		return
	case b.Status != 0:
		status = b.Status
		http.Error(w, http.StatusText(status), status)
		return
	}
	body := []byte(policy)
	if b.HugeBody > 0 {
		body = make([]byte, 0, b.HugeBody)
		body = append(body, policy...)
		for len(body) < b.HugeBody {
			body = append(body, "x-padding: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"...)
		}
		body = body[:b.HugeBody]
	}
	ct := "text/plain; charset=utf-8"
	if b.ContentType != "" {
		ct = b.ContentType
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if b.SlowBody <= 0 {
		w.Write(body)
		return
	}
	// Write in up to 20 pieces spread over SlowBody.
	pieces := min(20, max(1, len(body)))
	step := b.SlowBody / time.Duration(pieces)
	flusher, _ := w.(http.Flusher)
	for i := range pieces {
		lo, hi := i*len(body)/pieces, (i+1)*len(body)/pieces
		if _, err := w.Write(body[lo:hi]); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		if i == pieces-1 {
			break
		}
		t := time.NewTimer(step)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.closed:
			t.Stop()
			return
		}
	}
}

// ErrNoPolicy is returned by Fetch for a 404.
var ErrNoPolicy = errors.New("mtasts: no policy")

// Fetch fetches domain's policy through Client, a convenience for tests
// of the server itself and for demos (no RFC 8461 validation beyond the
// status code).
func (s *Server) Fetch(ctx context.Context, domain string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://mta-sts."+canonical(domain)+WellKnownPath, nil)
	if err != nil {
		return "", err
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return "", ErrNoPolicy
	case resp.StatusCode != http.StatusOK:
		return string(body), fmt.Errorf("mtasts: HTTP %d", resp.StatusCode)
	}
	return string(body), err
}
