package webmailbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
)

// Encryption at rest.
//
// Every mailbox has an X25519 key pair. Messages are sealed to the public
// key: a fresh ephemeral X25519 key, HKDF-SHA256 over the shared secret and
// both public keys gives an AES-256-GCM key. The private key is stored only
// wrapped (AES-256-GCM) by a key derived with argon2id from the password
// and, in reset mode, a second copy by one derived from the security
// answer. Before activation the private key is wrapped by the plugin's
// master key, which lives in a file in the data directory, never in the
// database; activation rewraps it and drops that copy.

const sealVersion = 1

// ErrDecrypt means a sealed value could not be opened: wrong key or
// tampered data.
var ErrDecrypt = errors.New("webmailbox: cannot decrypt (wrong key or damaged data)")

// KDFParams are argon2id parameters; they are stored with every wrapped key
// so they can change without breaking old mailboxes.
type KDFParams struct {
	Time    uint32
	MemoryK uint32 // KiB
	Threads uint8
}

// DefaultKDF is what new wraps use unless configured otherwise.
var DefaultKDF = KDFParams{Time: 2, MemoryK: 64 * 1024, Threads: 2}

func (p KDFParams) valid() bool {
	return p.Time >= 1 && p.Time <= 20 && p.MemoryK >= 1024 && p.MemoryK <= 4*1024*1024 && p.Threads >= 1
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported systems
	}
	return b
}

func gcm(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return a
}

// aeadSeal encrypts with a random nonce: nonce || ciphertext.
func aeadSeal(key, plain, ad []byte) []byte {
	a := gcm(key)
	nonce := randBytes(a.NonceSize())
	return a.Seal(nonce, nonce, plain, ad)
}

func aeadOpen(key, sealed, ad []byte) ([]byte, error) {
	a := gcm(key)
	if len(sealed) < a.NonceSize()+a.Overhead() {
		return nil, ErrDecrypt
	}
	p, err := a.Open(nil, sealed[:a.NonceSize()], sealed[a.NonceSize():], ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return p, nil
}

// NewKeyPair makes a mailbox key pair.
func NewKeyPair() (*ecdh.PrivateKey, error) { return ecdh.X25519().GenerateKey(rand.Reader) }

// Seal encrypts plain to pub. ad binds the ciphertext to its context (the
// mailbox address and the field), so a value cannot be moved elsewhere.
// Layout: version(1) || ephemeral public key(32) || nonce || ciphertext.
func Seal(pub []byte, plain, ad []byte) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("webmailbox: bad public key: %w", err)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	shared, err := eph.ECDH(pk)
	if err != nil {
		return nil, err
	}
	key := sealKey(shared, eph.PublicKey().Bytes(), pub)
	out := append([]byte{sealVersion}, eph.PublicKey().Bytes()...)
	return append(out, aeadSeal(key, plain, ad)...), nil
}

// Open decrypts what Seal produced.
func Open(priv *ecdh.PrivateKey, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < 1+32 || sealed[0] != sealVersion {
		return nil, ErrDecrypt
	}
	epub, err := ecdh.X25519().NewPublicKey(sealed[1:33])
	if err != nil {
		return nil, ErrDecrypt
	}
	shared, err := priv.ECDH(epub)
	if err != nil {
		return nil, ErrDecrypt
	}
	return aeadOpen(sealKey(shared, sealed[1:33], priv.PublicKey().Bytes()), sealed[33:], ad)
}

func sealKey(shared, eph, pub []byte) []byte {
	info := append(append([]byte("posthorn-webmailbox seal v1"), eph...), pub...)
	k, err := hkdf.Key(sha256.New, shared, nil, string(info), 32)
	if err != nil {
		panic(err)
	}
	return k
}

// WrapWithSecret wraps the private key under argon2id(secret). Layout:
// time(4) memory(4) threads(1) salt(16) sealed.
func WrapWithSecret(priv *ecdh.PrivateKey, secret string, p KDFParams, ad []byte) []byte {
	salt := randBytes(16)
	key := argon2.IDKey([]byte(secret), salt, p.Time, p.MemoryK, p.Threads, 32)
	hdr := make([]byte, 9, 9+16)
	binary.BigEndian.PutUint32(hdr[0:], p.Time)
	binary.BigEndian.PutUint32(hdr[4:], p.MemoryK)
	hdr[8] = p.Threads
	hdr = append(hdr, salt...)
	return append(hdr, aeadSeal(key, priv.Bytes(), append(append([]byte{}, hdr...), ad...))...)
}

// UnwrapWithSecret reverses WrapWithSecret; a wrong secret gives ErrDecrypt.
func UnwrapWithSecret(wrapped []byte, secret string, ad []byte) (*ecdh.PrivateKey, error) {
	if len(wrapped) < 25 {
		return nil, ErrDecrypt
	}
	p := KDFParams{
		Time:    binary.BigEndian.Uint32(wrapped[0:]),
		MemoryK: binary.BigEndian.Uint32(wrapped[4:]),
		Threads: wrapped[8],
	}
	if !p.valid() {
		return nil, ErrDecrypt
	}
	key := argon2.IDKey([]byte(secret), wrapped[9:25], p.Time, p.MemoryK, p.Threads, 32)
	raw, err := aeadOpen(key, wrapped[25:], append(append([]byte{}, wrapped[:25]...), ad...))
	if err != nil {
		return nil, err
	}
	return ecdh.X25519().NewPrivateKey(raw)
}

// WrapWithKey wraps the private key under a 32-byte symmetric key (the
// master key before activation, a session key after login).
func WrapWithKey(priv *ecdh.PrivateKey, key, ad []byte) []byte {
	return aeadSeal(key, priv.Bytes(), ad)
}

// UnwrapWithKey reverses WrapWithKey.
func UnwrapWithKey(wrapped, key, ad []byte) (*ecdh.PrivateKey, error) {
	raw, err := aeadOpen(key, wrapped, ad)
	if err != nil {
		return nil, err
	}
	return ecdh.X25519().NewPrivateKey(raw)
}

// hashSecret is a fast hash for high-entropy secrets (tokens, session ids).
func hashSecret(s []byte) []byte {
	h := sha256.Sum256(s)
	return h[:]
}

// slowHash hashes a low-entropy secret (PIN, TAN) with argon2id: salt || hash.
func slowHash(secret string, p KDFParams) []byte {
	salt := randBytes(16)
	return append(salt, argon2.IDKey([]byte(secret), salt, p.Time, p.MemoryK, p.Threads, 32)...)
}

func slowHashEqual(stored []byte, secret string, p KDFParams) bool {
	if len(stored) != 48 {
		return false
	}
	h := argon2.IDKey([]byte(secret), stored[:16], p.Time, p.MemoryK, p.Threads, 32)
	return subtle.ConstantTimeCompare(h, stored[16:]) == 1
}
