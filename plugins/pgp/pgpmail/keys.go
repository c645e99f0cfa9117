// Package pgpmail is OpenPGP for mail: keys (RFC 4880 v4 and RFC 9580 v6),
// PGP/MIME encryption and signing (RFC 3156, with protected headers as in
// draft-autocrypt-lamps-protected-headers), and decryption and signature
// verification of PGP/MIME and inline PGP messages. It builds on
// github.com/ProtonMail/go-crypto/openpgp/v2.
//
// Every parser here bounds what it reads and returns an error for broken
// input; nothing in it panics on hostile keys or messages.
package pgpmail

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// MaxKeySize is the largest key block (armored or binary) accepted.
const MaxKeySize = 1 << 20

// ErrNoKey is returned when a key block holds no key.
var ErrNoKey = errors.New("no OpenPGP key found")

// ParseKeys reads one or more keys, armored or binary. It recovers from
// panics in the underlying parser and reports them as errors.
func ParseKeys(data []byte) (el openpgp.EntityList, err error) {
	if len(data) > MaxKeySize {
		return nil, fmt.Errorf("key block too large (%d bytes, limit %d)", len(data), MaxKeySize)
	}
	defer func() {
		if r := recover(); r != nil {
			el, err = nil, fmt.Errorf("broken OpenPGP key: %v", r)
		}
	}()
	trimmed := bytes.TrimSpace(data)
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN PGP")) {
		block, err := armor.Decode(bytes.NewReader(trimmed))
		if err != nil {
			return nil, fmt.Errorf("broken armor: %w", err)
		}
		if block.Type != openpgp.PublicKeyType && block.Type != openpgp.PrivateKeyType {
			return nil, fmt.Errorf("armor type %q is not a key block", block.Type)
		}
		if el, err = openpgp.ReadKeyRing(io.LimitReader(block.Body, MaxKeySize)); err != nil {
			return nil, fmt.Errorf("broken OpenPGP key: %w", err)
		}
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("broken OpenPGP key: %w", err)
	}
	if len(el) == 0 {
		return nil, ErrNoKey
	}
	return el, nil
}

// GenerateOptions choose the kind of key Generate makes.
type GenerateOptions struct {
	Name string // display name in the user ID; may be empty
	// V6 makes an RFC 9580 version 6 key (Ed25519/X25519); otherwise a
	// version 4 key (EdDSA/Curve25519) that GnuPG 2.2 and later read.
	V6 bool
	// Lifetime of the key; 0 means two years.
	Lifetime time.Duration
	Now      time.Time // zero: time.Now()
}

// Generate makes a new key with a signing primary key and an encryption
// subkey for addr.
func Generate(addr string, o GenerateOptions) (*openpgp.Entity, error) {
	a, err := mail.ParseAddress(addr)
	if err != nil || !strings.Contains(a.Address, "@") {
		return nil, fmt.Errorf("%q is not a mail address", addr)
	}
	if o.Lifetime == 0 {
		o.Lifetime = 2 * 365 * 24 * time.Hour
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	cfg := &packet.Config{
		Time:            func() time.Time { return now },
		KeyLifetimeSecs: uint32(o.Lifetime / time.Second),
		// Advertise ZLIB besides "none", as GnuPG keys do.
		DefaultCompressionAlgo: packet.CompressionZLIB,
		// Preferred ciphers AES-256, AES-128 (go-crypto lists the
		// default first and AES-128 after it): with AES-128 alone, every
		// message to us and to our own copy fell back to AES-128.
		DefaultCipher: packet.CipherAES256,
	}
	if o.V6 {
		cfg.V6Keys = true
		cfg.Algorithm = packet.PubKeyAlgoEd25519
		cfg.AEADConfig = &packet.AEADConfig{DefaultMode: packet.AEADModeOCB}
	} else {
		cfg.Algorithm = packet.PubKeyAlgoEdDSA
		cfg.Curve = packet.Curve25519
	}
	return openpgp.NewEntity(o.Name, "", a.Address, cfg)
}

// Armor returns e's public key (or, with private, the secret key) armored.
func Armor(e *openpgp.Entity, private bool) ([]byte, error) {
	var buf bytes.Buffer
	typ := openpgp.PublicKeyType
	if private {
		typ = openpgp.PrivateKeyType
	}
	w, err := armor.Encode(&buf, typ, nil)
	if err != nil {
		return nil, err
	}
	if private {
		err = e.SerializePrivateWithoutSigning(w, nil)
	} else {
		err = e.Serialize(w)
	}
	if err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// Binary returns e's public key in binary form (as WKD serves it).
func Binary(e *openpgp.Entity) ([]byte, error) {
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Fingerprint is the primary key's fingerprint in upper-case hex.
func Fingerprint(e *openpgp.Entity) string {
	return fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)
}

// Addresses lists the mail addresses in e's user IDs, lower-cased.
func Addresses(e *openpgp.Entity) []string {
	var out []string
	seen := map[string]bool{}
	for _, id := range e.Identities {
		a := idAddress(id)
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

func idAddress(id *openpgp.Identity) string {
	if id == nil || id.UserId == nil {
		return ""
	}
	a := id.UserId.Email
	if a == "" {
		if pa, err := mail.ParseAddress(id.Name); err == nil {
			a = pa.Address
		}
	}
	return strings.ToLower(strings.TrimSpace(a))
}

// HasAddress reports whether one of e's user IDs names addr.
func HasAddress(e *openpgp.Entity, addr string) bool {
	addr = strings.ToLower(strings.TrimSpace(addr))
	for _, a := range Addresses(e) {
		if a == addr {
			return true
		}
	}
	return false
}

// CanEncrypt reports why e cannot be encrypted to at now (nil if it can):
// revoked, expired, or without an encryption-capable key.
func CanEncrypt(e *openpgp.Entity, now time.Time) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("broken key: %v", r)
		}
	}()
	if e == nil || e.PrimaryKey == nil {
		return ErrNoKey
	}
	if e.Revoked(now) {
		return errors.New("key is revoked")
	}
	if _, err := e.EncryptionKeyWithError(now, nil); err != nil {
		return fmt.Errorf("no usable encryption key: %w", err)
	}
	return nil
}

// CanSign reports why e cannot sign at now (nil if it can).
func CanSign(e *openpgp.Entity, now time.Time) error {
	if e == nil || e.PrivateKey == nil {
		return errors.New("no secret key")
	}
	if e.PrivateKey.Encrypted {
		return errors.New("secret key is protected by a passphrase")
	}
	if _, ok := e.SigningKey(now, nil); !ok {
		return errors.New("no usable signing key")
	}
	return nil
}

// Expiry returns when e's primary key expires (zero: never).
func Expiry(e *openpgp.Entity, now time.Time) time.Time {
	sig, err := e.PrimarySelfSignature(now, nil)
	if err != nil || sig == nil || sig.KeyLifetimeSecs == nil || *sig.KeyLifetimeSecs == 0 {
		return time.Time{}
	}
	return e.PrimaryKey.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
}

// PublicOnly returns a copy of e without secret key material.
func PublicOnly(e *openpgp.Entity) (*openpgp.Entity, error) {
	b, err := Binary(e)
	if err != nil {
		return nil, err
	}
	el, err := ParseKeys(b)
	if err != nil {
		return nil, err
	}
	return el[0], nil
}
