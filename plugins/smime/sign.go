package smime

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mozilla.org/pkcs7"
)

// smimeCapability is one entry of the SMIMECapabilities attribute
// (RFC 8551 §2.5.2).
type smimeCapability struct {
	ID     asn1.ObjectIdentifier
	Params asn1.RawValue `asn1:"optional"`
}

// ourCapabilities is what we announce in every signature: AES-256-GCM,
// AES-256-CBC, RSAES-OAEP, in order of preference.
func ourCapabilities() []smimeCapability {
	return []smimeCapability{
		{ID: oidAES256GCM},
		{ID: oidAES256CBC},
		{ID: oidRSAESOAEP},
		{ID: oidRSAEncryption},
	}
}

// Capabilities is what a correspondent's signature announced.
type Capabilities struct {
	GCM  bool // AES-256-GCM (AuthEnvelopedData) listed
	OAEP bool // RSAES-OAEP listed
}

func parseCapabilities(caps []smimeCapability) Capabilities {
	var c Capabilities
	for _, x := range caps {
		switch {
		case x.ID.Equal(oidAES256GCM):
			c.GCM = true
		case x.ID.Equal(oidRSAESOAEP):
			c.OAEP = true
		}
	}
	return c
}

// SignDetached returns a DER SignedData over content without the content
// (RFC 8551 §3.5.3): SHA-256, signing time, SMIMECapabilities, the
// signer's certificate and chain (signDetached).
func SignDetached(content []byte, id Identity) ([]byte, error) {
	return signDetached(pieces{content}, id, time.Now())
}

// Signature is the outcome of a signature check.
type Signature struct {
	Signer       *x509.Certificate
	Chain        []*x509.Certificate // certificates carried in the message
	Capabilities Capabilities
	Content      []byte // the signed content (for opaque signatures)
}

// VerifyOptions say how a signer is checked.
type VerifyOptions struct {
	Roots *x509.CertPool // trust store; nil: chain not checked
	Now   time.Time      // zero: time.Now()
	From  string         // if set, the certificate must carry this address
}

// Verify checks a CMS SignedData. For a detached signature content is the
// signed MIME entity; for an opaque one content is nil and the embedded
// content is returned in Signature.Content. The signature must be
// mathematically valid, and the signer's certificate must be valid at
// opts.Now, chain to opts.Roots, allow email protection and digital
// signature, and carry opts.From.
func Verify(sig, content []byte, opts VerifyOptions) (res *Signature, err error) {
	// go.mozilla.org/pkcs7 is archived; a panic on hostile input stays an
	// error.
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, errors.New("smime: malformed CMS SignedData")
		}
	}()
	norm, err := normalizeBER(sig)
	if err != nil {
		return nil, err
	}
	p7, err := parsePKCS7(norm)
	if err != nil {
		return nil, err
	}
	if content != nil {
		p7.Content = content
	}
	if len(p7.Signers) != 1 {
		return nil, fmt.Errorf("smime: %d signers; exactly one is supported", len(p7.Signers))
	}
	signer := p7.GetOnlySigner()
	if signer == nil {
		return nil, errors.New("smime: the signer's certificate is not in the message")
	}
	if err := p7.Verify(); err != nil {
		if cerr := CheckCert(signer, p7.Certificates, opts); cerr != nil {
			return nil, cerr // the more telling reason (expired, …)
		}
		return nil, fmt.Errorf("smime: bad signature: %w", err)
	}
	res = &Signature{Signer: signer, Chain: p7.Certificates, Content: p7.Content}
	var caps []smimeCapability
	if err := p7.UnmarshalSignedAttribute(oidSMIMECapabilities, &caps); err == nil {
		res.Capabilities = parseCapabilities(caps)
	}
	if err := CheckCert(signer, p7.Certificates, opts); err != nil {
		return res, err
	}
	return res, nil
}

func parsePKCS7(der []byte) (p7 *pkcs7.PKCS7, err error) {
	// pkcs7 has panicked on hostile input before; keep a panic an error.
	defer func() {
		if r := recover(); r != nil {
			p7, err = nil, fmt.Errorf("smime: malformed CMS SignedData")
		}
	}()
	p7, err = pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("smime: malformed CMS SignedData: %w", err)
	}
	return p7, nil
}

// CheckCert checks that cert is fit for S/MIME with the address
// opts.From: valid now, chaining to opts.Roots (if set) through
// intermediates, key usage allowing signatures or key encipherment,
// extended key usage (if present) allowing email protection.
func CheckCert(cert *x509.Certificate, intermediates []*x509.Certificate, opts VerifyOptions) error {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("smime: certificate %q is not valid before %s", subject(cert), cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(cert.NotAfter) {
		return fmt.Errorf("smime: certificate %q expired at %s", subject(cert), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment|x509.KeyUsageContentCommitment) == 0 {
		return fmt.Errorf("smime: certificate %q: key usage allows neither signatures nor key encipherment", subject(cert))
	}
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		ok := false
		for _, u := range cert.ExtKeyUsage {
			if u == x509.ExtKeyUsageEmailProtection || u == x509.ExtKeyUsageAny {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("smime: certificate %q: extended key usage does not allow email protection", subject(cert))
		}
	}
	if opts.From != "" && !certHasAddress(cert, opts.From) {
		return fmt.Errorf("smime: certificate %q is not for %s (it names %s)", subject(cert), opts.From, strings.Join(CertAddresses(cert), ", "))
	}
	if opts.Roots != nil {
		pool := x509.NewCertPool()
		for _, c := range intermediates {
			pool.AddCert(c)
		}
		if _, err := cert.Verify(x509.VerifyOptions{
			Roots: opts.Roots, Intermediates: pool, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		}); err != nil {
			return fmt.Errorf("smime: certificate %q: %w", subject(cert), err)
		}
	}
	return nil
}

// oidEmailAddress is PKCS #9 emailAddress, still used in subjects.
var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// CertAddresses lists the mail addresses of cert, lower-cased:
// rfc822Name SANs and, for old certificates, emailAddress in the subject.
func CertAddresses(cert *x509.Certificate) []string {
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		a = strings.ToLower(strings.TrimSpace(a))
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, a := range cert.EmailAddresses {
		add(a)
	}
	for _, n := range cert.Subject.Names {
		if n.Type.Equal(oidEmailAddress) {
			if s, ok := n.Value.(string); ok {
				add(s)
			}
		}
	}
	return out
}

func certHasAddress(cert *x509.Certificate, addr string) bool {
	addr = strings.ToLower(addr)
	for _, a := range CertAddresses(cert) {
		if a == addr {
			return true
		}
	}
	return false
}

func subject(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return pkix.Name(c.Subject).String()
}
