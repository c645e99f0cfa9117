package router

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/queue"
)

type users map[string]bool

func (u users) Exists(a string) bool { return u[a] }

func testRouter() *Router {
	cfg := &conf.Config{
		Local: conf.Local{MaildirRoot: "/m", RecipientDelimiter: "+", LMTP: ""},
		Domains: []conf.Domain{
			{Name: "Example.Test", Mailboxes: []string{"postmaster", "Bob"},
				Aliases: map[string][]string{"team": {"bob", "alice", "friend@remote.example"}, "loop1": {"loop2"}, "loop2": {"loop1"},
					"abuse": {"postmaster"}, "ghost": {"nobody"}}},
			{Name: "catch.test", CatchAll: "postmaster", Mailboxes: []string{"postmaster"}},
			{Name: "lmtp.test", Mailboxes: []string{"carol"}, LMTP: "tcp:127.0.0.1:24"},
		},
	}
	return New(cfg, users{"alice@example.test": true})
}

func TestCheck(t *testing.T) {
	r := testRouter()
	for addr, want := range map[string]error{
		"postmaster@example.test": nil,
		"BOB@EXAMPLE.TEST":        nil,
		"bob+lists@example.test":  nil,
		"alice@example.test":      nil, // from the password file
		"team@example.test":       nil,
		"nobody@example.test":     ErrNoSuchUser,
		"anything@catch.test":     nil,
		"someone@remote.example":  nil, // not ours: relay rules decide
		"carol@lmtp.test":         nil,
		"alice+x+y@example.test":  nil,
		"+only@example.test":      ErrNoSuchUser,
	} {
		if err := r.Check(addr); !errors.Is(err, want) {
			t.Errorf("Check(%s) = %v, want %v", addr, err, want)
		}
	}
}

func TestExpand(t *testing.T) {
	r := testRouter()
	got, err := r.Expand("team@example.test")
	if err != nil {
		t.Fatal(err)
	}
	want := []Destination{
		{Kind: Local, Addr: "bob@example.test", Mailbox: "bob@example.test", Maildir: filepath.Join("/m", "example.test", "bob")},
		{Kind: Local, Addr: "alice@example.test", Mailbox: "alice@example.test", Maildir: filepath.Join("/m", "example.test", "alice")},
		{Kind: Remote, Addr: "friend@remote.example"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Expand(team) =\n%+v\nwant\n%+v", got, want)
	}
	if _, err := r.Expand("ghost@example.test"); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("alias to an unknown mailbox: %v", err)
	}
	// A loop ends: each alias is expanded once, leaving nothing.
	if d, err := r.Expand("loop1@example.test"); err != nil || len(d) != 0 {
		t.Fatalf("loop: %v %v", d, err)
	}
	d, _ := r.Expand("bob+tag@example.test")
	if len(d) != 1 || d[0].Addr != "bob+tag@example.test" || d[0].Mailbox != "bob@example.test" {
		t.Fatalf("extension: %+v", d)
	}
	d, _ = r.Expand("x@catch.test")
	if len(d) != 1 || d[0].Mailbox != "postmaster@catch.test" {
		t.Fatalf("catch-all: %+v", d)
	}
	d, _ = r.Expand("carol@lmtp.test")
	if len(d) != 1 || d[0].LMTP != "tcp:127.0.0.1:24" {
		t.Fatalf("lmtp: %+v", d)
	}
}

func TestExpandRecipients(t *testing.T) {
	r := testRouter()
	in := []*queue.Recipient{
		{Addr: "team@example.test", Notify: []string{"SUCCESS"}},
		{Addr: "bob@example.test", ORcpt: "rfc822;bob@example.test"},
		{Addr: "abuse@example.test"},
	}
	out, err := r.ExpandRecipients(in)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range out {
		got = append(got, o.Addr+" "+o.ORcpt)
	}
	want := []string{"bob@example.test rfc822;team@example.test", "alice@example.test rfc822;team@example.test",
		"friend@remote.example rfc822;team@example.test", "postmaster@example.test rfc822;abuse@example.test"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if out[0].Notify[0] != "SUCCESS" {
		t.Fatal("NOTIFY not carried through expansion")
	}
}

func TestOwns(t *testing.T) {
	r := testRouter()
	for _, c := range []struct {
		user, addr string
		want       bool
	}{
		{"alice@example.test", "alice@example.test", true},
		{"alice@example.test", "Alice+news@Example.Test", true},
		{"alice@example.test", "team@example.test", true}, // alias reaching her
		{"alice@example.test", "bob@example.test", false},
		{"alice@example.test", "alice@remote.example", false},
		{"alice@example.test", "", false},
	} {
		if got, err := r.Owns(c.user, c.addr); got != c.want || err != nil {
			t.Errorf("Owns(%s, %s) = %v, %v", c.user, c.addr, got, err)
		}
	}
}

// TestSecureParent: SUB.DOMAIN of a local domain names its parent; the
// subdomain alone, another label, a partial label or a remote parent do
// not; the configured subdomain is matched in lower case.
func TestSecureParent(t *testing.T) {
	r := testRouter()
	r.cfg.SecureAlias.Subdomain = "Secure"
	for d, want := range map[string]string{
		"secure.example.test":    "example.test",
		"secure.catch.test":      "catch.test",
		"secure.remote.example":  "",
		"secure.":                "",
		"secure":                 "",
		"securex.example.test":   "",
		"insecure.example.test":  "",
		"example.test":           "",
		"sec.example.test":       "",
		"secure.secure.example":  "",
		"other.secure.example.t": "",
	} {
		if got := r.secureParent(d); got != want {
			t.Errorf("secureParent(%q) = %q, want %q", d, got, want)
		}
	}
	r.cfg.SecureAlias.Subdomain = ""
	if got := r.secureParent("secure.example.test"); got != "" {
		t.Errorf("without a subdomain: %q", got)
	}
}
