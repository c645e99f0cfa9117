// Package opensslrsa makes RSASSA-PKCS1-v1_5 signatures (RFC 8017 §8.2)
// with the system's OpenSSL 3 libcrypto instead of Go's crypto/rsa: the
// smime plugin's `rsa_signer` "auto" (its default: OpenSSL where it can be
// loaded, Go where not or where OpenSSL fails, NewFallbackSigner) and
// "openssl" (OpenSSL or a configuration error, NewSigner).
//
// Why: an RSA-2048 signature costs Go's constant-time crypto/rsa about
// 1.15 ms on the machines we measure on, OpenSSL 3 about 0.7 ms (its
// RSAZ code multiplies with AVX2). A gateway that signs every outgoing
// message spends most of its S/MIME CPU there (issue 19.4).
//
// How: libcrypto.so.3 is opened at run time (dlopen), so that building
// the plugin needs no OpenSSL headers and a plugin without the library,
// or built without cgo, still runs (with Go's RSA; Available says why not).
// The private key is handed over once, as PKCS #1 DER, and the DER copy
// is cleared; OpenSSL keeps the key until the Signer is garbage (RSA_free
// clears it). Every signature OpenSSL makes is verified with Go's
// crypto/rsa before it is returned: a wrong or faulty signature (a fault
// in a CRT signature gives the key away) is never used. PSS, other hashes
// and keys of more than two primes are signed by Go.
//
// RSA_sign and d2i_RSAPrivateKey are deprecated in OpenSSL 3 (for new
// code, in favour of EVP_PKEY), but part of libcrypto.so.3's ABI; the
// EVP route costs a context and a provider look-up per signature.
// No maintained Go library for this is available to the project; the
// binding is five libcrypto functions (dl_linux.go).
package opensslrsa

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// ErrUnavailable is returned when OpenSSL cannot be used; the error
// Available returns wraps it with the reason.
var ErrUnavailable = errors.New("opensslrsa: OpenSSL libcrypto.so.3 is not available")

var loaded struct {
	once    sync.Once
	version string
	err     error
}

// Available loads libcrypto.so.3 (once) and returns its version
// ("OpenSSL 3.0.17 1 Jul 2025"), or why it cannot be used.
func Available() (string, error) {
	loaded.once.Do(func() {
		loaded.version, loaded.err = load()
		if loaded.err != nil {
			loaded.err = fmt.Errorf("%w: %v", ErrUnavailable, loaded.err)
		}
	})
	return loaded.version, loaded.err
}

// live counts the keys OpenSSL holds (for the tests).
var live atomic.Int64

// nids are OpenSSL's object numbers of the hashes OpenSSL signs for.
var nids = map[crypto.Hash]int{
	crypto.SHA256: 672, // NID_sha256
	crypto.SHA384: 673, // NID_sha384
	crypto.SHA512: 674, // NID_sha512
}

// Signer is a crypto.Signer for an RSA key that OpenSSL signs with.
type Signer struct {
	priv *rsa.PrivateKey
	key  *key
	// fallback, when set, is told why OpenSSL did not sign; Sign then
	// signs with crypto/rsa instead of failing (NewFallbackSigner).
	fallback func(error)
}

// NewFallbackSigner is NewSigner for a plugin that prefers OpenSSL but
// can do without it: when OpenSSL fails to sign later (or signs wrongly),
// Sign tells onFail why and signs with crypto/rsa. Where OpenSSL cannot
// take the key at all it fails as NewSigner does (then use priv).
func NewFallbackSigner(priv *rsa.PrivateKey, onFail func(error)) (*Signer, error) {
	s, err := NewSigner(priv)
	if err != nil {
		return nil, err
	}
	s.fallback = onFail
	return s, nil
}

// NewSigner hands priv to OpenSSL and checks, with one signature, that
// OpenSSL signs as priv does.
func NewSigner(priv *rsa.PrivateKey) (*Signer, error) {
	if _, err := Available(); err != nil {
		return nil, err
	}
	if len(priv.Primes) != 2 {
		return nil, errors.New("opensslrsa: only two-prime RSA keys")
	}
	if err := priv.Validate(); err != nil {
		return nil, fmt.Errorf("opensslrsa: %w", err)
	}
	der := x509.MarshalPKCS1PrivateKey(priv)
	k, err := newKey(der, priv.Size())
	clear(der)
	if err != nil {
		return nil, err
	}
	return newSigner(priv, k)
}

func newSigner(priv *rsa.PrivateKey, k *key) (*Signer, error) {
	s := &Signer{priv: priv, key: k}
	digest := make([]byte, crypto.SHA256.Size())
	if _, err := s.Sign(nil, digest, crypto.SHA256); err != nil {
		return nil, err
	}
	return s, nil
}

// Public returns the public key.
func (s *Signer) Public() crypto.PublicKey { return &s.priv.PublicKey }

// Sign signs digest, a hash of opts.HashFunc(): PKCS #1 v1.5 with SHA-256,
// SHA-384 or SHA-512 by OpenSSL, verified before it is returned; anything
// else (PSS, other hashes) by crypto/rsa. rand is used only by crypto/rsa's
// PSS (OpenSSL's signatures are deterministic; its blinding has its own
// randomness).
func (s *Signer) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if _, pss := opts.(*rsa.PSSOptions); pss {
		return s.priv.Sign(rand, digest, opts)
	}
	h := opts.HashFunc()
	nid, ok := nids[h]
	if !ok {
		return s.priv.Sign(rand, digest, opts)
	}
	if len(digest) != h.Size() {
		return nil, errors.New("opensslrsa: digest length does not match the hash")
	}
	sig, err := s.key.sign(nid, digest)
	if err == nil && rsa.VerifyPKCS1v15(&s.priv.PublicKey, h, digest, sig) != nil {
		sig, err = nil, errors.New("opensslrsa: OpenSSL's signature does not verify with the public key; not used")
	}
	if err != nil && s.fallback != nil {
		s.fallback(err)
		return s.priv.Sign(rand, digest, opts)
	}
	return sig, err
}
