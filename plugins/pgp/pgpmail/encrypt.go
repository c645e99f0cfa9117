package pgpmail

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// ErrAlreadyEncrypted is returned by Encrypt for a message that already is
// encrypted (PGP/MIME, inline PGP or S/MIME): it is never encrypted again.
var ErrAlreadyEncrypted = errors.New("message is already encrypted")

// EncryptOptions say to whom and how a message is encrypted.
type EncryptOptions struct {
	// Recipients' public keys (the organisation's own key belongs here
	// too, so the sender can read what was sent). At least one.
	Recipients []*openpgp.Entity
	// Signer signs inside the encryption (RFC 3156 §6.2) when not nil.
	Signer *openpgp.Entity
	// ProtectHeaders copies From, To, Cc, Subject, Date, Message-ID,
	// Reply-To, In-Reply-To and References into the encrypted part
	// (protected-headers="v1") and replaces the outer Subject with "...".
	ProtectHeaders bool
	Now            time.Time // zero: time.Now()
}

// protectedNames are the header fields copied into the encrypted part.
var protectedNames = []string{"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "In-Reply-To", "References"}

// IsEncrypted reports whether msg already carries encrypted content.
func IsEncrypted(msg []byte) bool {
	fields, body, err := splitEntity(toCRLF(msg))
	if err != nil {
		return false
	}
	t, p := mediaType(get(fields, "Content-Type"))
	switch t {
	case "multipart/encrypted", "application/pgp-encrypted":
		return true
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		st := strings.ToLower(p["smime-type"])
		return st == "" || st == "enveloped-data" || st == "authenveloped-data"
	}
	if !strings.HasPrefix(t, "text/") {
		return false
	}
	// Inline PGP counts only when the whole body is one PGP message: a
	// block pasted into plain text leaves the rest in the clear.
	d := bytes.TrimSpace(decodeBody(body, get(fields, "Content-Transfer-Encoding")))
	return bytes.HasPrefix(d, []byte("-----BEGIN PGP MESSAGE-----")) && bytes.HasSuffix(d, []byte("-----END PGP MESSAGE-----")) &&
		bytes.Count(d, []byte("-----BEGIN PGP MESSAGE-----")) == 1
}

// Encrypt turns msg (a complete RFC 5322 message) into a PGP/MIME
// multipart/encrypted message (RFC 3156), signed inside the encryption
// when o.Signer is set.
func Encrypt(msg []byte, o EncryptOptions) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("openpgp: %v", r)
		}
	}()
	if len(o.Recipients) == 0 {
		return nil, errors.New("no recipient keys")
	}
	if IsEncrypted(msg) {
		return nil, ErrAlreadyEncrypted
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
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
			if o.ProtectHeaders {
				inner.WriteString(strings.TrimRight(f.raw, "\r\n") + "; protected-headers=\"v1\"\r\n")
			} else {
				inner.WriteString(f.raw)
			}
		case isContentField(f):
			inner.WriteString(f.raw)
		case f.is("MIME-Version"):
		default:
			if o.ProtectHeaders && f.is("Subject") {
				outer.WriteString("Subject: ...\r\n")
			} else {
				outer.WriteString(f.raw)
			}
		}
	}
	if !hasCT {
		ct := "Content-Type: text/plain; charset=us-ascii"
		if o.ProtectHeaders {
			ct += "; protected-headers=\"v1\""
		}
		inner.WriteString(ct + "\r\n")
	}
	if o.ProtectHeaders {
		for _, name := range protectedNames {
			for _, f := range fields {
				if f.is(name) {
					inner.WriteString(f.raw)
				}
			}
		}
	}
	inner.WriteString("\r\n")
	inner.Write(body)

	// Compressed inside the encryption (as GnuPG does by default): the
	// armored result of a large mail stays near the original's size.
	//
	// The cipher is the strongest that every recipient's key prefers:
	// go-crypto intersects AES-256 and AES-128 with each key's preferred
	// symmetric algorithms, but then takes the config's default cipher
	// whenever it is in the intersection, and that default is AES-128. So
	// the default is AES-256: chosen when all keys list it, else AES-128
	// (which RFC 9580 §9.3 makes implicit for every key).
	cfg := &packet.Config{Time: func() time.Time { return now }, DefaultCipher: packet.CipherAES256,
		DefaultCompressionAlgo: packet.CompressionZLIB, CompressionConfig: &packet.CompressionConfig{Level: 6}}
	var armored bytes.Buffer
	aw, err := armor.Encode(&armored, "PGP MESSAGE", nil)
	if err != nil {
		return nil, err
	}
	params := &openpgp.EncryptParams{Config: cfg}
	if o.Signer != nil {
		if err := CanSign(o.Signer, now); err != nil {
			return nil, fmt.Errorf("signing key %s: %w", Fingerprint(o.Signer), err)
		}
		params.Signers = []*openpgp.Entity{o.Signer}
	}
	for _, r := range o.Recipients {
		if err := CanEncrypt(r, now); err != nil {
			return nil, fmt.Errorf("key %s: %w", Fingerprint(r), err)
		}
	}
	pw, err := openpgp.EncryptWithParams(aw, o.Recipients, nil, params)
	if err != nil {
		return nil, err
	}
	if _, err := pw.Write(inner.Bytes()); err != nil {
		return nil, err
	}
	if err := pw.Close(); err != nil {
		return nil, err
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	armored.WriteByte('\n')

	b := boundary()
	var res bytes.Buffer
	res.Write(outer.Bytes())
	res.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&res, "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n boundary=\"%s\"\r\n", b)
	res.WriteString("\r\nThis is an OpenPGP/MIME encrypted message (RFC 4880, RFC 9580 and RFC 3156)\r\n")
	fmt.Fprintf(&res, "--%s\r\n", b)
	res.WriteString("Content-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n")
	fmt.Fprintf(&res, "--%s\r\n", b)
	res.WriteString("Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n" +
		"Content-Description: OpenPGP encrypted message\r\nContent-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n")
	res.Write(toCRLF(armored.Bytes()))
	fmt.Fprintf(&res, "\r\n--%s--\r\n", b)
	return res.Bytes(), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
