package smime

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
	"math/big"
)

// This file is the CMS (RFC 5652) key-transport envelope code that
// go.mozilla.org/pkcs7 lacks or gets wrong, written with encoding/asn1:
//
//   - EnvelopedData (RFC 5652 §6) with AES-256-CBC content encryption
//     (RFC 3565),
//   - AuthEnvelopedData (RFC 5083) with AES-256-GCM (RFC 5084), as
//     RFC 8551 §2.7 wants,
//   - key transport to RSA recipients with RSAES-OAEP (RFC 3560, RFC 8017)
//     or RSAES-PKCS1-v1_5,
//
// both ways (encrypt and decrypt), and a BER normaliser (indefinite
// lengths, constructed OCTET STRINGs) so that streamed output of other
// implementations parses. DES and 3DES are neither written nor read.

// Object identifiers.
var (
	oidData                 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidEnvelopedData        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidAuthEnvelopedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
	oidAES256CBC            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidAES256GCM            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}
	oidAES128CBC            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES128GCM            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}
	oidAES192CBC            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES192GCM            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 26}
	oidRSAEncryption        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidRSAESOAEP            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidMGF1                 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidPSpecified           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}
	oidSHA1                 = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256               = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384               = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512               = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	oidSMIMECapabilities    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 15}
	oidDESEDE3CBC           = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	oidDESCBC               = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 7}
	oidSubjectKeyIdentRID   = 0 // [0] SubjectKeyIdentifier in RecipientIdentifier
	maxCMSSize              = 256 << 20
	errNoRecipient          = errors.New("smime: none of our certificates is a recipient of this message")
	errUnsupportedRecipient = errors.New("smime: unsupported recipient info (only RSA key transport and ECDH key agreement)")
)

// Cipher is a content-encryption choice.
type Cipher int

const (
	// AES256CBC is EnvelopedData with AES-256-CBC.
	AES256CBC Cipher = iota + 1
	// AES256GCM is AuthEnvelopedData with AES-256-GCM.
	AES256GCM
)

func (c Cipher) String() string {
	switch c {
	case AES256CBC:
		return "aes256-cbc"
	case AES256GCM:
		return "aes256-gcm"
	}
	return fmt.Sprintf("Cipher(%d)", int(c))
}

// CipherName names a content-encryption algorithm for result headers:
// "aes128-cbc" … "aes256-gcm".
func CipherName(oid asn1.ObjectIdentifier) string {
	for _, c := range []struct {
		oid  asn1.ObjectIdentifier
		name string
	}{
		{oidAES128CBC, "aes128-cbc"}, {oidAES192CBC, "aes192-cbc"}, {oidAES256CBC, "aes256-cbc"},
		{oidAES128GCM, "aes128-gcm"}, {oidAES192GCM, "aes192-gcm"}, {oidAES256GCM, "aes256-gcm"},
	} {
		if oid.Equal(c.oid) {
			return c.name
		}
	}
	return oid.String()
}

// KeyTransport is an RSA key-transport padding.
type KeyTransport int

const (
	// PKCS1v15 is RSAES-PKCS1-v1_5.
	PKCS1v15 KeyTransport = iota + 1
	// OAEP is RSAES-OAEP with SHA-256 and MGF1-SHA-256.
	OAEP
	// ECDH is key agreement (KeyAgreeRecipientInfo, kari.go), chosen for
	// EC certificates whatever Recipient.Transport says.
	ECDH
)

func (k KeyTransport) String() string {
	switch k {
	case PKCS1v15:
		return "rsa-pkcs1v15"
	case OAEP:
		return "rsa-oaep"
	case ECDH:
		return "ecdh"
	}
	return fmt.Sprintf("KeyTransport(%d)", int(k))
}

// Recipient is one recipient of an envelope.
type Recipient struct {
	Cert      *x509.Certificate
	Transport KeyTransport // 0 means PKCS1v15
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,optional,tag:0"`
}

type envelopedData struct {
	Version              int
	OriginatorInfo       asn1.RawValue   `asn1:"optional,tag:0"`
	RecipientInfos       []asn1.RawValue `asn1:"set"`
	EncryptedContentInfo encryptedContentInfo
	UnprotectedAttrs     asn1.RawValue `asn1:"optional,tag:1"`
}

type authEnvelopedData struct {
	Version                  int
	OriginatorInfo           asn1.RawValue   `asn1:"optional,tag:0"`
	RecipientInfos           []asn1.RawValue `asn1:"set"`
	AuthEncryptedContentInfo encryptedContentInfo
	AuthAttrs                asn1.RawValue `asn1:"optional,tag:1"`
	MAC                      []byte
	UnauthAttrs              asn1.RawValue `asn1:"optional,tag:2"`
}

type encryptedContentInfo struct {
	ContentType      asn1.ObjectIdentifier
	Algorithm        pkix.AlgorithmIdentifier
	EncryptedContent asn1.RawValue `asn1:"optional,tag:0"`
}

type keyTransRecipientInfo struct {
	Version                int
	RID                    asn1.RawValue
	KeyEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedKey           []byte
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type gcmParameters struct {
	Nonce  []byte
	ICVLen int `asn1:"optional,default:12"`
}

type oaepParameters struct {
	Hash    pkix.AlgorithmIdentifier `asn1:"optional,explicit,tag:0"`
	MGF     pkix.AlgorithmIdentifier `asn1:"optional,explicit,tag:1"`
	PSource pkix.AlgorithmIdentifier `asn1:"optional,explicit,tag:2"`
}

// Encrypt wraps content (a MIME entity) for the recipients: EnvelopedData
// with AES-256-CBC or AuthEnvelopedData with AES-256-GCM. It returns the
// DER ContentInfo.
func Encrypt(content []byte, c Cipher, rcpts []Recipient) ([]byte, error) {
	return seal(pieces{content}, c, rcpts)
}

func keyTransRecipient(key []byte, r Recipient) ([]byte, error) {
	if r.Cert == nil {
		return nil, errors.New("smime: encrypt: recipient without certificate")
	}
	pub, ok := r.Cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("smime: encrypt: certificate %q: only RSA keys can receive (key transport), not %T", r.Cert.Subject.CommonName, r.Cert.PublicKey)
	}
	var alg pkix.AlgorithmIdentifier
	var ek []byte
	var err error
	switch r.Transport {
	case OAEP:
		sha256ID := pkix.AlgorithmIdentifier{Algorithm: oidSHA256}
		mgfParams, _ := asn1.Marshal(sha256ID)
		params, perr := asn1.Marshal(oaepParameters{
			Hash: sha256ID,
			MGF:  pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: mgfParams}},
		})
		if perr != nil {
			return nil, perr
		}
		alg = pkix.AlgorithmIdentifier{Algorithm: oidRSAESOAEP, Parameters: asn1.RawValue{FullBytes: params}}
		ek, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, key, nil)
	case PKCS1v15, 0:
		alg = pkix.AlgorithmIdentifier{Algorithm: oidRSAEncryption, Parameters: asn1.NullRawValue}
		// PKCS #1 v1.5 stays for partners that announce nothing better:
		// gpgsm and many S/MIME clients know no RSAES-OAEP.
		//lint:ignore SA1019 interoperability, see above
		ek, err = rsa.EncryptPKCS1v15(rand.Reader, pub, key)
	default:
		return nil, fmt.Errorf("smime: encrypt: unsupported key transport %v", r.Transport)
	}
	if err != nil {
		return nil, fmt.Errorf("smime: encrypt: key transport to %q: %w", r.Cert.Subject.CommonName, err)
	}
	ias, err := asn1.Marshal(issuerAndSerial{Issuer: asn1.RawValue{FullBytes: r.Cert.RawIssuer}, Serial: r.Cert.SerialNumber})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(keyTransRecipientInfo{Version: 0, RID: asn1.RawValue{FullBytes: ias}, KeyEncryptionAlgorithm: alg, EncryptedKey: ek})
}

// Identity is a certificate with its private key.
type Identity struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate // intermediates, leaf excluded
	// Signer makes the identity's signatures when set (Key's, by OpenSSL:
	// rsa_signer "auto" or "openssl"); Key still decrypts.
	Signer crypto.Signer
}

// signer is what signs for the identity.
func (id Identity) signer() crypto.Signer {
	if id.Signer != nil {
		return id.Signer
	}
	return id.Key
}

// Envelope describes a decrypted message.
type Envelope struct {
	Cipher    Cipher // AES256GCM for AuthEnvelopedData
	CipherOID asn1.ObjectIdentifier
	Transport KeyTransport
	Recipient *x509.Certificate // the identity that could decrypt
	Agreement ECDHScheme        // for Transport ECDH
}

// errNotDER makes Decrypt normalise BER and try again.
var errNotDER = errors.New("not DER")

// Decrypt opens a CMS EnvelopedData or AuthEnvelopedData (DER or BER) with
// the first of ids that is among its recipients and returns the content.
func Decrypt(der []byte, ids []Identity) ([]byte, *Envelope, error) {
	if len(der) > maxCMSSize {
		return nil, nil, errors.New("smime: CMS object too large")
	}
	// DER (what most clients send) parses as it is; BER is normalised
	// first.
	pt, env, err := decrypt(der, ids, false)
	if !errors.Is(err, errNotDER) {
		return pt, env, err
	}
	norm, err := normalizeBER(der)
	if err != nil {
		return nil, nil, err
	}
	return decrypt(norm, ids, true)
}

func decrypt(der []byte, ids []Identity, normalized bool) ([]byte, *Envelope, error) {
	malformed := func(what string, err error) error {
		if !normalized {
			return errNotDER
		}
		return fmt.Errorf("smime: %s: %w", what, err)
	}
	var ci contentInfo
	if err := unmarshalAll(der, &ci); err != nil {
		return nil, nil, malformed("not a CMS ContentInfo", err)
	}
	var infos []asn1.RawValue
	var eci encryptedContentInfo
	var mac, aad []byte
	auth := false
	switch {
	case ci.ContentType.Equal(oidEnvelopedData):
		var ed envelopedData
		if err := unmarshalAll(ci.Content.Bytes, &ed); err != nil {
			return nil, nil, malformed("malformed EnvelopedData", err)
		}
		infos, eci = ed.RecipientInfos, ed.EncryptedContentInfo
	case ci.ContentType.Equal(oidAuthEnvelopedData):
		var ad authEnvelopedData
		if err := unmarshalAll(ci.Content.Bytes, &ad); err != nil {
			return nil, nil, malformed("malformed AuthEnvelopedData", err)
		}
		infos, eci, mac, auth = ad.RecipientInfos, ad.AuthEncryptedContentInfo, ad.MAC, true
		if len(ad.AuthAttrs.FullBytes) > 0 {
			// RFC 5083 §2.2: the MAC covers the DER of authAttrs with
			// an EXPLICIT SET OF tag.
			aad = append([]byte{0x31}, ad.AuthAttrs.FullBytes[1:]...)
		}
	case ci.ContentType.Equal(oidSignedData):
		return nil, nil, errors.New("smime: this is signed data, not encrypted")
	default:
		return nil, nil, fmt.Errorf("smime: unsupported CMS content type %v", ci.ContentType)
	}
	if !eci.ContentType.Equal(oidData) {
		return nil, nil, fmt.Errorf("smime: encrypted content of type %v, want id-data", eci.ContentType)
	}
	ct, err := encryptedBytes(eci.EncryptedContent)
	if err != nil {
		if !normalized {
			return nil, nil, errNotDER
		}
		return nil, nil, err
	}
	alg := eci.Algorithm.Algorithm
	var keyLen int
	var cipherKind Cipher
	gcm := false
	switch {
	case alg.Equal(oidAES128CBC):
		keyLen = 16
	case alg.Equal(oidAES192CBC):
		keyLen = 24
	case alg.Equal(oidAES256CBC):
		keyLen, cipherKind = 32, AES256CBC
	case alg.Equal(oidAES128GCM):
		keyLen, gcm = 16, true
	case alg.Equal(oidAES192GCM):
		keyLen, gcm = 24, true
	case alg.Equal(oidAES256GCM):
		keyLen, gcm, cipherKind = 32, true, AES256GCM
	case alg.Equal(oidDESEDE3CBC), alg.Equal(oidDESCBC):
		return nil, nil, errors.New("smime: DES/3DES content encryption is refused")
	default:
		return nil, nil, fmt.Errorf("smime: unsupported content encryption %v", alg)
	}
	if gcm != auth {
		return nil, nil, fmt.Errorf("smime: content encryption %v not allowed in this envelope type (GCM only in AuthEnvelopedData)", alg)
	}
	key, env, err := recoverKey(infos, ids, keyLen)
	if err != nil {
		return nil, nil, err
	}
	env.Cipher, env.CipherOID = cipherKind, alg
	if len(key) != keyLen {
		return nil, nil, errors.New("smime: decryption failed (wrong key or corrupt message)")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	if gcm {
		var p gcmParameters
		if err := unmarshalAll(eci.Algorithm.Parameters.FullBytes, &p); err != nil {
			return nil, nil, fmt.Errorf("smime: malformed GCM parameters: %w", err)
		}
		if len(p.Nonce) == 0 || len(p.Nonce) > 64 || p.ICVLen < 12 || p.ICVLen > 16 || len(mac) != p.ICVLen {
			return nil, nil, errors.New("smime: unsupported GCM parameters (nonce or tag length)")
		}
		aead, err := cipher.NewGCMWithNonceSize(block, len(p.Nonce))
		if len(p.Nonce) == 12 {
			aead, err = cipher.NewGCMWithTagSize(block, p.ICVLen)
		}
		if err != nil {
			return nil, nil, err
		}
		if aead.Overhead() != len(mac) {
			return nil, nil, errors.New("smime: unsupported GCM tag length")
		}
		pt, err := aead.Open(nil, p.Nonce, append(append([]byte{}, ct...), mac...), aad)
		if err != nil {
			return nil, nil, errors.New("smime: decryption failed: authentication tag mismatch (wrong key or tampered message)")
		}
		return pt, env, nil
	}
	var iv []byte
	if err := unmarshalAll(eci.Algorithm.Parameters.FullBytes, &iv); err != nil || len(iv) != aes.BlockSize {
		return nil, nil, errors.New("smime: malformed CBC parameters (IV)")
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, nil, errors.New("smime: encrypted content is not a whole number of blocks (truncated?)")
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	if pad == 0 || pad > aes.BlockSize {
		return nil, nil, errors.New("smime: decryption failed (bad padding: wrong key or corrupt message)")
	}
	for _, b := range pt[len(pt)-pad:] {
		if int(b) != pad {
			return nil, nil, errors.New("smime: decryption failed (bad padding: wrong key or corrupt message)")
		}
	}
	return pt[:len(pt)-pad], env, nil
}

func unmarshalAll(b []byte, v any) error {
	if len(b) == 0 {
		return errors.New("missing")
	}
	rest, err := asn1.Unmarshal(b, v)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return errors.New("trailing data")
	}
	return nil
}

// encryptedBytes returns the octets of an [0] IMPLICIT OCTET STRING that
// may have been constructed (BER: a sequence of OCTET STRING segments).
func encryptedBytes(v asn1.RawValue) ([]byte, error) {
	if v.Class != asn1.ClassContextSpecific || v.Tag != 0 || len(v.FullBytes) == 0 {
		return nil, errors.New("smime: no encrypted content (detached content is not supported)")
	}
	if !v.IsCompound {
		return v.Bytes, nil
	}
	var out []byte
	rest := v.Bytes
	for len(rest) > 0 {
		var seg []byte
		var err error
		rest, err = asn1.Unmarshal(rest, &seg)
		if err != nil {
			return nil, fmt.Errorf("smime: malformed encrypted content segment: %w", err)
		}
		out = append(out, seg...)
	}
	return out, nil
}

func recoverKey(infos []asn1.RawValue, ids []Identity, keyLen int) ([]byte, *Envelope, error) {
	sawKTRI := false
	for _, raw := range infos {
		if raw.Class == asn1.ClassContextSpecific && raw.Tag == 1 && raw.IsCompound {
			sawKTRI = true
			key, env, err := recoverKeyAgree(raw, ids, keyLen)
			if err != nil || key != nil {
				return key, env, err
			}
			continue
		}
		if raw.Class != asn1.ClassUniversal || raw.Tag != asn1.TagSequence {
			continue // kekri, pwri, ori: not ours
		}
		var ri keyTransRecipientInfo
		if err := unmarshalAll(raw.FullBytes, &ri); err != nil {
			return nil, nil, fmt.Errorf("smime: malformed KeyTransRecipientInfo: %w", err)
		}
		sawKTRI = true
		for _, id := range ids {
			if id.Cert == nil || !ridMatches(ri.RID, id.Cert) {
				continue
			}
			priv, ok := id.Key.(*rsa.PrivateKey)
			if !ok {
				continue
			}
			env := &Envelope{Recipient: id.Cert}
			alg := ri.KeyEncryptionAlgorithm.Algorithm
			switch {
			case alg.Equal(oidRSAEncryption):
				env.Transport = PKCS1v15
				// A random key on failure keeps timing and outcome alike
				// (Bleichenbacher, RFC 3218 §2.3); the content decryption
				// then fails.
				key := make([]byte, keyLen)
				rand.Read(key)
				//lint:ignore SA1019 most senders still wrap keys with PKCS #1 v1.5; the session-key API keeps the timing side channel closed
				if err := rsa.DecryptPKCS1v15SessionKey(nil, priv, ri.EncryptedKey, key); err != nil {
					return nil, nil, errors.New("smime: decryption failed (wrong key or corrupt message)")
				}
				return key, env, nil
			case alg.Equal(oidRSAESOAEP):
				env.Transport = OAEP
				h, mgf, label, err := parseOAEP(ri.KeyEncryptionAlgorithm.Parameters)
				if err != nil {
					return nil, nil, err
				}
				key, err := priv.Decrypt(nil, ri.EncryptedKey, &rsa.OAEPOptions{Hash: h, MGFHash: mgf, Label: label})
				if err != nil {
					return nil, nil, errors.New("smime: decryption failed (wrong key or corrupt message)")
				}
				return key, env, nil
			default:
				return nil, nil, fmt.Errorf("smime: unsupported key transport algorithm %v", alg)
			}
		}
	}
	if !sawKTRI && len(infos) > 0 {
		return nil, nil, errUnsupportedRecipient
	}
	return nil, nil, errNoRecipient
}

func ridMatches(rid asn1.RawValue, cert *x509.Certificate) bool {
	switch {
	case rid.Class == asn1.ClassUniversal && rid.Tag == asn1.TagSequence:
		var ias issuerAndSerial
		if err := unmarshalAll(rid.FullBytes, &ias); err != nil || ias.Serial == nil {
			return false
		}
		return bytes.Equal(ias.Issuer.FullBytes, cert.RawIssuer) && ias.Serial.Cmp(cert.SerialNumber) == 0
	case rid.Class == asn1.ClassContextSpecific && rid.Tag == oidSubjectKeyIdentRID:
		return len(cert.SubjectKeyId) > 0 && subtle.ConstantTimeCompare(rid.Bytes, cert.SubjectKeyId) == 1
	}
	return false
}

func hashFor(oid asn1.ObjectIdentifier) (crypto.Hash, func() hash.Hash, bool) {
	switch {
	case oid.Equal(oidSHA1):
		return crypto.SHA1, sha1.New, true
	case oid.Equal(oidSHA256):
		return crypto.SHA256, sha256.New, true
	case oid.Equal(oidSHA384):
		return crypto.SHA384, sha512.New384, true
	case oid.Equal(oidSHA512):
		return crypto.SHA512, sha512.New, true
	}
	return 0, nil, false
}

func parseOAEP(params asn1.RawValue) (h, mgf crypto.Hash, label []byte, err error) {
	h, mgf = crypto.SHA1, crypto.SHA1 // RFC 8017 defaults
	if len(params.FullBytes) == 0 || bytes.Equal(params.FullBytes, asn1.NullBytes) {
		return h, mgf, nil, nil
	}
	var p oaepParameters
	if err := unmarshalAll(params.FullBytes, &p); err != nil {
		return 0, 0, nil, fmt.Errorf("smime: malformed RSAES-OAEP parameters: %w", err)
	}
	if len(p.Hash.Algorithm) > 0 {
		var ok bool
		if h, _, ok = hashFor(p.Hash.Algorithm); !ok {
			return 0, 0, nil, fmt.Errorf("smime: unsupported OAEP hash %v", p.Hash.Algorithm)
		}
	}
	if len(p.MGF.Algorithm) > 0 {
		if !p.MGF.Algorithm.Equal(oidMGF1) {
			return 0, 0, nil, fmt.Errorf("smime: unsupported OAEP mask generation %v", p.MGF.Algorithm)
		}
		var mh pkix.AlgorithmIdentifier
		if err := unmarshalAll(p.MGF.Parameters.FullBytes, &mh); err != nil {
			return 0, 0, nil, fmt.Errorf("smime: malformed MGF1 parameters: %w", err)
		}
		var ok bool
		if mgf, _, ok = hashFor(mh.Algorithm); !ok {
			return 0, 0, nil, fmt.Errorf("smime: unsupported MGF1 hash %v", mh.Algorithm)
		}
	}
	if len(p.PSource.Algorithm) > 0 {
		if !p.PSource.Algorithm.Equal(oidPSpecified) {
			return 0, 0, nil, fmt.Errorf("smime: unsupported OAEP label source %v", p.PSource.Algorithm)
		}
		if err := unmarshalAll(p.PSource.Parameters.FullBytes, &label); err != nil {
			return 0, 0, nil, fmt.Errorf("smime: malformed OAEP label: %w", err)
		}
	}
	return h, mgf, label, nil
}
