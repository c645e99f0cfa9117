package webmailbox

import (
	"bytes"
	"errors"
	"testing"
)

var testKDF = KDFParams{Time: 1, MemoryK: 1024, Threads: 1}

func TestSealOpen(t *testing.T) {
	k, _ := NewKeyPair()
	other, _ := NewKeyPair()
	sealed, err := Seal(k.PublicKey().Bytes(), []byte("hello"), []byte("raw\x00bob"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := Open(k, sealed, []byte("raw\x00bob")); err != nil || string(p) != "hello" {
		t.Fatalf("open: %q %v", p, err)
	}
	if _, err := Open(other, sealed, []byte("raw\x00bob")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("other key: %v", err)
	}
	if _, err := Open(k, sealed, []byte("raw\x00eve")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("moved to another mailbox: %v", err)
	}
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := Open(k, bad, []byte("raw\x00bob")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("tampered: %v", err)
	}
	for _, short := range [][]byte{nil, {1}, sealed[:40]} {
		if _, err := Open(k, short, nil); !errors.Is(err, ErrDecrypt) {
			t.Errorf("short input: %v", err)
		}
	}
	if _, err := Seal([]byte{1, 2}, []byte("x"), nil); err == nil {
		t.Error("bad public key accepted")
	}
}

func TestWrapUnwrap(t *testing.T) {
	k, _ := NewKeyPair()
	w := WrapWithSecret(k, "correct horse", testKDF, []byte("pw\x00bob"))
	got, err := UnwrapWithSecret(w, "correct horse", []byte("pw\x00bob"))
	if err != nil || !got.Equal(k) {
		t.Fatalf("unwrap: %v", err)
	}
	if _, err := UnwrapWithSecret(w, "wrong horse", []byte("pw\x00bob")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("wrong secret: %v", err)
	}
	if _, err := UnwrapWithSecret(w, "correct horse", []byte("pw\x00eve")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("other mailbox: %v", err)
	}
	// Parameters are authenticated: lowering them is detected.
	bad := bytes.Clone(w)
	bad[3] = 2
	if _, err := UnwrapWithSecret(bad, "correct horse", []byte("pw\x00bob")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("changed parameters: %v", err)
	}
	// Absurd parameters are refused before any work.
	huge := bytes.Clone(w)
	huge[4] = 0xFF
	if _, err := UnwrapWithSecret(huge, "correct horse", nil); !errors.Is(err, ErrDecrypt) {
		t.Errorf("huge memory: %v", err)
	}
	key := randBytes(32)
	if got, err := UnwrapWithKey(WrapWithKey(k, key, nil), key, nil); err != nil || !got.Equal(k) {
		t.Errorf("key wrap: %v", err)
	}
	if !slowHashEqual(slowHash("123456", pinKDF), "123456", pinKDF) || slowHashEqual(slowHash("123456", pinKDF), "123457", pinKDF) {
		t.Error("slow hash")
	}
}
