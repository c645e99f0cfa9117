package envaddr

import "testing"

func TestFormat(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"a@example.org", "a@example.org"},
		{"first.last+tag@example.org", "first.last+tag@example.org"},
		{"a> AUTH=<postmaster@example.org> ENVID=x@attacker.example", `"a> AUTH=<postmaster@example.org> ENVID=x"@attacker.example`},
		{`a"b\c@example.org`, `"a\"b\\c"@example.org`},
		{".a@example.org", `".a"@example.org`},
		{"a..b@example.org", `"a..b"@example.org`},
		{"a@b@example.org", `"a@b"@example.org`},
		{"pöst@exämple.org", "pöst@exämple.org"},
		{"x@[192.0.2.1]", "x@[192.0.2.1]"},
	} {
		got, err := Format(c.in)
		if err != nil || got != c.want {
			t.Errorf("Format(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		in   string
		utf8 bool
		want error
	}{
		{"a@example.org", false, nil},
		{"", false, nil},
		{"a\x01b@example.org", true, ErrSyntax},
		{"a\x7f@example.org", true, ErrSyntax},
		{"@example.org", true, ErrSyntax},
		{"postmaster", true, ErrSyntax},
		{"a@", true, ErrSyntax},
		{"a@exa\"mple.org", true, ErrSyntax},
		{"a@example..org", true, ErrSyntax},
		{"a@[1.2.3.4", true, ErrSyntax},
		{"pöst@example.org", false, ErrNeedUTF8},
		{"pöst@example.org", true, nil},
		{"a@ex<ample.org", true, ErrSyntax},
	} {
		if got := Check(c.in, c.utf8); got != c.want {
			t.Errorf("Check(%q, %v) = %v; want %v", c.in, c.utf8, got, c.want)
		}
	}
}
