package conf

import "testing"

func TestSecureAliasUserLevel(t *testing.T) {
	c, err := Parse("x.toml", []byte(`
[secure_alias]
users = ["Alice@example.org", "bob@example.org"]
levels = { "ALICE@EXAMPLE.ORG" = "dane-only" }
`))
	if err != nil {
		t.Fatal(err)
	}
	s := &c.SecureAlias
	for _, tc := range []struct {
		addr  string
		level TLSLevel
		ok    bool
	}{
		{"alice@example.org", TLSDaneOnly, true},
		{"ALICE@Example.Org", TLSDaneOnly, true},
		{"bob@example.org", TLSEncrypt, true},
		{"carol@example.org", TLSUnset, false},
	} {
		l, ok := s.UserLevel(tc.addr)
		if l != tc.level || ok != tc.ok {
			t.Errorf("%s: %q %v", tc.addr, l, ok)
		}
	}
	if s.AllUsers() {
		t.Error("AllUsers")
	}
	d, _ := Parse("y.toml", []byte(""))
	if l, ok := d.SecureAlias.UserLevel("anyone@example.test"); !ok || l != TLSEncrypt || !d.SecureAlias.AllUsers() {
		t.Errorf("default: %q %v", l, ok)
	}
}
