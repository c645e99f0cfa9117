package authres

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	msgauthres "github.com/emersion/go-msgauth/authres"
	"github.com/miekg/dns"
	"github.com/posthorn/posthorn/mta/internal/dkim"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/testbed/dnsserver"
)

type bed struct {
	srv     *dnsserver.Server
	checker *Checker
	signer  *dkim.Signer // keys for example.org and other.example
}

func setup(t *testing.T) *bed {
	t.Helper()
	srv, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	var keys []*dkim.Key
	addKey := func(z *dnsserver.Zone, domain, selector, alg string) {
		k, _, err := dkim.Generate(alg)
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := dkim.DNSRecord(k)
		key := &dkim.Key{Domain: domain, Selector: selector, Signer: k}
		z.TXT(key.RecordName(), dkim.TXTStrings(rec)...)
		keys = append(keys, key)
	}

	org := srv.Zone("example.org", dnsserver.Secure).
		TXT("@", "v=spf1 ip4:192.0.2.0/24 -all").
		TXT("mail", "v=spf1 ip4:198.51.100.0/24 -all").
		TXT("_dmarc", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@example.org")
	addKey(org, "example.org", "ed", "ed25519")
	addKey(org, "example.org", "rsa", "rsa")
	srv.Zone("strict.example", dnsserver.Insecure).
		TXT("@", "v=spf1 ip4:192.0.2.0/24 -all").
		TXT("bounce", "v=spf1 ip4:192.0.2.0/24 -all").
		TXT("_dmarc", "v=DMARC1; p=reject; aspf=s; adkim=s")
	srv.Zone("lax.example", dnsserver.Insecure).
		TXT("@", "v=spf1 ip4:192.0.2.0/24 ~all").
		TXT("_dmarc", "v=DMARC1; p=none")
	srv.Zone("sampled.example", dnsserver.Insecure).
		TXT("@", "v=spf1 -all").
		TXT("_dmarc", "v=DMARC1; p=reject; pct=0")
	srv.Zone("neutral.example", dnsserver.Insecure).TXT("@", "v=spf1 ?all")
	other := srv.Zone("other.example", dnsserver.Insecure).TXT("@", "v=spf1 -all")
	addKey(other, "other.example", "s", "ed25519")
	srv.Zone("broken.example", dnsserver.Insecure).
		TXT("@", "v=spf1 ip4:192.0.2.0/24 -all").
		TXT("_dmarc", "v=DMARC1; p=reject; adkim=x")

	res, err := resolver.New(resolver.Options{Server: srv.Addr(), Timeout: 500 * time.Millisecond, TrustAD: true})
	if err != nil {
		t.Fatal(err)
	}
	return &bed{srv: srv, checker: New(res, "mx.posthorn.test", Options{}), signer: dkim.NewSigner(keys)}
}

func message(from string) string {
	return "From: " + from + "\r\n" +
		"To: rcpt@posthorn.test\r\n" +
		"Subject: test\r\n" +
		"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
		"Message-ID: <x@example.org>\r\n" +
		"\r\n" +
		"Body line one.\r\n" +
		"Body line two.\r\n"
}

func (b *bed) signed(t *testing.T, signingDomain, msg string) string {
	t.Helper()
	var out bytes.Buffer
	if err := b.signer.Sign(signingDomain, strings.NewReader(msg), &out); err != nil {
		t.Fatal(err)
	}
	if out.String() == msg {
		t.Fatalf("no key for %s", signingDomain)
	}
	return out.String()
}

func (b *bed) check(t *testing.T, ip, helo, mailFrom, msg string) *Result {
	t.Helper()
	r, err := b.checker.Check(context.Background(), net.ParseIP(ip), helo, mailFrom, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	// The header always parses back to the same results.
	v := strings.TrimPrefix(r.Header, "Authentication-Results: ")
	if !strings.HasSuffix(v, "\r\n") || strings.Count(r.Header, "\r\n") < 3 {
		t.Fatalf("header not folded: %q", r.Header)
	}
	for _, l := range strings.Split(strings.TrimSuffix(r.Header, "\r\n"), "\r\n")[1:] {
		if !strings.HasPrefix(l, "\t") {
			t.Fatalf("continuation line without WSP: %q", l)
		}
	}
	id, results, err := msgauthres.Parse(strings.NewReplacer("\r\n", "").Replace(v))
	if err != nil {
		t.Fatalf("header %q does not parse: %v", r.Header, err)
	}
	if id != "mx.posthorn.test" {
		t.Errorf("authserv-id %q", id)
	}
	got := map[string]string{}
	for _, res := range results {
		switch res := res.(type) {
		case *msgauthres.SPFResult:
			got["spf"] = string(res.Value)
		case *msgauthres.DKIMResult:
			if _, ok := got["dkim"]; !ok || res.Value == "pass" {
				got["dkim"] = string(res.Value)
			}
		case *msgauthres.DMARCResult:
			got["dmarc"] = string(res.Value)
			if r.FromDomain != "" && res.From != r.FromDomain {
				t.Errorf("header.from %q", res.From)
			}
		}
	}
	if got["spf"] != r.SPF || got["dmarc"] != r.DMARC || (r.DKIM != "none" && got["dkim"] != r.DKIM) {
		t.Errorf("header %q says %v, result %+v", r.Header, got, r)
	}
	return r
}

func TestSPF(t *testing.T) {
	b := setup(t)
	for _, c := range []struct {
		ip, helo, mailFrom, want string
	}{
		{"192.0.2.10", "mx.example.org", "alice@example.org", Pass},
		{"203.0.113.5", "mx.example.org", "alice@example.org", Fail},
		{"203.0.113.5", "mx.lax.example", "alice@lax.example", SoftFail},
		{"203.0.113.5", "x", "alice@neutral.example", Neutral},
		{"203.0.113.5", "x", "alice@nospf.example.org", None},
		{"192.0.2.10", "example.org", "", Pass}, // null sender: HELO
		{"203.0.113.5", "example.org", "", Fail},
	} {
		r := b.check(t, c.ip, c.helo, c.mailFrom, message("a@example.org"))
		if r.SPF != c.want {
			t.Errorf("SPF %s %s: %s, want %s", c.ip, c.mailFrom, r.SPF, c.want)
		}
	}
	r := b.check(t, "192.0.2.10", "example.org", "", message("a@example.org"))
	if !strings.Contains(r.Header, "smtp.helo=example.org") || r.SPFDomain != "example.org" {
		t.Errorf("null sender header: %q", r.Header)
	}
	r = b.check(t, "192.0.2.10", "x", "bounce+x=y@Mail.Example.org", message("a@example.org"))
	if !strings.Contains(r.Header, "smtp.mailfrom=mail.example.org") {
		t.Errorf("mailfrom header: %q", r.Header)
	}
}

func TestDKIM(t *testing.T) {
	b := setup(t)
	msg := b.signed(t, "example.org", message("Alice <alice@example.org>"))
	r := b.check(t, "203.0.113.5", "x", "alice@example.org", msg)
	if r.DKIM != Pass || len(r.DKIMDomains) != 1 || r.DKIMDomains[0] != "example.org" {
		t.Fatalf("DKIM: %+v", r)
	}
	if strings.Count(r.Header, "dkim=pass header.d=example.org") != 2 {
		t.Errorf("dual signature not reported twice: %q", r.Header)
	}
	tampered := strings.Replace(msg, "Body line two.", "Body line 2.", 1)
	r = b.check(t, "203.0.113.5", "x", "alice@example.org", tampered)
	if r.DKIM != Fail || len(r.DKIMDomains) != 0 || !strings.Contains(r.Header, "dkim=fail reason=") {
		t.Fatalf("tampered: %+v", r)
	}
	r = b.check(t, "203.0.113.5", "x", "alice@example.org", message("alice@example.org"))
	if r.DKIM != None || !strings.Contains(r.Header, "dkim=none") {
		t.Fatalf("unsigned: %+v", r)
	}
	// Key record missing: permerror.
	b.srv.Zone("example.org", dnsserver.Secure).Remove("ed._domainkey", dns.TypeTXT).Remove("rsa._domainkey", dns.TypeTXT)
	r = b.check(t, "203.0.113.5", "x", "alice@example.org", msg)
	if r.DKIM != PermError {
		t.Fatalf("no key: %+v", r)
	}
}

func TestDMARC(t *testing.T) {
	b := setup(t)
	for _, c := range []struct {
		name               string
		ip, mailFrom, from string
		signWith           string
		dmarc, policy      string
		reject, quarantine bool
	}{
		{"spf aligned", "192.0.2.10", "a@example.org", "a@example.org", "", Pass, "reject", false, false},
		{"spf relaxed alignment", "198.51.100.7", "bounce@mail.example.org", "a@example.org", "", Pass, "reject", false, false},
		{"spf strict alignment", "192.0.2.10", "x@bounce.strict.example", "a@strict.example", "", Fail, "reject", true, false},
		{"spf pass unaligned", "192.0.2.10", "x@example.org", "a@other.example", "", None, "", false, false},
		{"dkim aligned", "203.0.113.5", "a@elsewhere.example", "a@example.org", "example.org", Pass, "reject", false, false},
		{"dkim relaxed", "203.0.113.5", "a@elsewhere.example", "a@news.example.org", "example.org", Pass, "quarantine", false, false},
		{"dkim unaligned", "203.0.113.5", "a@example.org", "a@example.org", "other.example", Fail, "reject", true, false},
		{"fail reject", "203.0.113.5", "a@example.org", "a@example.org", "", Fail, "reject", true, false},
		{"fail sp quarantine", "203.0.113.5", "a@example.org", "a@sub.example.org", "", Fail, "quarantine", false, true},
		{"fail p=none", "203.0.113.5", "a@lax.example", "a@lax.example", "", Fail, "none", false, false},
		{"pct=0", "203.0.113.5", "a@sampled.example", "a@sampled.example", "", Fail, "reject", false, true},
		{"no record", "203.0.113.5", "a@other.example", "a@other.example", "", None, "", false, false},
		{"bad record", "203.0.113.5", "a@broken.example", "a@broken.example", "", PermError, "", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := message(c.from)
			if c.signWith != "" {
				msg = b.signed(t, c.signWith, msg)
			}
			r := b.check(t, c.ip, "helo.test", c.mailFrom, msg)
			if r.DMARC != c.dmarc || r.DMARCPolicy != c.policy || r.Reject != c.reject || r.Quarantine != c.quarantine {
				t.Errorf("got dmarc=%s policy=%q reject=%v quarantine=%v (spf=%s dkim=%s)\n%s",
					r.DMARC, r.DMARCPolicy, r.Reject, r.Quarantine, r.SPF, r.DKIM, r.Header)
			}
			want := strings.ToLower(c.from[strings.IndexByte(c.from, '@')+1:])
			if r.FromDomain != want {
				t.Errorf("FromDomain %q", r.FromDomain)
			}
		})
	}
}

func TestTempError(t *testing.T) {
	b := setup(t)
	msg := b.signed(t, "example.org", message("a@example.org"))
	b.srv.Fail("example.org", dns.RcodeServerFailure, dns.TypeTXT)
	b.srv.Fail("_dmarc.example.org", dns.RcodeServerFailure)
	b.srv.Fail("ed._domainkey.example.org", dns.RcodeServerFailure)
	b.srv.Fail("rsa._domainkey.example.org", dns.RcodeServerFailure)
	r := b.check(t, "192.0.2.10", "x", "a@example.org", msg)
	if r.SPF != TempError || r.DKIM != TempError || r.DMARC != TempError || r.Reject {
		t.Fatalf("DNS failure: %+v", r)
	}
	// Only the DMARC record unavailable.
	b.srv.Clear("example.org")
	b.srv.Clear("ed._domainkey.example.org")
	b.srv.Clear("rsa._domainkey.example.org")
	r = b.check(t, "203.0.113.5", "x", "a@example.org", message("a@example.org"))
	if r.SPF != Fail || r.DMARC != TempError || r.Reject {
		t.Fatalf("DMARC record unavailable: %+v", r)
	}
	// SPF failing temporarily, DKIM not aligned: DMARC cannot fail.
	b.srv.Clear("_dmarc.example.org")
	b.srv.Drop("example.org", dns.TypeTXT)
	t0 := time.Now()
	r = b.check(t, "203.0.113.5", "x", "a@example.org", message("a@example.org"))
	if r.SPF != TempError || r.DMARC != TempError || r.Reject || time.Since(t0) > 3*time.Second {
		t.Fatalf("SPF timeout: %+v after %v", r, time.Since(t0))
	}
}

func TestFromHeader(t *testing.T) {
	b := setup(t)
	for _, c := range []struct {
		name, hdr, domain, dmarc string
	}{
		{"display name", "From: \"Alice, A.\" <Alice@Example.ORG>\r\n", "example.org", Fail},
		{"folded", "From: Alice\r\n <alice@example.org>\r\n", "example.org", Fail},
		{"encoded word", "From: =?utf-8?q?J=C3=B6rg?= <j@example.org>\r\n", "example.org", Fail},
		{"two addresses, one domain", "From: a@example.org, b@example.org\r\n", "example.org", Fail},
		{"two domains", "From: a@example.org, b@other.example\r\n", "", PermError},
		{"two fields", "From: a@example.org\r\nfrom: b@example.org\r\n", "", PermError},
		{"none", "Sender: a@example.org\r\n", "", PermError},
		{"garbage", "From: <<<@@@\r\n", "", PermError},
		{"no domain", "From: alice\r\n", "", PermError},
	} {
		msg := c.hdr + "Subject: x\r\n\r\nbody\r\n"
		r := b.check(t, "203.0.113.5", "x", "a@example.org", msg)
		if r.FromDomain != c.domain || r.DMARC != c.dmarc || r.Reject && c.dmarc != Fail {
			t.Errorf("%s: from=%q dmarc=%s reject=%v\n%s", c.name, r.FromDomain, r.DMARC, r.Reject, r.Header)
		}
	}
}

func TestLimitsAndHostileInput(t *testing.T) {
	b := setup(t)
	c := New(b.checker.res, "mx.posthorn.test", Options{MaxHeaderBytes: 1000})
	big := "From: a@example.org\r\nX-Junk: " + strings.Repeat("x", 2000) + "\r\n\r\nbody\r\n"
	if _, err := c.Check(context.Background(), net.ParseIP("192.0.2.1"), "x", "a@example.org", strings.NewReader(big)); !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("big header: %v", err)
	}
	// Hostile values cannot break the header.
	r := b.check(t, "192.0.2.10", "evil;\r\nX-Injected: 1", "a@ex\"ample.org;\r\nX: y", "From: a@example.org\r\n\r\n")
	if strings.Count(r.Header, "\r\n") != strings.Count(r.Header, "\r\n\t")+1 || strings.Contains(r.Header, "\r\nX") {
		t.Fatalf("header injection: %q", r.Header)
	}
	// Header without body, and an empty message.
	b.check(t, "192.0.2.10", "x", "a@example.org", "From: a@example.org\r\n")
	r = b.check(t, "192.0.2.10", "x", "a@example.org", "")
	if r.DMARC != PermError {
		t.Fatalf("empty message: %+v", r)
	}
	// A broken DKIM-Signature is a permerror, not a Check error.
	r = b.check(t, "192.0.2.10", "x", "a@example.org", "DKIM-Signature: v=1; a=rsa-sha256; garbage\r\nFrom: a@example.org\r\n\r\nbody\r\n")
	if r.DKIM != PermError || r.DMARC != Pass {
		t.Fatalf("broken signature: %+v", r)
	}
	// Nil IP: SPF permerror.
	r, err := b.checker.Check(context.Background(), nil, "x", "a@example.org", strings.NewReader(message("a@example.org")))
	if err != nil || r.SPF != PermError {
		t.Fatalf("nil IP: %+v %v", r, err)
	}
	if got := New(b.checker.res, "bad id; x", Options{}).authservID; got != "badidx" {
		t.Errorf("authserv-id sanitised to %q", got)
	}
}

func TestOrganizationalDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.org": "example.org", "a.b.example.org": "example.org", "mail.example.co.uk": "example.co.uk",
		"example.co.uk": "example.co.uk", "co.uk": "co.uk", "foo.bar.github.io": "bar.github.io",
		"x.y.test": "y.test", "Mail.Example.ORG.": "example.org",
	} {
		if got := OrganizationalDomain(in); got != want {
			t.Errorf("OrganizationalDomain(%q) = %q, want %q", in, got, want)
		}
	}
}
