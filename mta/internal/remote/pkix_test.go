package remote

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/posthorn/posthorn/mta/internal/tlsrpt"
	"github.com/posthorn/posthorn/testbed/ca"
)

// TestPKIXCheckResultType pins the TLS-RPT result type (RFC 8460 §4.3.2)
// of each way a certificate can fail the PKIX check of MTA-STS or the
// verify/secure levels. RFC 8460 gives no precedence when several apply;
// ours: an expired certificate is certificate-expired, a chain that does
// not lead to a trusted root is certificate-not-trusted (whatever its
// names: a self-signed certificate with a default name must be replaced
// by one a CA signed, which then carries the right name), and only a
// trusted chain for other names is certificate-host-mismatch. The same
// certificate gives the same type on every run.
func TestPKIXCheckResultType(t *testing.T) {
	trusted, err := ca.New("PKIX Trusted CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.New("PKIX Unknown CA")
	if err != nil {
		t.Fatal(err)
	}
	tr := &Transport{roots: trusted.Pool()}
	const host = "mx.example.net"
	past := ca.LeafOptions{Expired: true}
	for _, c := range []struct {
		name  string
		issue func() (tls.Certificate, error)
		want  tlsrpt.ResultType
	}{
		{"trusted, right name", func() (tls.Certificate, error) { return trusted.Issue(host) }, ""},
		{"trusted, wrong name", func() (tls.Certificate, error) { return trusted.Issue("wrong.example") }, tlsrpt.CertificateHostMismatch},
		{"unknown CA, right name", func() (tls.Certificate, error) { return other.Issue(host) }, tlsrpt.CertificateNotTrusted},
		{"unknown CA, wrong name", func() (tls.Certificate, error) { return other.Issue("wrong.example") }, tlsrpt.CertificateNotTrusted},
		{"self-signed, wrong name", func() (tls.Certificate, error) { return ca.SelfSigned("localhost") }, tlsrpt.CertificateNotTrusted},
		{"trusted, expired, right name", func() (tls.Certificate, error) { return trusted.IssueWith(past, host) }, tlsrpt.CertificateExpired},
		{"trusted, expired, wrong name", func() (tls.Certificate, error) { return trusted.IssueWith(past, "wrong.example") }, tlsrpt.CertificateExpired},
	} {
		cert, err := c.issue()
		if err != nil {
			t.Fatal(err)
		}
		var chain []*x509.Certificate
		for _, der := range cert.Certificate {
			x, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			chain = append(chain, x)
		}
		for range 3 {
			var err error
			if e := tr.pkixCheck(tls.ConnectionState{PeerCertificates: chain}, []string{host}); e != nil {
				err = &requirementError{err: e} // as VerifyConnection returns it
			}
			if got := tlsrpt.Classify(err); got != c.want {
				t.Errorf("%s: %q (%v), want %q", c.name, got, err, c.want)
			}
		}
	}
}
