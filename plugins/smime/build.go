package smime

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
)

// Building outgoing S/MIME in as few copies of the body as possible
// (issue 19.4): the entity to sign is pieces of the original message,
// the signed multipart is written straight into the buffer of the DER
// envelope and encrypted there in place, and the envelope is base64-encoded
// straight into the output message.

// pieces is a byte string in parts, not copied together.
type pieces [][]byte

func (p pieces) len() int {
	n := 0
	for _, b := range p {
		n += len(b)
	}
	return n
}

func (p pieces) appendTo(dst []byte) []byte {
	for _, b := range p {
		dst = append(dst, b...)
	}
	return dst
}

// bytes returns p as one slice: the only piece itself, or a copy.
func (p pieces) bytes() []byte {
	if len(p) == 1 {
		return p[0]
	}
	return p.appendTo(make([]byte, 0, p.len()))
}

// bufPools recycle the large buffers of the outbound path that die
// within a Transform: the message read from the host and the DER
// envelope, which is dead once base64-encoded into the output (issue
// 19.4: ~250 KB less garbage per 100 KB message for the plugin's GC).
// Pool k holds buffers of capacity 2^k or more, for 2^k from minPooled
// to maxPooled; larger buffers are left to the GC, so the pools hold no
// big message.
var bufPools [maxPooledLog + 1]sync.Pool // of *[]byte

const (
	minPooledLog = 12 // 4 KiB
	maxPooledLog = 20 // 1 MiB
)

// getBuf returns an empty buffer of capacity n or more, recycled if the
// pool has one. Its spare capacity may hold old bytes.
func getBuf(n int) []byte {
	k := max(minPooledLog, bits.Len(uint(max(n, 1)-1))) // 2^k >= n
	if k > maxPooledLog {
		return make([]byte, 0, n)
	}
	if p, _ := bufPools[k].Get().(*[]byte); p != nil {
		return (*p)[:0]
	}
	return make([]byte, 0, 1<<k)
}

// putBuf gives b back: the caller, and everything it gave b to, must be
// done with it.
func putBuf(b []byte) {
	k := bits.Len(uint(cap(b))) - 1 // 2^k <= cap(b)
	if k < minPooledLog || k > maxPooledLog {
		return
	}
	b = b[:0]
	bufPools[k].Put(&b)
}

const b64Line = 76 // characters per base64 line, from 57 bytes

// base64LinesLen is the length of base64Lines of n bytes.
func base64LinesLen(n int) int {
	e := base64.StdEncoding.EncodedLen(n)
	return e + 2*max(1, (e+b64Line-1)/b64Line)
}

// appendBase64Lines appends b in base64, lines of 76 characters each
// ending in CRLF (one empty line for no bytes).
func appendBase64Lines(dst, b []byte) []byte {
	enc := base64.StdEncoding
	if len(b) == 0 {
		return append(dst, '\r', '\n')
	}
	for len(b) > 0 {
		k := min(len(b), b64Line/4*3)
		n, e := len(dst), enc.EncodedLen(k)
		dst = slices.Grow(dst, e)[:n+e]
		enc.Encode(dst[n:], b[:k])
		dst = append(dst, '\r', '\n')
		b = b[k:]
	}
	return dst
}

// base64Lines encodes b in lines of 76 characters, each ending in CRLF,
// into one buffer of the exact size.
func base64Lines(b []byte) []byte {
	return appendBase64Lines(make([]byte, 0, base64LinesLen(len(b))), b)
}

// derHeaderLen is the length of the tag and length octets of a DER
// element of n content octets.
func derHeaderLen(n int) int {
	switch {
	case n < 0x80:
		return 2
	case n < 0x100:
		return 3
	case n < 0x10000:
		return 4
	case n < 0x1000000:
		return 5
	}
	return 6
}

func appendDERHeader(dst []byte, tag byte, n int) []byte {
	dst = append(dst, tag)
	switch {
	case n < 0x80:
		return append(dst, byte(n))
	case n < 0x100:
		return append(dst, 0x81, byte(n))
	case n < 0x10000:
		return append(dst, 0x82, byte(n>>8), byte(n))
	case n < 0x1000000:
		return append(dst, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// DER tags written by hand.
const (
	tagSequence    = 0x30
	tagOctetString = 0x04
	tagExplicit0   = 0xa0 // [0] constructed
	tagImplicit0   = 0x80 // [0] primitive (the encrypted content)
)

// recipientInfos wraps key for each recipient: KeyTransRecipientInfo for
// RSA, KeyAgreeRecipientInfo for EC certificates. It returns the DER SET
// OF RecipientInfo and the EnvelopedData version (RFC 5652 §6.1: 2 once a
// kari is present).
func recipientInfos(key []byte, rcpts []Recipient) (set []byte, version int, err error) {
	var infos []asn1.RawValue
	for _, r := range rcpts {
		var ri []byte
		if r.Cert != nil {
			if _, isEC := r.Cert.PublicKey.(*ecdsa.PublicKey); isEC {
				ri, err = keyAgreeRecipient(key, r.Cert)
				version = 2
			} else {
				ri, err = keyTransRecipient(key, r)
			}
		} else {
			ri, err = keyTransRecipient(key, r)
		}
		if err != nil {
			return nil, 0, err
		}
		infos = append(infos, asn1.RawValue{FullBytes: ri})
	}
	// encoding/asn1 sorts the elements of a SET OF (DER).
	set, err = asn1.MarshalWithParams(infos, "set")
	return set, version, err
}

// seal encrypts content (a MIME entity in pieces) for the recipients and
// returns the DER ContentInfo: EnvelopedData with AES-256-CBC or
// AuthEnvelopedData (RFC 5083) with AES-256-GCM. The content is copied
// once, into the envelope's own buffer, and encrypted there.
func seal(content pieces, c Cipher, rcpts []Recipient) ([]byte, error) {
	if len(rcpts) == 0 {
		return nil, errors.New("smime: encrypt: no recipients")
	}
	if c != AES256CBC && c != AES256GCM {
		return nil, fmt.Errorf("smime: encrypt: unsupported cipher %v", c)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	set, version, err := recipientInfos(key, rcpts)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	ptLen := content.len()
	var alg []byte
	var ctype asn1.ObjectIdentifier
	var aead cipher.AEAD
	var iv, nonce []byte
	ctLen, macLen := ptLen, 0
	switch c {
	case AES256CBC:
		iv = make([]byte, aes.BlockSize)
		if _, err := rand.Read(iv); err != nil {
			return nil, err
		}
		ivDER, _ := asn1.Marshal(iv)
		alg, err = asn1.Marshal(pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivDER}})
		ctype = oidEnvelopedData
		ctLen = ptLen + aes.BlockSize - ptLen%aes.BlockSize
	case AES256GCM:
		nonce = make([]byte, 12)
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		if aead, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
		params, _ := asn1.Marshal(gcmParameters{Nonce: nonce, ICVLen: aead.Overhead()})
		alg, err = asn1.Marshal(pkix.AlgorithmIdentifier{Algorithm: oidAES256GCM, Parameters: asn1.RawValue{FullBytes: params}})
		ctype, version = oidAuthEnvelopedData, 0 // RFC 5083 §2.1: always 0
		macLen = aead.Overhead()
	}
	if err != nil {
		return nil, err
	}
	ctypeDER, _ := asn1.Marshal(ctype)
	dataDER, _ := asn1.Marshal(oidData)
	versionDER, _ := asn1.Marshal(version)

	// ContentInfo { contentType, [0] EXPLICIT (Auth)EnvelopedData {
	//   version, recipientInfos, (auth)EncryptedContentInfo { id-data,
	//   algorithm, [0] IMPLICIT encrypted content }, [mac] } }
	eciLen := len(dataDER) + len(alg) + derHeaderLen(ctLen) + ctLen
	edLen := len(versionDER) + len(set) + derHeaderLen(eciLen) + eciLen
	if macLen > 0 {
		edLen += derHeaderLen(macLen) + macLen
	}
	explicitLen := derHeaderLen(edLen) + edLen
	ciLen := len(ctypeDER) + derHeaderLen(explicitLen) + explicitLen
	total := derHeaderLen(ciLen) + ciLen
	der := getBuf(total)
	der = appendDERHeader(der, tagSequence, ciLen)
	der = append(der, ctypeDER...)
	der = appendDERHeader(der, tagExplicit0, explicitLen)
	der = appendDERHeader(der, tagSequence, edLen)
	der = append(der, versionDER...)
	der = append(der, set...)
	der = appendDERHeader(der, tagSequence, eciLen)
	der = append(der, dataDER...)
	der = append(der, alg...)
	der = appendDERHeader(der, tagImplicit0, ctLen)
	start := len(der)
	der = content.appendTo(der)
	switch c {
	case AES256CBC:
		pad := ctLen - ptLen
		for range pad {
			der = append(der, byte(pad))
		}
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(der[start:], der[start:])
	case AES256GCM:
		// Sealed in place; the tag it appends moves behind the OCTET
		// STRING header of the mac.
		sealed := aead.Seal(der[start:start], nonce, der[start:], nil)
		var tag [16]byte
		copy(tag[:], sealed[ptLen:])
		der = appendDERHeader(der[:start+ptLen], tagOctetString, macLen)
		der = append(der, tag[:macLen]...)
	}
	if len(der) != total {
		return nil, fmt.Errorf("smime: encrypt: envelope of %d bytes, %d computed", len(der), total)
	}
	return der, nil
}
