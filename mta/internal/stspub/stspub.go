// Package stspub publishes our own MTA-STS policy (RFC 8461 §3.2, §3.3):
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt for each local domain,
// served as text/plain over HTTPS with our certificate. The TXT record
// "_mta-sts.DOMAIN" that announces it carries an id derived from the
// policy text, so it changes exactly when the policy does.
package stspub

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// Policy is what we publish.
type Policy struct {
	Mode   string // enforce, testing or none
	MX     []string
	MaxAge time.Duration
}

// Text is the policy file (RFC 8461 §3.2), CRLF line endings.
func (p Policy) Text() string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\n")
	fmt.Fprintf(&b, "mode: %s\r\n", p.Mode)
	for _, mx := range p.MX {
		fmt.Fprintf(&b, "mx: %s\r\n", mx)
	}
	fmt.Fprintf(&b, "max_age: %d\r\n", int64(p.MaxAge/time.Second))
	return b.String()
}

// ID is the policy id for the TXT record: 1 to 32 alphanumerics.
func (p Policy) ID() string {
	sum := sha256.Sum256([]byte(p.Text()))
	return hex.EncodeToString(sum[:])[:20]
}

// TXT is the record to publish at _mta-sts.DOMAIN.
func (p Policy) TXT(domain string) string {
	return fmt.Sprintf("_mta-sts.%s. IN TXT \"v=STSv1; id=%s\"", domain, p.ID())
}

// Server serves the policy for a set of domains.
type Server struct {
	policy  Policy
	domains map[string]bool
	srv     *http.Server
	ln      net.Listener
}

// Listen binds addr with TLS from cert for the given domains.
func Listen(addr string, cert tls.Certificate, p Policy, domains []string) (*Server, error) {
	s := &Server{policy: p, domains: map[string]bool{}}
	for _, d := range domains {
		s.domains[strings.ToLower(d)] = true
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s.ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve runs until Close.
func (s *Server) Serve() error { return s.srv.Serve(s.ln) }

// Close stops serving.
func (s *Server) Close() error { return s.srv.Close() }

// ServeHTTP answers only GET /.well-known/mta-sts.txt for
// mta-sts.<one of our domains>.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	domain, ok := strings.CutPrefix(strings.TrimSuffix(host, "."), "mta-sts.")
	if !ok || !s.domains[domain] || r.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Cache-Control", "max-age=3600")
	w.Write([]byte(s.policy.Text()))
}
