package conf

import (
	"encoding/json"
	"testing"
)

func TestTLSLevelNames(t *testing.T) {
	for _, name := range TLSLevels {
		l, err := ParseTLSLevel(name)
		if err != nil || !l.Valid() || l.String() != name {
			t.Errorf("%s: %v %v %q", name, l, err, l)
		}
		b, err := l.MarshalText()
		if err != nil || string(b) != name {
			t.Errorf("%s: MarshalText %q %v", name, b, err)
		}
		var back TLSLevel
		if err := back.UnmarshalText(b); err != nil || back != l {
			t.Errorf("%s: round trip %v %v", name, back, err)
		}
	}
	for _, bad := range []string{"", "Verify", "dane_only", "plaintext", " may"} {
		var l TLSLevel
		if err := l.UnmarshalText([]byte(bad)); err == nil || l != TLSUnset {
			t.Errorf("%q accepted as %v", bad, l)
		}
	}
}

// TestTLSLevelUnsetIsNeverWeak: the zero value, and any out-of-range
// value, outranks every real level and requires TLS, so no code that
// takes the stronger of two levels or asks whether TLS is needed can turn
// a missing level into plaintext.
func TestTLSLevelUnsetIsNeverWeak(t *testing.T) {
	var zero TLSLevel
	if zero != TLSUnset || zero.Valid() {
		t.Fatal("the zero value must be TLSUnset and invalid")
	}
	for _, bad := range []TLSLevel{TLSUnset, TLSSecure + 1, 255} {
		if !bad.RequiresTLS() {
			t.Errorf("%v does not require TLS", bad)
		}
		for l := TLSNone; l <= TLSSecure; l++ {
			if !bad.Stronger(l) || l.AtLeast(bad) || l.Stronger(bad) {
				t.Errorf("%v vs %v: a real level outranks an invalid one", bad, l)
			}
		}
		if _, err := bad.MarshalText(); bad != TLSUnset && err == nil {
			t.Errorf("%v marshals", bad)
		}
	}
	for l := TLSNone; l < TLSSecure; l++ {
		if !(l + 1).Stronger(l) || !(l + 1).AtLeast(l) || !l.AtLeast(l) || l.Stronger(l) {
			t.Errorf("order broken at %v", l)
		}
	}
	if TLSNone.RequiresTLS() || TLSMay.RequiresTLS() || TLSDane.RequiresTLS() || !TLSEncrypt.RequiresTLS() || !TLSDaneOnly.RequiresTLS() {
		t.Error("RequiresTLS")
	}
}

// TestTLSLevelJSON: a parsed config prints its levels by name, and a
// transport that leaves the level to the policy map prints "".
func TestTLSLevelJSON(t *testing.T) {
	b, err := json.Marshal(struct {
		A, B TLSLevel
		M    map[string]TLSLevel
	}{A: TLSDaneOnly, M: map[string]TLSLevel{"x": TLSVerify}})
	if err != nil || string(b) != `{"A":"dane-only","B":"","M":{"x":"verify"}}` {
		t.Errorf("%s %v", b, err)
	}
}
