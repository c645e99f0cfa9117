package tlspolicy

import (
	"crypto/sha256"
	"reflect"
	"testing"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/testbed/ca"
)

func TestLookup(t *testing.T) {
	m, err := NewMap(May, []conf.TLSPolicy{
		{Domain: "bank.example", Level: Secure},
		{Domain: ".partner.example", Level: Verify},
		{Domain: "partner.example", Level: Encrypt},
		{Domain: ".example", Level: None},
	})
	if err != nil {
		t.Fatal(err)
	}
	for domain, want := range map[string]Level{
		"bank.example":         Secure,
		"BANK.example.":        Secure,
		"www.bank.example":     None, // ".example" covers it; "bank.example" is exact only
		"partner.example":      Encrypt,
		"mx.partner.example":   Verify,
		"a.b.partner.example":  Verify,
		"other.example":        None,
		"unrelated.test":       May,
		"example":              May,
		"notpartner.example":   None,
		"partner.example.evil": May,
	} {
		if got := m.Lookup(domain).Level; got != want {
			t.Errorf("Lookup(%s) = %s, want %s", domain, got, want)
		}
	}
	if _, err := NewMap(conf.TLSUnset, nil); err == nil {
		t.Error("unset default level accepted")
	}
	if _, err := NewMap(May, []conf.TLSPolicy{{Domain: "x.example"}}); err == nil {
		t.Error("entry without a level accepted")
	}
}

func TestLevels(t *testing.T) {
	for _, c := range []struct {
		l   Level
		req bool
	}{{None, false}, {May, false}, {Dane, false}, {Encrypt, true}, {DaneOnly, true}, {Fingerprint, true}, {Verify, true}, {Secure, true}} {
		if c.l.RequiresTLS() != c.req {
			t.Errorf("%s.RequiresTLS() = %v", c.l, !c.req)
		}
	}
	a, b := Policy{Level: May, Source: "a"}, Policy{Level: Verify, Source: "b"}
	if Stronger(a, b).Source != "b" || Stronger(b, a).Source != "b" || Stronger(a, Policy{Level: May, Source: "c"}).Source != "a" {
		t.Error("Stronger")
	}
	// A policy whose level was never set is not "none": it wins.
	unset := Policy{Source: "unset"}
	if Stronger(unset, Policy{Level: Secure}).Source != "unset" || Stronger(Policy{Level: May}, unset).Source != "unset" {
		t.Error("Stronger lets a real level outrank an unset one")
	}
}

func TestMatchNames(t *testing.T) {
	for _, c := range []struct {
		p    Policy
		want []string
	}{
		{Policy{Level: Verify}, []string{"mx.hoster.test"}},
		{Policy{Level: Secure}, []string{"dest.test", ".dest.test"}},
		{Policy{Level: Secure, Match: []string{"nexthop", "Mail.Example"}}, []string{"dest.test", "mail.example"}},
		{Policy{Level: Verify, Match: []string{"hostname", "dot-nexthop"}}, []string{"mx.hoster.test", ".dest.test"}},
	} {
		if got := c.p.MatchNames("dest.test", "MX.hoster.test."); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%+v: %v, want %v", c.p, got, c.want)
		}
	}
}

func TestCertChecks(t *testing.T) {
	root, err := ca.New("t")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := root.Issue("mx.dest.test", "*.wild.test")
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	for names, want := range map[string]bool{
		"mx.dest.test": true, ".dest.test": true, "dest.test": false, "a.wild.test": true, ".wild.test": true,
		"other.test": false, ".test": true,
	} {
		if got := CertMatchesName(leaf, []string{names}); got != want {
			t.Errorf("CertMatchesName(%s) = %v", names, got)
		}
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	whole := sha256.Sum256(leaf.Raw)
	wrong := sha256.Sum256([]byte("x"))
	if !FingerprintMatches(leaf, [][]byte{wrong[:], spki[:]}) || !FingerprintMatches(leaf, [][]byte{whole[:]}) || FingerprintMatches(leaf, [][]byte{wrong[:]}) {
		t.Error("FingerprintMatches")
	}
}
