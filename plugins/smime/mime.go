package smime

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"

	"github.com/posthorn/posthorn/sdk/mime7bit"
)

// Message handling (RFC 8551 §3): a message is split into its transport
// headers (From, To, Subject, …) and its MIME entity (the Content-*
// headers and the body). Signing and encryption work on the entity; the
// transport headers stay outside.

// field is one header field as found, folding kept, CRLF-terminated.
type field struct {
	name string // canonical lower case
	raw  string
}

type message struct {
	fields []field
	body   []byte
}

// hasBareLF reports whether b has an LF without a CR before it.
func hasBareLF(b []byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return false
		}
		if i+j == 0 || b[i+j-1] != '\r' {
			return true
		}
		i += j + 1
	}
}

// canonical turns bare LF into CRLF. b itself is returned when it has
// none (mail from the queue always has CRLF: no copy).
func canonical(b []byte) []byte {
	if !hasBareLF(b) {
		return b
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

func parseMessage(b []byte) (*message, error) {
	b = canonical(b)
	var hdr []byte
	switch {
	case bytes.HasPrefix(b, []byte("\r\n")):
		hdr, b = nil, b[2:]
	default:
		i := bytes.Index(b, []byte("\r\n\r\n"))
		if i < 0 {
			if len(b) > 0 && !bytes.HasSuffix(b, []byte("\r\n")) {
				b = append(b[:len(b):len(b)], '\r', '\n') // b may be the caller's
			}
			hdr, b = b, nil
		} else {
			hdr, b = b[:i+2], b[i+4:]
		}
	}
	m := &message{body: b}
	for len(hdr) > 0 {
		end := 0
		for {
			j := bytes.Index(hdr[end:], []byte("\r\n"))
			if j < 0 {
				end = len(hdr)
				break
			}
			end += j + 2
			if end >= len(hdr) || (hdr[end] != ' ' && hdr[end] != '\t') {
				break
			}
		}
		raw := string(hdr[:end])
		hdr = hdr[end:]
		name, _, ok := strings.Cut(raw, ":")
		if !ok || strings.ContainsAny(name, " \t") && strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("smime: malformed header line %q", trunc(raw))
		}
		m.fields = append(m.fields, field{name: strings.ToLower(strings.TrimSpace(name)), raw: raw})
	}
	return m, nil
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// get returns the unfolded value of the first field name.
func (m *message) get(name string) string {
	for _, f := range m.fields {
		if f.name == name {
			_, v, _ := strings.Cut(f.raw, ":")
			v = strings.ReplaceAll(v, "\r\n", "")
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func isContentField(name string) bool {
	return strings.HasPrefix(name, "content-")
}

// split returns the transport headers (without MIME-Version) and the MIME
// entity (Content-* headers, a blank line, the body). A message without
// Content-Type is text/plain (RFC 2045 §5.2): the entity says so.
func (m *message) split() (outer []byte, entity []byte) {
	outer, e := m.splitPieces()
	return outer, e.bytes()
}

// splitPieces is split with the entity in pieces: its header, and the
// body as it is in the message (not copied).
func (m *message) splitPieces() (outer []byte, entity pieces) {
	var o, e []byte
	hasCT := false
	for _, f := range m.fields {
		switch {
		case isContentField(f.name):
			e = append(e, f.raw...)
			hasCT = hasCT || f.name == "content-type"
		case f.name == "mime-version":
		default:
			o = append(o, f.raw...)
		}
	}
	if !hasCT {
		e = append(e, "Content-Type: text/plain; charset=us-ascii\r\n"...)
	}
	e = append(e, '\r', '\n')
	return o, pieces{e, m.body}
}

func boundary() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "----=_smime_" + hex.EncodeToString(b)
}

// signEntity signs entity and wraps it into multipart/signed (RFC 8551
// §3.5.3): it returns the new entity (Content-Type header, blank line,
// body) in pieces, entity's pieces among them.
func signEntity(entity pieces, id Identity) (pieces, error) {
	sig, err := signDetached(entity, id, time.Now())
	if err != nil {
		return nil, err
	}
	b := boundary()
	head := fmt.Sprintf("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n micalg=sha-256; boundary=\"%s\"\r\n\r\n"+
		"This is an S/MIME signed message.\r\n\r\n--%s\r\n", b, b)
	mid := fmt.Sprintf("\r\n--%s\r\n"+
		"Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"+
		"Content-Transfer-Encoding: base64\r\n"+
		"Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n", b)
	tail := fmt.Sprintf("\r\n--%s--\r\n", b)
	sigPart := appendBase64Lines(append(make([]byte, 0, len(mid)+base64LinesLen(len(sig))+len(tail)), mid...), sig)
	sigPart = append(sigPart, tail...)
	out := make(pieces, 0, len(entity)+2)
	out = append(out, []byte(head))
	out = append(out, entity...)
	return append(out, sigPart), nil
}

// encryptedHeader is the header of the application/pkcs7-mime entity.
func encryptedHeader(c Cipher) string {
	st := "enveloped-data"
	if c == AES256GCM {
		st = "authEnveloped-data"
	}
	return "Content-Type: application/pkcs7-mime; smime-type=" + st + ";\r\n name=\"smime.p7m\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n"
}

const mimeVersion = "MIME-Version: 1.0\r\n"

func join(outer, entity []byte) []byte {
	return joinPieces(outer, pieces{entity})
}

func joinPieces(outer []byte, entity pieces) []byte {
	return joinPiecesTo(make([]byte, 0, len(outer)+len(mimeVersion)+entity.len()), outer, entity)
}

// joinPiecesTo is joinPieces appending to out.
func joinPiecesTo(out, outer []byte, entity pieces) []byte {
	out = append(append(out, outer...), mimeVersion...)
	return entity.appendTo(out)
}

// Protect signs (when signer is not nil) and then encrypts (when rcpts is
// not empty) the message msg (headers and body) and returns the new
// message. The transport headers stay outside.
//
// The body is copied as few times as it can be (issue 19.4): it is hashed
// for the signature where it lies, copied once into the envelope, where
// it is encrypted in place, and the envelope once into the output in
// base64. msg is not modified; the result does not share its memory. It
// may come from the pool of buffers (getBuf): a caller done with it may
// give it back (putBuf).
func Protect(msg []byte, signer *Identity, c Cipher, rcpts []Recipient) ([]byte, error) {
	m, err := parseMessage(msg)
	if err != nil {
		return nil, err
	}
	outer, entity := m.splitPieces()
	if signer != nil {
		// Signed content must be 7-bit, or a relay may re-encode it and
		// break the signature (RFC 8551 §3.1.3). An entity nested too deep
		// to convert is signed as it is.
		content := entity
		if !mime7bit.Clean(entity[0]) || !mime7bit.Clean(m.body) {
			if seven, err := mime7bit.Bytes(entity.bytes()); err == nil {
				content = pieces{seven}
			}
		}
		if entity, err = signEntity(content, *signer); err != nil {
			return nil, err
		}
	}
	if len(rcpts) == 0 {
		return joinPiecesTo(getBuf(len(outer)+len(mimeVersion)+entity.len()), outer, entity), nil
	}
	der, err := seal(entity, c, rcpts)
	if err != nil {
		return nil, err
	}
	hdr := encryptedHeader(c)
	out := getBuf(len(outer) + len(mimeVersion) + len(hdr) + base64LinesLen(len(der)))
	out = append(append(append(out, outer...), mimeVersion...), hdr...)
	out = appendBase64Lines(out, der)
	putBuf(der)
	return out, nil
}

// Result is what Open found.
type Result struct {
	Encrypted bool
	Envelope  *Envelope  // when Encrypted
	Signed    bool       // a signature was found
	Signature *Signature // when the signature verified (maybe with SigErr set)
	SigErr    error      // why the signature or its certificate failed
	Message   []byte     // the message with encryption (and signing) removed
}

const maxLayers = 4

// Open decrypts (with ids) and verifies an S/MIME message. Decryption
// failures are errors; signature failures are reported in Result.SigErr
// and the message is returned unchanged as far as the signature goes
// (the signed multipart stays, so a client can check it itself).
func Open(msg []byte, ids []Identity, opts VerifyOptions) (*Result, error) {
	m, err := parseMessage(msg)
	if err != nil {
		return nil, err
	}
	outer, entity := m.split()
	res := &Result{}
	for layer := 0; layer < maxLayers; layer++ {
		em, err := parseMessage(entity)
		if err != nil {
			return nil, err
		}
		mt, params, err := mime.ParseMediaType(em.get("content-type"))
		if err != nil {
			break
		}
		switch mt {
		case "application/pkcs7-mime", "application/x-pkcs7-mime":
			der, err := decodeBody(em)
			if err != nil {
				return nil, err
			}
			st := strings.ToLower(params["smime-type"])
			if st == "signed-data" {
				res.Signed = true
				sig, err := Verify(der, nil, opts)
				res.Signature, res.SigErr = sig, err
				if sig == nil {
					return finish(res, outer, entity), nil
				}
				entity = canonical(sig.Content)
				continue
			}
			if st != "" && st != "enveloped-data" && st != "authenveloped-data" {
				return nil, fmt.Errorf("smime: unsupported smime-type %q", st)
			}
			if res.Encrypted {
				return nil, errors.New("smime: nested encryption is not supported")
			}
			pt, env, err := Decrypt(der, ids)
			if err != nil {
				return nil, err
			}
			res.Encrypted, res.Envelope = true, env
			entity = canonical(pt)
			continue
		case "multipart/signed":
			if res.Signed {
				return finish(res, outer, entity), nil
			}
			res.Signed = true
			content, sig, err := splitSigned(em.body, params["boundary"])
			if err != nil {
				res.SigErr = err
				return finish(res, outer, entity), nil
			}
			s, err := Verify(sig, content, opts)
			res.Signature, res.SigErr = s, err
			return finish(res, outer, entity), nil
		}
		break
	}
	return finish(res, outer, entity), nil
}

func finish(res *Result, outer, entity []byte) *Result {
	res.Message = join(outer, entity)
	return res
}

func decodeBody(m *message) ([]byte, error) {
	cte := strings.ToLower(m.get("content-transfer-encoding"))
	switch cte {
	case "base64":
		clean := bytes.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
				return -1
			}
			return r
		}, m.body)
		out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
		n, err := base64.StdEncoding.Decode(out, clean)
		if err != nil {
			return nil, fmt.Errorf("smime: bad base64 in the S/MIME part: %w", err)
		}
		return out[:n], nil
	case "binary", "", "7bit", "8bit":
		return m.body, nil
	}
	return nil, fmt.Errorf("smime: unsupported transfer encoding %q for an S/MIME part", cte)
}

// splitSigned returns the signed entity (exact bytes) and the DER
// signature of a multipart/signed body.
func splitSigned(body []byte, b string) (content, sig []byte, err error) {
	if b == "" {
		return nil, nil, errors.New("smime: multipart/signed without boundary")
	}
	delim := []byte("\r\n--" + b)
	padded := append([]byte("\r\n"), body...)
	i := bytes.Index(padded, delim)
	if i < 0 {
		return nil, nil, errors.New("smime: multipart/signed: first part not found")
	}
	rest := padded[i+len(delim):]
	nl := bytes.Index(rest, []byte("\r\n"))
	if nl < 0 {
		return nil, nil, errors.New("smime: multipart/signed: truncated")
	}
	rest = rest[nl+2:]
	j := bytes.Index(rest, delim)
	if j < 0 {
		return nil, nil, errors.New("smime: multipart/signed: signature part not found")
	}
	content = rest[:j]
	rest = rest[j+len(delim):]
	nl = bytes.Index(rest, []byte("\r\n"))
	if nl < 0 {
		return nil, nil, errors.New("smime: multipart/signed: truncated")
	}
	rest = rest[nl+2:]
	k := bytes.Index(rest, delim)
	if k < 0 {
		return nil, nil, errors.New("smime: multipart/signed: closing boundary not found")
	}
	sm, err := parseMessage(rest[:k+2])
	if err != nil {
		return nil, nil, err
	}
	mt, _, _ := mime.ParseMediaType(sm.get("content-type"))
	if mt != "application/pkcs7-signature" && mt != "application/x-pkcs7-signature" {
		return nil, nil, fmt.Errorf("smime: multipart/signed: signature part is %q", mt)
	}
	sig, err = decodeBody(sm)
	if err != nil {
		return nil, nil, err
	}
	return content, sig, nil
}
