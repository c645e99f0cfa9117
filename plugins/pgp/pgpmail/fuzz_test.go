package pgpmail

import (
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// FuzzDecrypt feeds arbitrary messages to Decrypt (PGP/MIME, signed,
// inline) and arbitrary key blocks to ParseKeys: errors are fine, panics
// and hangs are not. Seeds: testdata/fuzz/FuzzDecrypt.
func FuzzDecrypt(f *testing.F) {
	key, err := Generate("fuzz@example.org", GenerateOptions{Now: time.Unix(1_700_000_000, 0)})
	if err != nil {
		f.Fatal(err)
	}
	ring := openpgp.EntityList{key}
	pub, _ := Armor(key, false)
	enc, err := Encrypt([]byte(testMsg), EncryptOptions{Recipients: []*openpgp.Entity{key}, Signer: key, Now: time.Unix(1_700_000_100, 0)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc)
	f.Add(pub)
	f.Add([]byte(testMsg))
	now := time.Unix(1_700_000_200, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Decrypt(data, ring, now)
		if err == nil && res == nil {
			t.Fatal("nil result without error")
		}
		if res != nil {
			_ = res.Header()
		}
		if el, err := ParseKeys(data); err == nil {
			for _, e := range el {
				_ = CanEncrypt(e, now)
				_ = Addresses(e)
			}
		}
		_ = IsEncrypted(data)
		_ = StripResultHeader(data, "x")
	})
}
