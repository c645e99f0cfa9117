package opensslrsa

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"runtime"
	"sync"
	"testing"
	"time"
)

// need skips when this machine has no libcrypto.so.3 (Debian: libssl3,
// which .ci/run installs with openssl).
func need(t testing.TB) {
	t.Helper()
	if _, err := Available(); err != nil {
		t.Skipf("%v", err)
	}
}

var keys struct {
	sync.Mutex
	m map[int]*rsa.PrivateKey
}

func testKey(t testing.TB, bits int) *rsa.PrivateKey {
	keys.Lock()
	defer keys.Unlock()
	if k := keys.m[bits]; k != nil {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	if keys.m == nil {
		keys.m = map[int]*rsa.PrivateKey{}
	}
	keys.m[bits] = k
	return k
}

func TestAvailable(t *testing.T) {
	need(t)
	v, _ := Available()
	if !bytes.HasPrefix([]byte(v), []byte("OpenSSL 3.")) {
		t.Errorf("version %q, want OpenSSL 3.x", v)
	}
}

// PKCS #1 v1.5 signatures are deterministic: OpenSSL's must be Go's,
// byte for byte, for every key size and hash it signs.
func TestSameAsGo(t *testing.T) {
	need(t)
	for _, bits := range []int{2048, 3072, 4096} {
		priv := testKey(t, bits)
		s, err := NewSigner(priv)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
			for i := range 3 {
				hh := h.New()
				fmt.Fprintf(hh, "message %d %d", bits, i)
				digest := hh.Sum(nil)
				got, err := s.Sign(rand.Reader, digest, h)
				if err != nil {
					t.Fatalf("%d %v: %v", bits, h, err)
				}
				want, err := rsa.SignPKCS1v15(nil, priv, h, digest)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%d %v: OpenSSL's signature differs from Go's", bits, h)
				}
			}
		}
		if s.Public().(*rsa.PublicKey).N.Cmp(priv.N) != 0 {
			t.Error("Public is not the key's")
		}
	}
}

// What OpenSSL does not sign goes to crypto/rsa: PSS, SHA-1, and a
// digest of the wrong length is refused.
func TestOthersByGo(t *testing.T) {
	need(t)
	priv := testKey(t, 2048)
	s, err := NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("pss"))
	pss := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	sig, err := s.Sign(rand.Reader, d[:], pss)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPSS(&priv.PublicKey, crypto.SHA256, d[:], sig, pss); err != nil {
		t.Errorf("PSS: %v", err)
	}
	d1 := sha1.Sum([]byte("sha1"))
	sig, err = s.Sign(rand.Reader, d1[:], crypto.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(&priv.PublicKey, crypto.SHA1, d1[:], sig); err != nil {
		t.Errorf("SHA-1: %v", err)
	}
	if _, err := s.Sign(rand.Reader, d[:20], crypto.SHA256); err == nil {
		t.Error("a 20-byte SHA-256 digest was signed")
	}
	d5 := sha512.Sum512([]byte("x"))
	if _, err := s.Sign(rand.Reader, d5[:], crypto.SHA256); err == nil {
		t.Error("a 64-byte SHA-256 digest was signed")
	}
}

// A signature that does not verify with the public key (here: OpenSSL
// holds another key than the Signer's public half) is never returned;
// NewSigner's check finds it at once.
func TestMismatchRefused(t *testing.T) {
	need(t)
	a := testKey(t, 2048)
	b, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der := x509.MarshalPKCS1PrivateKey(b)
	k, err := newKey(der, b.Size())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newSigner(a, k); err == nil {
		t.Fatal("a Signer whose OpenSSL key is another key was made")
	}
	s := &Signer{priv: a, key: k}
	d := sha256.Sum256([]byte("x"))
	if sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err == nil || sig != nil {
		t.Fatalf("signature of the wrong key returned (err %v)", err)
	}
}

// A fallback Signer whose OpenSSL signature is wrong says so and signs
// with crypto/rsa instead: a valid signature, never the wrong one.
func TestFallback(t *testing.T) {
	need(t)
	a := testKey(t, 2048)
	b, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k, err := newKey(x509.MarshalPKCS1PrivateKey(b), b.Size())
	if err != nil {
		t.Fatal(err)
	}
	var told []error
	s := &Signer{priv: a, key: k, fallback: func(err error) { told = append(told, err) }}
	d := sha256.Sum256([]byte("x"))
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(&a.PublicKey, crypto.SHA256, d[:], sig); err != nil {
		t.Fatalf("fallback signature: %v", err)
	}
	if len(told) != 1 {
		t.Fatalf("onFail called %d times", len(told))
	}
	// A working one never falls back.
	told = nil
	good, err := NewFallbackSigner(a, func(err error) { told = append(told, err) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := good.Sign(rand.Reader, d[:], crypto.SHA256); err != nil || len(told) != 0 {
		t.Fatalf("%v, %d fallbacks", err, len(told))
	}
}

func TestBadKeys(t *testing.T) {
	need(t)
	priv := testKey(t, 2048)
	der := x509.MarshalPKCS1PrivateKey(priv)
	if _, err := newKey(der[:len(der)-1], priv.Size()); err == nil {
		t.Error("truncated DER taken")
	}
	if _, err := newKey(append(bytes.Clone(der), 0), priv.Size()); err == nil {
		t.Error("DER with a trailing byte taken")
	}
	if _, err := newKey([]byte("not a key"), priv.Size()); err == nil {
		t.Error("garbage taken")
	}
	if _, err := newKey(nil, priv.Size()); err == nil {
		t.Error("empty key taken")
	}
	if _, err := newKey(der, priv.Size()+1); err == nil {
		t.Error("a key of another size taken")
	}
	bad := *priv
	bad.Precomputed = rsa.PrecomputedValues{}
	bad.D = new(big.Int).Add(priv.D, big.NewInt(2))
	if _, err := NewSigner(&bad); err == nil {
		t.Error("an inconsistent key taken")
	}
}

// Many goroutines sign with one key at once (the plugin's workers).
func TestConcurrent(t *testing.T) {
	need(t)
	priv := testKey(t, 2048)
	s, err := NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				d := sha256.Sum256(fmt.Appendf(nil, "%d/%d", g, i))
				sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
				if err == nil {
					err = rsa.VerifyPKCS1v15(&priv.PublicKey, crypto.SHA256, d[:], sig)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Keys are freed in OpenSSL once their Signers are garbage.
func TestKeysFreed(t *testing.T) {
	need(t)
	priv := testKey(t, 2048)
	before := live.Load()
	for range 20 {
		if _, err := NewSigner(priv); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for live.Load() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still held in OpenSSL, %d before", live.Load(), before)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUnavailableError(t *testing.T) {
	if _, err := Available(); err != nil && !errors.Is(err, ErrUnavailable) {
		t.Errorf("Available's error %v does not wrap ErrUnavailable", err)
	}
}

func BenchmarkSign2048(b *testing.B) {
	need(b)
	priv := testKey(b, 2048)
	s, err := NewSigner(priv)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	b.Run("openssl", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			if _, err := priv.Sign(nil, d[:], crypto.SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
}
