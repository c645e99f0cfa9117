package daemon_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	phdkim "github.com/posthorn/posthorn/mta/internal/dkim"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// TestOutboundDKIM: mail from a domain with keys leaves signed with both
// RSA and Ed25519, and the signatures verify at the receiving end.
func TestOutboundDKIM(t *testing.T) {
	dir := shortTempDir(t)
	var keys strings.Builder
	records := map[string]string{}
	for _, k := range []struct{ alg, sel string }{{"rsa", "r2026"}, {"ed25519", "e2026"}} {
		signer, pemBytes, err := phdkim.Generate(k.alg)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, k.sel+".key")
		os.WriteFile(file, pemBytes, 0o600)
		rec, _ := phdkim.DNSRecord(signer)
		records[phdkim.RecordName(k.sel, "example.test")] = rec
		fmt.Fprintf(&keys, "[[dkim.key]]\ndomain = \"example.test\"\nselector = %q\nfile = %q\n", k.sel, file)
	}
	e, m := remoteEnv(t, remotemta.Config{}, keys.String())
	c := e.login()
	msg := "From: Alice <alice@example.test>\r\nTo: friend@remote.test\r\nSubject: signed\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <dkim@example.test>\r\n\r\nsigned body\r\n"
	if err := send(c, testUser, []string{"friend@remote.test"}, msg); err != nil {
		t.Fatal(err)
	}
	got, err := m.WaitMessages(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(got[0].Data), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if r, ok := records[strings.TrimSuffix(name, ".")]; ok {
				return []string{r}, nil
			}
			return nil, fmt.Errorf("no record for %s", name)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 {
		t.Fatalf("%d signatures, want 2 (RSA and Ed25519):\n%s", len(vs), got[0].Data)
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != "example.test" {
			t.Errorf("signature %+v", v)
		}
	}
}

// TestInboundAuthenticationResults: SPF, DKIM and DMARC are checked on the
// MX listener against the (testbed) DNS; the result is recorded in an
// Authentication-Results header, a forged one claiming our authserv-id is
// removed, and with dmarc_enforce a p=reject failure is refused.
func TestInboundAuthenticationResults(t *testing.T) {
	dns, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	// The harness trusts no client network: 127.0.0.1 is a stranger here.
	e2 := startEnvConfig(t, func(s string) string {
		return strings.Replace(s, "[authres]\nenabled = false", "", 1) + fmt.Sprintf(`
[dns]
resolver = %q
[authres]
enabled = true
dmarc_enforce = true
timeout = "5s"
`, dns.Addr())
	})
	z := dns.Zone("sender.test", 0)
	z.TXT("sender.test.", "v=spf1 ip4:127.0.0.1 -all")
	z.TXT("_dmarc.sender.test.", "v=DMARC1; p=reject")
	z2 := dns.Zone("spoofed.test", 0)
	z2.TXT("spoofed.test.", "v=spf1 ip4:192.0.2.1 -all")
	z2.TXT("_dmarc.spoofed.test.", "v=DMARC1; p=reject")

	c := e2.dial(smtpd.MX)
	msg := "Authentication-Results: mx.example.test; dkim=pass header.d=forged.test\r\nFrom: a@sender.test\r\nSubject: x\r\n\r\nbody\r\n"
	if err := send(c, "a@sender.test", []string{"bob@example.test"}, msg); err != nil {
		t.Fatal(err)
	}
	got := e2.waitMail("example.test", "bob", 1, 10*time.Second)[0]
	if !strings.Contains(got, "Authentication-Results: mx.example.test;") || !strings.Contains(got, "spf=pass") || !strings.Contains(got, "dmarc=pass") {
		t.Errorf("no or wrong Authentication-Results:\n%s", got)
	}
	if strings.Contains(got, "forged.test") {
		t.Errorf("forged Authentication-Results kept:\n%s", got)
	}
	// A spoofed From with p=reject is refused at the end of DATA.
	err = send(c, "a@spoofed.test", []string{"bob@example.test"}, "From: a@spoofed.test\r\nSubject: x\r\n\r\nbody\r\n")
	if codeOf(err) != 550 || !strings.Contains(err.Error(), "DMARC") {
		t.Fatalf("want 550 DMARC rejection, got %v", err)
	}
}
