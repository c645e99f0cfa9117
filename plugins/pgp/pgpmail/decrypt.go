package pgpmail

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// MaxPlaintext bounds the size of decrypted (and decompressed) content.
const MaxPlaintext = 64 << 20

// ResultHeader is the header field Decrypt adds to the messages it
// decrypts or verifies. Inbound, an existing one is always removed first.
const ResultHeader = "X-Posthorn-PGP"

// Signature states.
const (
	SigNone       = "none"        // not signed
	SigValid      = "valid"       // verified with a known key
	SigBad        = "bad"         // a signature that does not verify
	SigUnknownKey = "unknown-key" // signed by a key we do not know
)

// Result tells what Decrypt found.
type Result struct {
	Encrypted bool   // the message was encrypted (PGP/MIME or inline)
	Decrypted bool   // and we decrypted it
	Signature string // SigNone, SigValid, SigBad, SigUnknownKey
	Signer    string // fingerprint of the verified signing key
	Detail    string // why decryption or verification failed
	// Message is the decrypted (or, for a signed-only message, the
	// original) message with the ResultHeader prepended; nil when the
	// message holds no OpenPGP content.
	Message []byte
}

// Header returns the value for ResultHeader, e.g.
// "decrypted; signature=valid; signer=ABCD…".
func (r *Result) Header() string {
	var parts []string
	switch {
	case r.Decrypted:
		parts = append(parts, "decrypted")
	case r.Encrypted:
		parts = append(parts, "not-decrypted")
	default:
		parts = append(parts, "plain")
	}
	parts = append(parts, "signature="+r.Signature)
	if r.Signer != "" {
		parts = append(parts, "signer="+r.Signer)
	}
	if r.Detail != "" {
		d := strings.Map(func(c rune) rune {
			if c < ' ' || c == 0x7f || c == ';' {
				return ' '
			}
			return c
		}, r.Detail)
		if len(d) > 200 {
			d = d[:200]
		}
		parts = append(parts, "detail=\""+strings.ReplaceAll(d, "\"", "'")+"\"")
	}
	return strings.Join(parts, "; ")
}

// Decrypt looks for OpenPGP content in msg — PGP/MIME encrypted
// (RFC 3156 §4), PGP/MIME signed (§5), inline PGP messages in a text body
// — decrypts with the secret keys in keys and verifies signatures with
// the public keys in keys. A message without OpenPGP content gives a
// Result with a nil Message and no error. Broken content gives a Result
// saying so (Detail), never a panic.
func Decrypt(msg []byte, keys openpgp.KeyRing, now time.Time) (res *Result, err error) {
	res = &Result{Signature: SigNone}
	defer func() {
		if r := recover(); r != nil {
			res.Detail = fmt.Sprintf("broken OpenPGP data: %v", r)
			res.Decrypted = false
			res.Message = nil
			err = nil
		}
	}()
	if now.IsZero() {
		now = time.Now()
	}
	msg = toCRLF(msg)
	fields, body, err := splitEntity(msg)
	if err != nil {
		return res, err
	}
	t, p := mediaType(get(fields, "Content-Type"))
	switch {
	case t == "multipart/encrypted" && strings.EqualFold(p["protocol"], "application/pgp-encrypted"):
		res.Encrypted = true
		ps, err := parts(body, p["boundary"])
		if err != nil || len(ps) < 2 {
			res.Detail = "broken PGP/MIME structure"
			if err != nil {
				res.Detail += ": " + err.Error()
			}
			return res, nil
		}
		_, data, err := splitEntity(ps[1])
		if err != nil {
			res.Detail = "broken PGP/MIME part: " + err.Error()
			return res, nil
		}
		plain, err := decryptBlock(data, keys, now, res)
		if err != nil {
			res.Detail = err.Error()
			return res, nil
		}
		res.Decrypted = true
		innerFields, innerBody, err := splitEntity(toCRLF(plain))
		if err != nil {
			res.Detail = "decrypted content is not a MIME entity: " + err.Error()
			res.Decrypted = false
			return res, nil
		}
		it, ip := mediaType(get(innerFields, "Content-Type"))
		if it == "multipart/signed" && res.Signature == SigNone {
			verifySigned(innerBody, ip, keys, now, res)
		}
		res.Message = rebuild(fields, innerFields, innerBody, ip["protected-headers"] == "v1", res)
		return res, nil
	case t == "multipart/signed" && strings.EqualFold(p["protocol"], "application/pgp-signature"):
		verifySigned(body, p, keys, now, res)
		res.Message = prepend(fields, body, res)
		return res, nil
	case strings.HasPrefix(t, "text/"):
		return inline(fields, body, keys, now, res)
	}
	return res, nil
}

// rebuild makes the decrypted message: the outer fields other than the
// content fields, then the inner entity. Of protected headers only the
// Subject replaces the outer one (it is what senders hide as "..."); the
// others are not taken, so an encrypted part cannot change From or To
// after the outer message passed SPF, DKIM and DMARC.
func rebuild(outer, inner []field, body []byte, protected bool, res *Result) []byte {
	var b bytes.Buffer
	b.WriteString(ResultHeader + ": " + res.Header() + "\r\n")
	var subject *field
	if protected {
		for i := range inner {
			if inner[i].is("Subject") {
				subject = &inner[i]
			}
		}
	}
	for _, f := range outer {
		if isContentField(f) || f.is(ResultHeader) {
			continue
		}
		if subject != nil && f.is("Subject") {
			b.WriteString(subject.raw)
			subject = nil
			continue
		}
		b.WriteString(f.raw)
	}
	if subject != nil {
		b.WriteString(subject.raw)
	}
	for _, f := range inner {
		if isContentField(f) {
			b.WriteString(f.raw)
		}
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

func prepend(fields []field, body []byte, res *Result) []byte {
	var b bytes.Buffer
	b.WriteString(ResultHeader + ": " + res.Header() + "\r\n")
	for _, f := range fields {
		if !f.is(ResultHeader) {
			b.WriteString(f.raw)
		}
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

func readConfig(now time.Time) *packet.Config {
	limit := int64(MaxPlaintext)
	return &packet.Config{Time: func() time.Time { return now }, MaxDecompressedMessageSize: &limit}
}

// decryptBlock decrypts an armored or binary OpenPGP message and records
// the signature state in res.
func decryptBlock(data []byte, keys openpgp.KeyRing, now time.Time, res *Result) ([]byte, error) {
	var r io.Reader = bytes.NewReader(data)
	if i := bytes.Index(data, []byte("-----BEGIN PGP MESSAGE-----")); i >= 0 {
		block, err := armor.Decode(bytes.NewReader(data[i:]))
		if err != nil {
			return nil, fmt.Errorf("broken armor: %w", err)
		}
		r = block.Body
	}
	md, err := openpgp.ReadMessage(r, keys, nil, readConfig(now))
	if err != nil {
		if errors.Is(err, pgperrors.ErrKeyIncorrect) {
			return nil, errors.New("no secret key for this message")
		}
		return nil, fmt.Errorf("cannot decrypt: %w", err)
	}
	plain, err := io.ReadAll(io.LimitReader(md.UnverifiedBody, MaxPlaintext+1))
	if err != nil {
		return nil, fmt.Errorf("cannot decrypt: %w", err)
	}
	if len(plain) > MaxPlaintext {
		return nil, errors.New("decrypted content too large")
	}
	if md.IsSigned {
		sigState(md.SignatureError, md.SignedBy, res)
	}
	return plain, nil
}

func sigState(err error, by *openpgp.Key, res *Result) {
	switch {
	case err == nil && by != nil:
		res.Signature = SigValid
		res.Signer = fmt.Sprintf("%X", by.Entity.PrimaryKey.Fingerprint)
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		res.Signature = SigUnknownKey
	default:
		res.Signature = SigBad
		if err != nil {
			res.Detail = "signature: " + err.Error()
		}
	}
}

// verifySigned checks a multipart/signed body (RFC 3156 §5): the first
// part exactly as transmitted, the second the detached signature.
func verifySigned(body []byte, p map[string]string, keys openpgp.KeyRing, now time.Time, res *Result) {
	ps, err := parts(body, p["boundary"])
	if err != nil || len(ps) < 2 {
		res.Signature = SigBad
		res.Detail = "broken multipart/signed structure"
		return
	}
	_, sig, err := splitEntity(ps[1])
	if err != nil {
		res.Signature = SigBad
		res.Detail = "broken signature part"
		return
	}
	var sr io.Reader = bytes.NewReader(sig)
	if i := bytes.Index(sig, []byte("-----BEGIN PGP SIGNATURE-----")); i >= 0 {
		block, err := armor.Decode(bytes.NewReader(sig[i:]))
		if err != nil {
			res.Signature = SigBad
			res.Detail = "broken signature armor"
			return
		}
		sr = block.Body
	}
	_, signer, err := openpgp.VerifyDetachedSignature(keys, bytes.NewReader(ps[0]), sr, readConfig(now))
	if err != nil {
		if errors.Is(err, pgperrors.ErrUnknownIssuer) {
			res.Signature = SigUnknownKey
			return
		}
		res.Signature = SigBad
		res.Detail = "signature: " + err.Error()
		return
	}
	res.Signature = SigValid
	res.Signer = Fingerprint(signer)
}

// inline decrypts "-----BEGIN PGP MESSAGE-----" blocks in a text body.
func inline(fields []field, body []byte, keys openpgp.KeyRing, now time.Time, res *Result) (*Result, error) {
	decoded := decodeBody(body, get(fields, "Content-Transfer-Encoding"))
	if decoded == nil {
		return res, nil
	}
	const begin, end = "-----BEGIN PGP MESSAGE-----", "-----END PGP MESSAGE-----"
	i := bytes.Index(decoded, []byte(begin))
	if i < 0 {
		return clearsigned(fields, body, decoded, keys, now, res)
	}
	j := bytes.Index(decoded[i:], []byte(end))
	if j < 0 {
		res.Encrypted = true
		res.Detail = "inline PGP message without an end line"
		return res, nil
	}
	j += i + len(end)
	res.Encrypted = true
	plain, err := decryptBlock(decoded[i:j], keys, now, res)
	if err != nil {
		res.Detail = err.Error()
		return res, nil
	}
	res.Decrypted = true
	newBody := append(append(append([]byte{}, decoded[:i]...), toCRLF(plain)...), decoded[j:]...)
	var b bytes.Buffer
	b.WriteString(ResultHeader + ": " + res.Header() + "\r\n")
	for _, f := range fields {
		if f.is(ResultHeader) || f.is("Content-Transfer-Encoding") {
			continue
		}
		b.WriteString(f.raw)
	}
	if is7bit(newBody) {
		b.WriteString("Content-Transfer-Encoding: 7bit\r\n\r\n")
		b.Write(newBody)
	} else {
		b.WriteString("Content-Transfer-Encoding: quoted-printable\r\n\r\n")
		qw := quotedprintable.NewWriter(&b)
		qw.Write(newBody)
		qw.Close()
	}
	res.Message = b.Bytes()
	return res, nil
}

// decodeBody undoes a Content-Transfer-Encoding (quoted-printable,
// base64), bounded by MaxPlaintext; nil on broken input.
func decodeBody(body []byte, cte string) []byte {
	var r io.Reader
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		r = quotedprintable.NewReader(bytes.NewReader(body))
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, newlineStripper{bytes.NewReader(body)})
	default:
		return body
	}
	d, err := io.ReadAll(io.LimitReader(r, MaxPlaintext))
	if err != nil {
		return nil
	}
	return d
}

func is7bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || c == 0 {
			return false
		}
	}
	return true
}

type newlineStripper struct{ r io.Reader }

func (n newlineStripper) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	j := 0
	for _, c := range p[:k] {
		if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			p[j] = c
			j++
		}
	}
	return j, err
}

// clearsigned verifies an inline cleartext signature (RFC 9580 §7) in a
// text body; the message is kept, with the result header.
func clearsigned(fields []field, body, decoded []byte, keys openpgp.KeyRing, now time.Time, res *Result) (*Result, error) {
	i := bytes.Index(decoded, []byte("-----BEGIN PGP SIGNED MESSAGE-----"))
	if i < 0 {
		return res, nil
	}
	block, _ := clearsign.Decode(decoded[i:])
	if block == nil || block.ArmoredSignature == nil {
		res.Signature = SigBad
		res.Detail = "broken cleartext signature"
	} else {
		_, signer, err := openpgp.VerifyDetachedSignature(keys, bytes.NewReader(block.Bytes), block.ArmoredSignature.Body, readConfig(now))
		switch {
		case err == nil:
			res.Signature, res.Signer = SigValid, Fingerprint(signer)
		case errors.Is(err, pgperrors.ErrUnknownIssuer):
			res.Signature = SigUnknownKey
		default:
			res.Signature, res.Detail = SigBad, "signature: "+err.Error()
		}
	}
	res.Message = prepend(fields, body, res)
	return res, nil
}
