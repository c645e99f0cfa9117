package mtasts

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePolicyModes(t *testing.T) {
	for _, tc := range []struct {
		text string
		mode Mode
		mx   []string
		age  time.Duration
	}{
		{"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmx: *.Example.NET\r\nmax_age: 86400\r\n",
			Enforce, []string{"mx1.example.org", "*.example.net"}, 86400 * time.Second},
		{"version: STSv1\nmode: testing\nmx: mx.example.org\nmax_age: 604800\n", Testing, []string{"mx.example.org"}, 604800 * time.Second},
		{"version: STSv1\nmode: none\nmax_age: 0", None, nil, 0},
		{"version: STSv1\nmode: none\nmx: mx.example.org\nmax_age: 31557600", None, []string{"mx.example.org"}, MaxMaxAge * time.Second},
		// Field order is free, whitespace after ":" and at the line end is
		// not part of the value, empty lines are tolerated.
		{"max_age:\t600  \r\n\r\nmx:mx.example.org.\nmode:   enforce\nversion: STSv1\n\n", Enforce, []string{"mx.example.org"}, 600 * time.Second},
		// Unknown keys are ignored; repeated keys: the first counts.
		{"version: STSv1\nmode: testing\nmode: enforce\nx-ext.1: any value here\nmx: a.example.org\nmax_age: 60\nmax_age: 99999999999",
			Testing, []string{"a.example.org"}, 60 * time.Second},
		{"version: STSv1\nversion: STSv2\nmode: enforce\nmx: a.example.org\nmax_age: 0000000060", Enforce, []string{"a.example.org"}, 60 * time.Second},
	} {
		p, err := ParsePolicy([]byte(tc.text))
		if err != nil {
			t.Errorf("%q: %v", tc.text, err)
			continue
		}
		if p.Mode != tc.mode || !reflect.DeepEqual(p.MX, tc.mx) || p.MaxAge != tc.age || p.Version != "STSv1" || p.Text != tc.text {
			t.Errorf("%q: got %+v", tc.text, p)
		}
	}
}

func TestParsePolicyBad(t *testing.T) {
	good := "version: STSv1\nmode: enforce\nmx: mx.example.org\nmax_age: 86400\n"
	for _, tc := range []struct{ name, text string }{
		{"empty", ""},
		{"blank lines", "\n\r\n\n"},
		{"no version", "mode: enforce\nmx: mx.example.org\nmax_age: 86400\n"},
		{"wrong version", strings.Replace(good, "STSv1", "STSv2", 1)},
		{"version lower case", strings.Replace(good, "STSv1", "stsv1", 1)},
		{"no mode", "version: STSv1\nmx: mx.example.org\nmax_age: 86400\n"},
		{"bad mode", strings.Replace(good, "enforce", "Enforce", 1)},
		{"no max_age", "version: STSv1\nmode: enforce\nmx: mx.example.org\n"},
		{"max_age too big", strings.Replace(good, "86400", "31557601", 1)},
		{"max_age 11 digits", strings.Replace(good, "86400", "00000086400", 1)},
		{"max_age negative", strings.Replace(good, "86400", "-1", 1)},
		{"max_age float", strings.Replace(good, "86400", "1.5", 1)},
		{"max_age empty", strings.Replace(good, "86400", "", 1)},
		{"no mx in enforce", "version: STSv1\nmode: enforce\nmax_age: 86400\n"},
		{"no mx in testing", "version: STSv1\nmode: testing\nmax_age: 86400\n"},
		{"bad mx", strings.Replace(good, "mx.example.org", "mx..example.org", 1)},
		{"mx with space", strings.Replace(good, "mx.example.org", "mx example.org", 1)},
		{"mx single label", strings.Replace(good, "mx.example.org", "localhost", 1)},
		{"mx wildcard over TLD", strings.Replace(good, "mx.example.org", "*.org", 1)},
		{"mx wildcard in middle", strings.Replace(good, "mx.example.org", "mx.*.example.org", 1)},
		{"mx bare wildcard", strings.Replace(good, "mx.example.org", "*", 1)},
		{"mx leading hyphen", strings.Replace(good, "mx.example.org", "-mx.example.org", 1)},
		{"mx label too long", strings.Replace(good, "mx.example.org", strings.Repeat("a", 64)+".example.org", 1)},
		{"no colon", good + "garbage line\n"},
		{"space before colon", strings.Replace(good, "mode:", "mode :", 1)},
		{"leading space", " " + good},
		{"bad key", good + "ke?y: value\n"},
		{"key too long", good + strings.Repeat("k", 33) + ": v\n"},
		{"empty value", good + "x-ext:\n"},
		{"control char", good + "x-ext: a\x01b\n"},
		{"bare CR", strings.Replace(good, "\n", "\r", 1)},
		{"invalid utf-8", good + "x-ext: \xff\n"},
		{"html", "<html><body>Not found</body></html>"},
		{"json", `{"version":"STSv1","mode":"enforce"}`},
	} {
		if p, err := ParsePolicy([]byte(tc.text)); err == nil {
			t.Errorf("%s: accepted: %+v", tc.name, p)
		} else {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Error() == "" {
				t.Errorf("%s: error %T %v", tc.name, err, err)
			}
		}
	}
}

func TestMatches(t *testing.T) {
	p := &Policy{MX: []string{"mx1.example.org", "*.mail.example.net", "*.example.com"}}
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"mx1.example.org", true},
		{"MX1.Example.ORG.", true},
		{"mx2.example.org", false},
		{"example.org", false},
		{"a.mx1.example.org", false},
		{"x.mail.example.net", true},
		{"X.MAIL.example.net.", true},
		{"mail.example.net", false},
		{"y.x.mail.example.net", false},
		{".mail.example.net", false},
		{"*.mail.example.net", true}, // a literal "*" label is one label
		{"mail.example.com", true},
		{"example.com", false},
		{"a.b.example.com", false},
		{"mail.example.com.evil.org", false},
		{"", false},
		{".", false},
	} {
		if got := p.Matches(tc.host); got != tc.ok {
			t.Errorf("Matches(%q) = %v", tc.host, got)
		}
	}
	if (&Policy{}).Matches("mx.example.org") {
		t.Error("empty policy matched")
	}
}

func TestParseTXT(t *testing.T) {
	for _, tc := range []struct {
		recs []string
		id   string
		err  error // nil: any error
	}{
		{[]string{"v=STSv1; id=20160831085700Z;"}, "20160831085700Z", nil},
		{[]string{"v=STSv1;id=abc"}, "abc", nil},
		{[]string{"v=STSv1 ; id=abc ; "}, "abc", nil},
		{[]string{"v=spf1 -all", "v=STSv1; id=1"}, "1", nil},
		{[]string{"v=STSv1; ext=x; id=2; id=3"}, "2", nil},
		{[]string{"v=STSv1; id=" + strings.Repeat("a", 32)}, strings.Repeat("a", 32), nil},
		{nil, "", ErrNoRecord},
		{[]string{"v=spf1 -all"}, "", ErrNoRecord},
		{[]string{"V=STSv1; id=1"}, "", ErrNoRecord},
		{[]string{"v=STSv10; id=1"}, "", ErrNoRecord},
		{[]string{"v=STSv1; id=1", "v=STSv1; id=2"}, "", nil},
		{[]string{"v=STSv1"}, "", nil},
		{[]string{"v=STSv1;"}, "", nil},
		{[]string{"v=STSv1; id="}, "", nil},
		{[]string{"v=STSv1; id=a-b"}, "", nil},
		{[]string{"v=STSv1; id=" + strings.Repeat("a", 33)}, "", nil},
		{[]string{"v=STSv1;; id=1"}, "", nil},
		{[]string{"v=STSv1; id=1;;"}, "", nil},
		{[]string{"v=STSv1; id 1"}, "", nil},
		{[]string{"v=STSv1; ext=a b; id=1"}, "", nil},
		{[]string{"v=STSv1; ext=a=b; id=1"}, "", nil},
		{[]string{"v=STSv1; _x=1; id=1"}, "", nil},
	} {
		id, err := ParseTXT(tc.recs)
		if tc.id != "" {
			if err != nil || id != tc.id {
				t.Errorf("%q: id %q err %v", tc.recs, id, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%q: accepted, id %q", tc.recs, id)
		} else if tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("%q: err %v, want %v", tc.recs, err, tc.err)
		}
	}
}

func TestStrings(t *testing.T) {
	p, err := ParsePolicy([]byte("mx: b.example.org\nmax_age: 60\nversion: STSv1\nmode: testing\nmx: *.example.net\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"version: STSv1", "mode: testing", "mx: b.example.org", "mx: *.example.net", "max_age: 60"}
	if got := p.Strings(); !reflect.DeepEqual(got, want) {
		t.Errorf("%q", got)
	}
}

// FuzzParsePolicy: the parser never panics, and what it accepts is
// consistent (valid mode, version, max_age in range, patterns that match
// a host built from them).
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("version: STSv1\r\nmode: enforce\r\nmx: mx.example.org\r\nmx: *.example.net\r\nmax_age: 86400\r\n"))
	f.Add([]byte("version: STSv1\nmode: none\nmax_age: 0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data)
		if err != nil {
			if p != nil {
				t.Fatal("policy with error")
			}
			return
		}
		if p.Version != "STSv1" || (p.Mode != Enforce && p.Mode != Testing && p.Mode != None) {
			t.Fatalf("bad policy %+v", p)
		}
		if p.MaxAge < 0 || p.MaxAge > MaxMaxAge*time.Second {
			t.Fatalf("max_age %v", p.MaxAge)
		}
		if p.Mode != None && len(p.MX) == 0 {
			t.Fatal("no mx")
		}
		for _, m := range p.MX {
			host := strings.Replace(m, "*", "x", 1)
			if !p.Matches(host) || !p.Matches(strings.ToUpper(host)+".") {
				t.Fatalf("pattern %q does not match %q", m, host)
			}
		}
		// Strings round-trips.
		q, err := ParsePolicy([]byte(strings.Join(p.Strings(), "\r\n")))
		if err != nil || q.Mode != p.Mode || q.MaxAge != p.MaxAge || !reflect.DeepEqual(q.MX, p.MX) {
			t.Fatalf("round trip: %v %+v", err, q)
		}
	})
}

// FuzzParseTXT: never panics; an accepted id is 1 to 32 alphanumerics.
func FuzzParseTXT(f *testing.F) {
	f.Add("v=STSv1; id=20160831085700Z;", "v=spf1 -all")
	f.Fuzz(func(t *testing.T, a, b string) {
		id, err := ParseTXT([]string{a, b})
		if err != nil {
			return
		}
		if id == "" || len(id) > 32 {
			t.Fatalf("id %q", id)
		}
		for i := 0; i < len(id); i++ {
			if !isAlnum(id[i]) {
				t.Fatalf("id %q", id)
			}
		}
	})
}
