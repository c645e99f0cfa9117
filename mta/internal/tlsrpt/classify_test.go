package tlsrpt

import (
	"crypto/x509"
	"errors"
	"fmt"
	"testing"

	"github.com/posthorn/posthorn/mta/internal/dane"
	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/resolver"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want ResultType
	}{
		{nil, ""},
		{&mtasts.FetchError{Domain: "x", ResultType: mtasts.ResultWebPKIError, Err: errors.New("x")}, STSWebPKIInvalid},
		{fmt.Errorf("wrapped: %w", &mtasts.FetchError{ResultType: mtasts.ResultInvalid, Err: errors.New("x")}), STSPolicyInvalid},
		{&dane.NameError{Names: []string{"a"}, Cert: &x509.Certificate{}}, CertificateHostMismatch},
		{x509.HostnameError{Certificate: &x509.Certificate{}, Host: "a"}, CertificateHostMismatch},
		{fmt.Errorf("dane: %w", x509.CertificateInvalidError{Reason: x509.Expired}), CertificateExpired},
		{x509.CertificateInvalidError{Reason: x509.NotAuthorizedToSign}, CertificateNotTrusted},
		{x509.UnknownAuthorityError{}, CertificateNotTrusted},
		{dane.ErrNoMatch, TLSAInvalid},
		{dane.ErrNoUsable, TLSAInvalid},
		{&resolver.Error{Err: resolver.ErrBogus}, DNSSECInvalid},
		{errors.New("handshake failure"), ValidationFailure},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.err, got, tc.want)
		}
	}
}
