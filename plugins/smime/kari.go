package smime

import (
	"bytes"
	"crypto/aes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// This file is ECDH key agreement for CMS: KeyAgreeRecipientInfo
// (RFC 5652 §6.2.2) with ephemeral-static ECDH over the NIST curves as
// RFC 5753 specifies it and RFC 8551 §2.7.1.2 chooses: the shared secret
// through the ANSI X9.63 KDF (dhSinglePass-stdDH-sha*kdf-scheme; the
// cofactor variants are the same computation on prime curves), the
// content-encryption key wrapped with AES key wrap (RFC 3394). Go's
// standard library has ECDH and AES but neither the KDF, the key wrap
// nor the CMS structures; they are here, written from the RFCs.
//
// Encryption picks by curve: P-256 → sha256kdf + aes128-wrap (RFC 8551's
// MUST), P-384 → sha384kdf + aes256-wrap, P-521 → sha512kdf +
// aes256-wrap. Decryption takes any of the sha1/224/256/384/512 KDFs and
// any AES wrap.

var (
	oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidStdDHSHA1   = asn1.ObjectIdentifier{1, 3, 133, 16, 840, 63, 0, 2}
	oidStdDHSHA224 = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 0}
	oidStdDHSHA256 = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 1}
	oidStdDHSHA384 = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 2}
	oidStdDHSHA512 = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 3}
	oidCofDHSHA1   = asn1.ObjectIdentifier{1, 3, 133, 16, 840, 63, 0, 3}
	oidCofDHSHA224 = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 0}
	oidCofDHSHA256 = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 1}
	oidCofDHSHA384 = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 2}
	oidCofDHSHA512 = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 3}
	oidAES128Wrap  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 5}
	oidAES192Wrap  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 25}
	oidAES256Wrap  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 45}
)

// keyAgreeRecipientInfo is RFC 5652's KeyAgreeRecipientInfo; in a
// RecipientInfo it is [1] IMPLICIT.
type keyAgreeRecipientInfo struct {
	Version                int
	Originator             asn1.RawValue // [0] EXPLICIT OriginatorIdentifierOrKey, built and taken apart by hand
	UKM                    []byte        `asn1:"explicit,optional,tag:1"`
	KeyEncryptionAlgorithm pkix.AlgorithmIdentifier
	RecipientEncryptedKeys []recipientEncryptedKey
}

type recipientEncryptedKey struct {
	RID          asn1.RawValue // issuerAndSerialNumber or [0] IMPLICIT RecipientKeyIdentifier
	EncryptedKey []byte
}

// originatorPublicKey is OriginatorPublicKey, [1] IMPLICIT in the
// OriginatorIdentifierOrKey choice.
type originatorPublicKey struct {
	Algorithm pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

// eccCMSSharedInfo is RFC 5753 §7.2's ECC-CMS-SharedInfo, the KDF's
// SharedInfo.
type eccCMSSharedInfo struct {
	KeyInfo     pkix.AlgorithmIdentifier
	EntityUInfo []byte `asn1:"explicit,optional,tag:0"`
	SuppPubInfo []byte `asn1:"explicit,tag:2"`
}

// ECDHScheme names the key agreement used for one recipient, as in
// result headers: "ecdh-sha256kdf-aes128wrap".
type ECDHScheme struct {
	KDF  string // "sha256kdf"
	Wrap string // "aes128wrap"
}

func (s ECDHScheme) String() string { return "ecdh-" + s.KDF + "-" + s.Wrap }

// kdfFor maps a key-agreement algorithm OID to its KDF hash.
func kdfFor(oid asn1.ObjectIdentifier) (func() hash.Hash, string, bool) {
	switch {
	case oid.Equal(oidStdDHSHA1), oid.Equal(oidCofDHSHA1):
		return hashNew(oidSHA1), "sha1kdf", true
	case oid.Equal(oidStdDHSHA224), oid.Equal(oidCofDHSHA224):
		return sha256.New224, "sha224kdf", true
	case oid.Equal(oidStdDHSHA256), oid.Equal(oidCofDHSHA256):
		return sha256.New, "sha256kdf", true
	case oid.Equal(oidStdDHSHA384), oid.Equal(oidCofDHSHA384):
		return sha512.New384, "sha384kdf", true
	case oid.Equal(oidStdDHSHA512), oid.Equal(oidCofDHSHA512):
		return sha512.New, "sha512kdf", true
	}
	return nil, "", false
}

func hashNew(oid asn1.ObjectIdentifier) func() hash.Hash {
	_, f, _ := hashFor(oid)
	return f
}

func wrapKeyLen(oid asn1.ObjectIdentifier) (int, string, bool) {
	switch {
	case oid.Equal(oidAES128Wrap):
		return 16, "aes128wrap", true
	case oid.Equal(oidAES192Wrap):
		return 24, "aes192wrap", true
	case oid.Equal(oidAES256Wrap):
		return 32, "aes256wrap", true
	}
	return 0, "", false
}

// x963KDF is ANSI X9.63's KDF (SEC 1 §3.6.1): Hash(Z || counter ||
// SharedInfo) for counter = 1, 2, … until n bytes.
func x963KDF(h func() hash.Hash, z, sharedInfo []byte, n int) []byte {
	var out []byte
	var ctr [4]byte
	for i := uint32(1); len(out) < n; i++ {
		binary.BigEndian.PutUint32(ctr[:], i)
		d := h()
		d.Write(z)
		d.Write(ctr[:])
		d.Write(sharedInfo)
		out = d.Sum(out)
	}
	return out[:n]
}

// kek derives the key-encryption key from the shared secret z.
func kek(h func() hash.Hash, z, ukm []byte, wrapAlg pkix.AlgorithmIdentifier, kekLen int) ([]byte, error) {
	bits := make([]byte, 4)
	binary.BigEndian.PutUint32(bits, uint32(kekLen*8))
	si, err := asn1.Marshal(eccCMSSharedInfo{KeyInfo: wrapAlg, EntityUInfo: ukm, SuppPubInfo: bits})
	if err != nil {
		return nil, err
	}
	return x963KDF(h, z, si, kekLen), nil
}

var keyWrapIV = []byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}

// aesKeyWrap is RFC 3394 §2.2.1 (the index-based form).
func aesKeyWrap(kek, key []byte) ([]byte, error) {
	if len(key)%8 != 0 || len(key) < 16 {
		return nil, errors.New("smime: key wrap: key length must be a multiple of 8, at least 16")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(key) / 8
	a := append([]byte{}, keyWrapIV...)
	r := append([]byte{}, key...)
	var b [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(b[:8], a)
			copy(b[8:], r[(i-1)*8:i*8])
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a, binary.BigEndian.Uint64(b[:8])^t)
			copy(r[(i-1)*8:], b[8:])
		}
	}
	return append(a, r...), nil
}

// aesKeyUnwrap is RFC 3394 §2.2.2; the integrity check is constant time.
func aesKeyUnwrap(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped)%8 != 0 || len(wrapped) < 24 {
		return nil, errors.New("smime: key unwrap: bad length")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(wrapped)/8 - 1
	a := append([]byte{}, wrapped[:8]...)
	r := append([]byte{}, wrapped[8:]...)
	var b [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(a)^t)
			copy(b[8:], r[(i-1)*8:i*8])
			block.Decrypt(b[:], b[:])
			copy(a, b[:8])
			copy(r[(i-1)*8:], b[8:])
		}
	}
	if subtle.ConstantTimeCompare(a, keyWrapIV) != 1 {
		return nil, errors.New("smime: key unwrap: integrity check failed (wrong key or corrupt message)")
	}
	return r, nil
}

// ecdhCurve returns the crypto/ecdh curve of an ECDSA public key and the
// scheme we encrypt with on it.
func ecdhCurve(pub *ecdsa.PublicKey) (ecdh.Curve, asn1.ObjectIdentifier, func() hash.Hash, asn1.ObjectIdentifier, int, error) {
	switch pub.Curve {
	case elliptic.P256():
		return ecdh.P256(), oidStdDHSHA256, sha256.New, oidAES128Wrap, 16, nil
	case elliptic.P384():
		return ecdh.P384(), oidStdDHSHA384, sha512.New384, oidAES256Wrap, 32, nil
	case elliptic.P521():
		return ecdh.P521(), oidStdDHSHA512, sha512.New, oidAES256Wrap, 32, nil
	}
	return nil, nil, nil, nil, 0, fmt.Errorf("elliptic curve %s is not supported (P-256, P-384, P-521 are)", pub.Curve.Params().Name)
}

// keyAgreeRecipient wraps key for an EC recipient: a fresh ephemeral key
// per recipient, the recipient named by issuer and serial. It returns the
// [1] IMPLICIT KeyAgreeRecipientInfo.
func keyAgreeRecipient(key []byte, cert *x509.Certificate) ([]byte, error) {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("smime: encrypt: certificate %q has no EC key", cert.Subject.CommonName)
	}
	curve, kaOID, h, wrapOID, kekLen, err := ecdhCurve(pub)
	if err != nil {
		return nil, fmt.Errorf("smime: encrypt: certificate %q: %w", cert.Subject.CommonName, err)
	}
	rpub, err := pub.ECDH()
	if err != nil {
		return nil, fmt.Errorf("smime: encrypt: certificate %q: %w", cert.Subject.CommonName, err)
	}
	eph, err := curve.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	z, err := eph.ECDH(rpub)
	if err != nil {
		return nil, err
	}
	wrapAlg := pkix.AlgorithmIdentifier{Algorithm: wrapOID}
	k, err := kek(h, z, nil, wrapAlg, kekLen)
	if err != nil {
		return nil, err
	}
	ek, err := aesKeyWrap(k, key)
	if err != nil {
		return nil, err
	}
	epub := eph.PublicKey().Bytes()
	opk, err := asn1.Marshal(originatorPublicKey{
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidECPublicKey},
		PublicKey: asn1.BitString{Bytes: epub, BitLength: len(epub) * 8},
	})
	if err != nil {
		return nil, err
	}
	opk[0] = 0xa1 // [1] IMPLICIT, constructed
	wrapDER, err := asn1.Marshal(wrapAlg)
	if err != nil {
		return nil, err
	}
	ias, err := asn1.Marshal(issuerAndSerial{Issuer: asn1.RawValue{FullBytes: cert.RawIssuer}, Serial: cert.SerialNumber})
	if err != nil {
		return nil, err
	}
	der, err := asn1.Marshal(keyAgreeRecipientInfo{
		Version:                3,
		Originator:             asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: opk},
		KeyEncryptionAlgorithm: pkix.AlgorithmIdentifier{Algorithm: kaOID, Parameters: asn1.RawValue{FullBytes: wrapDER}},
		RecipientEncryptedKeys: []recipientEncryptedKey{{RID: asn1.RawValue{FullBytes: ias}, EncryptedKey: ek}},
	})
	if err != nil {
		return nil, err
	}
	der[0] = 0xa1 // [1] IMPLICIT in RecipientInfo
	return der, nil
}

// recoverKeyAgree tries one KeyAgreeRecipientInfo (raw: its [1] IMPLICIT
// encoding) with ids. It returns (nil, nil, nil) when none of ids is among
// its recipients.
func recoverKeyAgree(raw asn1.RawValue, ids []Identity, keyLen int) ([]byte, *Envelope, error) {
	seq := append([]byte{}, raw.FullBytes...)
	seq[0] = 0x30
	var ri keyAgreeRecipientInfo
	if err := unmarshalAll(seq, &ri); err != nil {
		return nil, nil, fmt.Errorf("smime: malformed KeyAgreeRecipientInfo: %w", err)
	}
	for _, rek := range ri.RecipientEncryptedKeys {
		for _, id := range ids {
			if id.Cert == nil || !karidMatches(rek.RID, id.Cert) {
				continue
			}
			priv, ok := id.Key.(*ecdsa.PrivateKey)
			if !ok {
				continue
			}
			key, scheme, err := agree(&ri, rek.EncryptedKey, priv)
			if err != nil {
				return nil, nil, err
			}
			if len(key) != keyLen {
				return nil, nil, errors.New("smime: decryption failed (wrong key or corrupt message)")
			}
			return key, &Envelope{Recipient: id.Cert, Transport: ECDH, Agreement: scheme}, nil
		}
	}
	return nil, nil, nil
}

func agree(ri *keyAgreeRecipientInfo, wrapped []byte, priv *ecdsa.PrivateKey) ([]byte, ECDHScheme, error) {
	var scheme ECDHScheme
	h, kdfName, ok := kdfFor(ri.KeyEncryptionAlgorithm.Algorithm)
	if !ok {
		return nil, scheme, fmt.Errorf("smime: unsupported key agreement algorithm %v", ri.KeyEncryptionAlgorithm.Algorithm)
	}
	var wrapAlg pkix.AlgorithmIdentifier
	if err := unmarshalAll(ri.KeyEncryptionAlgorithm.Parameters.FullBytes, &wrapAlg); err != nil {
		return nil, scheme, fmt.Errorf("smime: malformed key wrap algorithm: %w", err)
	}
	kekLen, wrapName, ok := wrapKeyLen(wrapAlg.Algorithm)
	if !ok {
		return nil, scheme, fmt.Errorf("smime: unsupported key wrap %v (3DES wrap is refused)", wrapAlg.Algorithm)
	}
	scheme = ECDHScheme{KDF: kdfName, Wrap: wrapName}
	if ri.Originator.Class != asn1.ClassContextSpecific || ri.Originator.Tag != 0 {
		return nil, scheme, errors.New("smime: malformed KeyAgreeRecipientInfo originator")
	}
	var o asn1.RawValue
	if err := unmarshalAll(ri.Originator.Bytes, &o); err != nil {
		return nil, scheme, fmt.Errorf("smime: malformed originator: %w", err)
	}
	if o.Class != asn1.ClassContextSpecific || o.Tag != 1 {
		return nil, scheme, errors.New("smime: key agreement with a static originator key is not supported (only ephemeral-static)")
	}
	opkDER := append([]byte{}, o.FullBytes...)
	opkDER[0] = 0x30
	var opk originatorPublicKey
	if err := unmarshalAll(opkDER, &opk); err != nil {
		return nil, scheme, fmt.Errorf("smime: malformed originator key: %w", err)
	}
	if !opk.Algorithm.Algorithm.Equal(oidECPublicKey) {
		return nil, scheme, fmt.Errorf("smime: originator key of type %v, want id-ecPublicKey", opk.Algorithm.Algorithm)
	}
	mine, err := priv.ECDH()
	if err != nil {
		return nil, scheme, err
	}
	theirs, err := mine.Curve().NewPublicKey(opk.PublicKey.RightAlign())
	if err != nil {
		return nil, scheme, fmt.Errorf("smime: originator key is not on our key's curve: %w", err)
	}
	z, err := mine.ECDH(theirs)
	if err != nil {
		return nil, scheme, err
	}
	// The SharedInfo's keyInfo is the wrap algorithm exactly as sent.
	k, err := kek(h, z, ri.UKM, pkix.AlgorithmIdentifier{Algorithm: wrapAlg.Algorithm, Parameters: wrapAlg.Parameters}, kekLen)
	if err != nil {
		return nil, scheme, err
	}
	key, err := aesKeyUnwrap(k, wrapped)
	return key, scheme, err
}

// karidMatches matches a KeyAgreeRecipientIdentifier: issuerAndSerialNumber
// or [0] IMPLICIT RecipientKeyIdentifier (subjectKeyIdentifier first).
func karidMatches(rid asn1.RawValue, cert *x509.Certificate) bool {
	if rid.Class == asn1.ClassContextSpecific && rid.Tag == 0 {
		var ski []byte
		if _, err := asn1.Unmarshal(rid.Bytes, &ski); err != nil {
			return false
		}
		return len(cert.SubjectKeyId) > 0 && bytes.Equal(ski, cert.SubjectKeyId)
	}
	return ridMatches(rid, cert)
}

// EncryptionUsable says whether cert can receive encrypted mail from us,
// and if not, why: the key type and curve, and the key usage the RFCs
// require (keyEncipherment for RSA key transport, keyAgreement for ECDH,
// RFC 8550 §4.4.2).
func EncryptionUsable(cert *x509.Certificate) error {
	switch pub := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits (at least 2048 needed)", pub.N.BitLen())
		}
		if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
			return errors.New("key usage lacks keyEncipherment (signing-only certificate)")
		}
	case *ecdsa.PublicKey:
		if _, _, _, _, _, err := ecdhCurve(pub); err != nil {
			return err
		}
		if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageKeyAgreement == 0 {
			return errors.New("EC key without keyAgreement in its key usage (signing-only certificate)")
		}
	default:
		return fmt.Errorf("%s keys cannot receive encrypted S/MIME mail", keyTypeName(cert))
	}
	return nil
}

func keyTypeName(cert *x509.Certificate) string {
	switch cert.PublicKeyAlgorithm {
	case x509.Ed25519:
		return "Ed25519"
	case x509.DSA:
		return "DSA"
	}
	return cert.PublicKeyAlgorithm.String()
}
