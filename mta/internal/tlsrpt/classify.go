package tlsrpt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/posthorn/posthorn/mta/internal/dane"
	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/resolver"
)

// Classify maps an error from setting up a TLS session (the handshake
// with its certificate checks, a DANE verification, an MTA-STS fetch or
// a DNS lookup) to the result type to record:
//
//   - *mtasts.FetchError: its ResultType (sts-policy-fetch-error,
//     sts-policy-invalid, sts-webpki-invalid);
//   - dane.NameError and x509.HostnameError: certificate-host-mismatch;
//   - an expired or not yet valid certificate: certificate-expired;
//   - dane.ErrNoMatch, dane.ErrNoUsable: tlsa-invalid;
//   - x509.UnknownAuthorityError and other certificate errors:
//     certificate-not-trusted;
//   - resolver.ErrBogus (SERVFAIL): dnssec-invalid;
//   - anything else: validation-failure.
//
// starttls-not-supported and dane-required are decided by the caller
// (the server offered no STARTTLS; DANE was required but no usable TLSA
// records were found).
func Classify(err error) ResultType {
	var fe *mtasts.FetchError
	var ne *dane.NameError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	var cve *tls.CertificateVerificationError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &fe):
		return ResultType(fe.ResultType)
	case errors.As(err, &ne), errors.As(err, &he):
		return CertificateHostMismatch
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return CertificateExpired
	case errors.Is(err, dane.ErrNoMatch), errors.Is(err, dane.ErrNoUsable):
		return TLSAInvalid
	case errors.As(err, &ua), errors.As(err, &ci), errors.As(err, &cve):
		return CertificateNotTrusted
	case errors.Is(err, resolver.ErrBogus):
		return DNSSECInvalid
	}
	return ValidationFailure
}
