package smime

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The detached SignedData is written by hand (issue 19.4), like seal's
// envelope: go.mozilla.org/pkcs7 copied the signed content twice (into
// one slice, then into an OCTET STRING it drops again when detaching)
// and marshalled attributes and certificates by reflection. Verification
// stays with pkcs7.

// Signed attribute types (RFC 5652 §11).
var (
	oidContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	// Signature algorithms (RFC 5754 §3.2, §3.3).
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

const (
	tagInteger = 0x02
	tagSet     = 0x31
)

// derVersion1 is INTEGER 1, the version of SignedData and SignerInfo
// with an issuerAndSerialNumber and only data content (RFC 5652 §5.1,
// §5.3).
var derVersion1 = []byte{tagInteger, 1, 1}

// The parts of every signature that never change, in DER.
var (
	derSHA256Alg      = tlv(nil, tagSequence, mustMarshal(oidSHA256)) // AlgorithmIdentifier, no parameters
	derDigestAlgs     = tlv(nil, tagSet, derSHA256Alg)
	derDetachedData   = tlv(nil, tagSequence, mustMarshal(oidData)) // EncapsulatedContentInfo without content
	derSignedDataType = mustMarshal(oidSignedData)
	derRSASigAlg      = tlv(nil, tagSequence, mustMarshal(oidSHA256WithRSA))
	derECDSASigAlg    = tlv(nil, tagSequence, mustMarshal(oidECDSAWithSHA256))
	// contentType attribute: id-data.
	derAttrContentType = tlv(nil, tagSequence, mustMarshal(oidContentType), tlv(nil, tagSet, mustMarshal(oidData)))
	// SMIMECapabilities attribute (RFC 8551 §2.5.2): ourCapabilities.
	derAttrCapabilities  = tlv(nil, tagSequence, mustMarshal(oidSMIMECapabilities), tlv(nil, tagSet, mustMarshal(ourCapabilities())))
	derMessageDigestType = mustMarshal(oidMessageDigest)
	derSigningTimeType   = mustMarshal(oidSigningTime)
)

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// tlv appends the DER element of tag whose content is parts.
func tlv(dst []byte, tag byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	dst = appendDERHeader(slices.Grow(dst, derHeaderLen(n)+n), tag, n)
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return dst
}

// signDetached returns the DER ContentInfo of a SignedData over content
// (in pieces, hashed where they lie) without the content (RFC 8551
// §3.5.3, RFC 5652 §5): SHA-256; signed attributes content-type,
// message-digest, signing-time (now) and SMIMECapabilities; PKCS #1 v1.5
// or ECDSA signature; the signer's certificate and chain, which must be
// the chain of issuers in order (as go.mozilla.org/pkcs7 checked).
func signDetached(content pieces, id Identity, now time.Time) ([]byte, error) {
	if id.Cert == nil || id.Key == nil {
		return nil, errors.New("smime: sign: identity without certificate or key")
	}
	var sigAlg []byte
	switch id.Key.Public().(type) {
	case *rsa.PublicKey:
		sigAlg = derRSASigAlg
	case *ecdsa.PublicKey:
		sigAlg = derECDSASigAlg
	default:
		return nil, fmt.Errorf("smime: sign: unsupported key type %T", id.Key.Public())
	}
	issuer := id.Cert.RawIssuer
	if len(id.Chain) > 0 {
		if err := checkIssuers(id); err != nil {
			return nil, err
		}
		issuer = id.Chain[0].RawSubject
	}
	serial, err := asn1.Marshal(id.Cert.SerialNumber)
	if err != nil {
		return nil, fmt.Errorf("smime: sign: serial number: %w", err)
	}
	signingTime, err := asn1.Marshal(now.UTC()) // UTCTime 1950–2049, else GeneralizedTime (RFC 5652 §11.3)
	if err != nil {
		return nil, fmt.Errorf("smime: sign: signing time: %w", err)
	}
	h := sha256.New()
	for _, p := range content {
		h.Write(p)
	}
	var digest [sha256.Size]byte
	attrs := [][]byte{
		derAttrContentType,
		tlv(nil, tagSequence, derMessageDigestType, tlv(nil, tagSet, tlv(nil, tagOctetString, h.Sum(digest[:0])))),
		tlv(nil, tagSequence, derSigningTimeType, tlv(nil, tagSet, signingTime)),
		derAttrCapabilities,
	}
	// SET OF in DER: the elements in the order of their encodings.
	slices.SortFunc(attrs, bytes.Compare)
	// The signature is over the attributes with the SET OF tag, the
	// SignerInfo carries them with [0] IMPLICIT (RFC 5652 §5.4).
	signed := tlv(nil, tagSet, attrs...)
	sum := sha256.Sum256(signed)
	sig, err := id.signer().Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("smime: sign: %w", err)
	}
	signed[0] = tagExplicit0
	signerInfo := tlv(nil, tagSequence, derVersion1, tlv(nil, tagSequence, issuer, serial), derSHA256Alg,
		signed, sigAlg, tlv(nil, tagOctetString, sig))
	certs := make([][]byte, 0, 1+len(id.Chain))
	certs = append(certs, id.Cert.Raw)
	for _, c := range id.Chain {
		certs = append(certs, c.Raw)
	}
	sd := tlv(nil, tagSequence, derVersion1, derDigestAlgs, derDetachedData,
		tlv(nil, tagExplicit0, certs...), tlv(nil, tagSet, signerInfo))
	return tlv(nil, tagSequence, derSignedDataType, tlv(nil, tagExplicit0, sd)), nil
}

// checkIssuers checks that each certificate of the identity's chain
// signed the one before it, starting with the signer's.
func checkIssuers(id Identity) error {
	c := id.Cert
	for _, p := range id.Chain {
		if err := c.CheckSignatureFrom(p); err != nil {
			return fmt.Errorf("smime: sign: certificate %q is not issued by the next one of the chain, %q: %w", subject(c), subject(p), err)
		}
		c = p
	}
	return nil
}
