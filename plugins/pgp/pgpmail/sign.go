package pgpmail

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/posthorn/posthorn/sdk/mime7bit"
)

// Sign turns msg (a complete RFC 5322 message) into a PGP/MIME
// multipart/signed message (RFC 3156 §5): the content part (the message's
// Content-* fields and body, CRLF-canonical) and a detached, armored
// signature over exactly those bytes, micalg pgp-sha256. The other header
// fields stay outside.
func Sign(msg []byte, signer *openpgp.Entity, now time.Time) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("openpgp: %v", r)
		}
	}()
	if signer == nil {
		return nil, errors.New("no signing key")
	}
	if now.IsZero() {
		now = time.Now()
	}
	if err := CanSign(signer, now); err != nil {
		return nil, fmt.Errorf("signing key %s: %w", Fingerprint(signer), err)
	}
	fields, body, err := splitEntity(toCRLF(msg))
	if err != nil {
		return nil, err
	}
	var inner, outer bytes.Buffer
	hasCT := false
	for _, f := range fields {
		switch {
		case f.is("Content-Type"):
			hasCT = true
			inner.WriteString(f.raw)
		case isContentField(f):
			inner.WriteString(f.raw)
		case f.is("MIME-Version"):
		default:
			outer.WriteString(f.raw)
		}
	}
	if !hasCT {
		inner.WriteString("Content-Type: text/plain; charset=us-ascii\r\n")
	}
	inner.WriteString("\r\n")
	inner.Write(body)
	// Signed content must be 7-bit (RFC 3156 §3, §5): a relay without
	// 8BITMIME downgrades 8-bit parts, which would break the signature.
	// An entity nested too deep to convert is signed as it is.
	content := inner.Bytes()
	if seven, err := mime7bit.Bytes(content); err == nil {
		content = seven
	}

	var raw, sig bytes.Buffer
	cfg := &packet.Config{Time: func() time.Time { return now }, DefaultHash: crypto.SHA256}
	if err := openpgp.DetachSignWithParams(&raw, []*openpgp.Entity{signer}, bytes.NewReader(content), &openpgp.SignParams{Config: cfg}); err != nil {
		return nil, err
	}
	// Armored with the CRC-24 line: GnuPG 2.2 misreads armor without it.
	aw, err := armor.EncodeWithChecksumOption(&sig, "PGP SIGNATURE", nil, true)
	if err != nil {
		return nil, err
	}
	if _, err := aw.Write(raw.Bytes()); err != nil {
		return nil, err
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	var rb [12]byte
	rand.Read(rb[:])
	boundary := "pgp-signed-" + hex.EncodeToString(rb[:])
	var b bytes.Buffer
	b.Write(outer.Bytes())
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/signed; boundary=\"%s\"; micalg=pgp-sha256;\r\n protocol=\"application/pgp-signature\"\r\n\r\n", boundary)
	b.WriteString("This is an OpenPGP/MIME signed message (RFC 3156).\r\n")
	fmt.Fprintf(&b, "--%s\r\n", boundary)
	b.Write(content)
	fmt.Fprintf(&b, "\r\n--%s\r\n", boundary)
	b.WriteString("Content-Type: application/pgp-signature; name=\"signature.asc\"\r\nContent-Description: OpenPGP digital signature\r\n\r\n")
	b.Write(bytes.TrimRight(sig.Bytes(), "\r\n"))
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return b.Bytes(), nil
}
