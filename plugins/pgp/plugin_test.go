package pgp_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/plugins/pgp"
	"github.com/posthorn/posthorn/plugins/pgp/internal/gpgtest"
	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/plugintest"
	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/freeport"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pl")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, err = plugintest.BuildIn(dir, "./cmd/posthorn-pgp")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func cli(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var o, e bytes.Buffer
	code := pgp.RunCLI(args, strings.NewReader(stdin), &o, &e)
	return o.String(), e.String(), code
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	rcpt, err := pgpmail.Generate("rcpt@example.test", pgpmail.GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sender, err := pgpmail.Generate("sender@example.test", pgpmail.GenerateOptions{V6: true})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := pgpmail.Armor(rcpt, false)
	sec, _ := pgpmail.Armor(sender, true)
	plugintest.Run(t, bin, plugintest.Options{
		Config: map[string]any{
			"discovery": []string{"local"},
			"key": []map[string]any{
				{"file": writeFile(t, dir, "rcpt.asc", pub)},
				{"file": writeFile(t, dir, "sender.asc", sec)},
			},
		},
	})
}

func TestBadConfig(t *testing.T) {
	for cfg, key := range map[string]string{
		`{"discovery":["dns"]}`:                   "discovery[0]",
		`{"cache_ttl":"soon"}`:                    "cache_ttl",
		`{"key":[{"file":"/nonexistent.asc"}]}`:   "key[0].file",
		`{"keyserver_protocol":"ldap"}`:           "keyserver_protocol",
		`{"publish":{"domains":["example.org"]}}`: "publish.listen",
		`{"ca_file":"/nonexistent.pem"}`:          "ca_file",
		`{"resolve":{"example.org":"127.0.0.1"}}`: "resolve.example.org",
		`{"sign":"yes"}`:                          "sign",
	} {
		err := (&pgp.Plugin{}).Configure(context.Background(), sdk.Config{JSON: json.RawMessage(cfg), DataDir: t.TempDir()})
		ce, ok := err.(*sdk.ConfigError)
		if !ok || ce.Key != key {
			t.Errorf("%s: %v, want a config error at %s", cfg, err, key)
		}
	}
}

func TestCLI(t *testing.T) {
	g := gpgtest.New(t)
	data := t.TempDir()
	out, errOut, code := cli(t, "", "keys", "generate", "alice@example.org", "--name", "Alice", "--data", data)
	if code != 0 || !strings.Contains(out, " own generated verified ") {
		t.Fatalf("generate: %d %s %s", code, out, errOut)
	}
	fpr := strings.Fields(out)[0]
	if _, _, code := cli(t, "", "keys", "generate", "gw@example.org", "--domain", "--v6", "--data", data); code != 0 {
		t.Fatal("generate --domain --v6")
	}
	// gpg reads what we export, and we read what gpg exports.
	pub, _, code := cli(t, "", "keys", "export", "alice@example.org", "--data", data)
	if code != 0 {
		t.Fatal("export")
	}
	_, st := g.Run([]byte(pub), "--import")
	if !strings.Contains(st, "imported: 1") {
		t.Errorf("gpg import: %s", st)
	}
	g.NewKey("Bob <bob@partner.test>")
	bobPub, _ := g.Run(nil, "--armor", "--export", "bob@partner.test")
	out, errOut, code = cli(t, bobPub, "keys", "import", "-", "--data", data)
	if code != 0 || !strings.Contains(out, " public imported verified ") || !strings.Contains(out, "bob@partner.test") {
		t.Fatalf("import: %d %s %s", code, out, errOut)
	}
	out, _, _ = cli(t, "", "keys", "list", "--data", data)
	if n := strings.Count(out, "\n"); n != 3 || !strings.Contains(out, "example.org,gw@example.org") {
		t.Errorf("list:\n%s", out)
	}
	out, _, _ = cli(t, "", "keys", "show", "bob@partner.test", "--data", data)
	if !strings.Contains(out, "uid Bob <bob@partner.test>") || !strings.Contains(out, "version 4") {
		t.Errorf("show:\n%s", out)
	}
	if _, e, code := cli(t, "", "keys", "export", "--secret", "bob@partner.test", "--data", data); code == 0 || !strings.Contains(e, "no secret key") {
		t.Errorf("export --secret of a public key: %d %s", code, e)
	}
	if _, e, code := cli(t, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbroken\n-----END PGP PUBLIC KEY BLOCK-----\n", "keys", "import", "-", "--data", data); code != 1 || !strings.Contains(e, "broken OpenPGP key") {
		t.Errorf("broken import: %d %s", code, e)
	}
	if _, _, code := cli(t, "", "keys", "remove", fpr, "--data", data); code != 0 {
		t.Error("remove")
	}
	if _, e, code := cli(t, "", "keys", "show", fpr, "--data", data); code != 1 || !strings.Contains(e, "not found") {
		t.Errorf("show removed: %d %s", code, e)
	}
	if _, _, code := cli(t, "", "keys", "list"); code != 2 {
		t.Error("no data dir accepted")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return freeport.Addr(t, "127.0.0.1")
}

func configure(t *testing.T, data string, cfg map[string]any) *pgp.Plugin {
	t.Helper()
	b, _ := json.Marshal(cfg)
	p := &pgp.Plugin{}
	if err := p.Configure(context.Background(), sdk.Config{JSON: b, DataDir: data}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Configure(context.Background(), sdk.Config{JSON: []byte(`{"discovery":["local"]}`), DataDir: t.TempDir()})
	})
	return p
}

// TestWKDEndToEnd: the partner's gateway publishes Bob's gpg-made key
// over WKD (HTTPS, testbed CA); ours finds it, encrypts and signs; gpg
// decrypts and verifies; the partner's gateway decrypts inbound.
func TestWKDEndToEnd(t *testing.T) {
	g := gpgtest.New(t)
	ctx := context.Background()
	c, err := ca.New("pgp test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Issue("openpgpkey.partner.test", "partner.test")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.WriteKeyPair(t.TempDir(), "wkd", cert)
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := c.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	// The partner: Bob's key made by gpg, imported as the partner's own key.
	g.NewKey("Bob <bob@partner.test>")
	bobSec, _ := g.Run(nil, "--armor", "--export-secret-keys", "bob@partner.test")
	partnerData := t.TempDir()
	if _, e, code := cli(t, bobSec, "keys", "import", "-", "--data", partnerData); code != 0 {
		t.Fatalf("import bob: %s", e)
	}
	wkdAddr := freeAddr(t)
	partner := configure(t, partnerData, map[string]any{
		"discovery": []string{"local"}, "internal_domains": []string{"partner.test"},
		"publish": map[string]any{"listen": wkdAddr, "cert_file": certFile, "key_file": keyFile},
	})

	// Us: Alice's own key; gpg knows its public part.
	ourData := t.TempDir()
	out, _, code := cli(t, "", "keys", "generate", "alice@example.org", "--name", "Alice", "--data", ourData)
	if code != 0 {
		t.Fatal("generate")
	}
	aliceFpr := strings.Fields(out)[0]
	alicePub, _, _ := cli(t, "", "keys", "export", "alice@example.org", "--data", ourData)
	g.Run([]byte(alicePub), "--import")
	us := configure(t, ourData, map[string]any{
		"discovery": []string{"local", "wkd", "autocrypt"}, "ca_file": caFile, "protect_headers": true,
		"resolve":          map[string]string{"openpgpkey.partner.test": wkdAddr, "partner.test": wkdAddr},
		"internal_domains": []string{"example.org"}, "lookup_timeout": "3s",
	})

	env := &sdk.Envelope{ID: "Q1", MailFrom: "alice@example.org", Recipients: []sdk.Recipient{{Address: "bob@partner.test"}, {Address: "nokey@partner.test"}}}
	ans, err := us.CanHandle(ctx, env, env.Recipients)
	if err != nil || len(ans) != 2 || !ans[0].CanHandle || ans[1].CanHandle || !strings.Contains(ans[0].Reason, "(wkd)") {
		t.Fatalf("CanHandle: %+v %v", ans, err)
	}
	msg := "From: Alice <alice@example.org>\r\nTo: bob@partner.test\r\nSubject: Vertraulich\r\nMessage-ID: <m1@example.org>\r\n\r\nDer Vertrag liegt bei.\r\n"
	res, err := us.Transform(ctx, env, env.Recipients[:1], strings.NewReader(msg))
	if err != nil || res.Action != sdk.OutboundTransformed || len(res.Outputs) != 1 {
		t.Fatalf("Transform: %+v %v", res, err)
	}
	enc, _ := io.ReadAll(res.Outputs[0].Body)
	if !bytes.HasPrefix(enc, []byte("Autocrypt: addr=alice@example.org; keydata=\r\n ")) {
		t.Errorf("no Autocrypt header:\n%.300s", enc)
	}
	if !bytes.Contains(enc, []byte("Subject: ...\r\n")) || bytes.Contains(enc, []byte("Vertraulich")) || bytes.Contains(enc, []byte("Vertrag")) {
		t.Errorf("encrypted message leaks:\n%s", enc)
	}
	// gpg (holding Bob's secret key) decrypts and verifies Alice's signature.
	i := bytes.Index(enc, []byte("-----BEGIN PGP MESSAGE-----"))
	j := bytes.Index(enc, []byte("-----END PGP MESSAGE-----"))
	plain, status := g.Run(enc[i:j+25], "--status-fd", "2", "--decrypt")
	if !strings.Contains(status, "DECRYPTION_OKAY") || !strings.Contains(status, "VALIDSIG "+aliceFpr) ||
		!strings.Contains(plain, "Der Vertrag liegt bei.") || !strings.Contains(plain, "Subject: Vertraulich") {
		t.Errorf("gpg:\n%s\n%s", status, plain)
	}
	// Already encrypted: passed on unchanged.
	res2, err := us.Transform(ctx, env, env.Recipients[:1], bytes.NewReader(enc))
	if err != nil {
		t.Fatal(err)
	}
	same, _ := io.ReadAll(res2.Outputs[0].Body)
	if !bytes.Equal(same, enc) {
		t.Error("an encrypted message was changed")
	}

	// Inbound at the partner: decrypted for Bob, forged result header
	// gone; Alice's key comes with the message (Autocrypt), so her
	// signature verifies.
	in := "X-Posthorn-PGP: decrypted; signature=valid\r\n" + string(enc)
	v, err := partner.Inspect(ctx, &sdk.Envelope{MailFrom: "alice@example.org", Recipients: []sdk.Recipient{{Address: "bob@partner.test"}}}, strings.NewReader(in))
	if err != nil || v.Action != sdk.ActionReplace {
		t.Fatalf("Inspect: %+v %v", v, err)
	}
	dec, _ := io.ReadAll(v.Replacement)
	if !bytes.HasPrefix(dec, []byte("X-Posthorn-PGP: decrypted; signature=valid; signer="+aliceFpr+"; key=unverified\r\n")) || bytes.Count(dec, []byte("X-Posthorn-PGP")) != 1 ||
		!bytes.Contains(dec, []byte("Subject: Vertraulich\r\n")) || !bytes.Contains(dec, []byte("Der Vertrag liegt bei.")) {
		t.Errorf("decrypted inbound:\n%s", dec)
	}

	// Autocrypt: Carol's key is harvested (unverified) and then used.
	carol, _ := pgpmail.Generate("carol@other.test", pgpmail.GenerateOptions{})
	carolBin, _ := pgpmail.Binary(carol)
	ac := "From: carol@other.test\r\nAutocrypt: addr=carol@other.test; prefer-encrypt=mutual; keydata=" + base64.StdEncoding.EncodeToString(carolBin) + "\r\nSubject: hi\r\n\r\nhi\r\n"
	v, err = us.Inspect(ctx, &sdk.Envelope{MailFrom: "carol@other.test", Recipients: []sdk.Recipient{{Address: "alice@example.org"}}}, strings.NewReader(ac))
	if err != nil || v.Action != sdk.ActionAccept {
		t.Fatalf("Inspect autocrypt: %+v %v", v, err)
	}
	ans, _ = us.CanHandle(ctx, env, []sdk.Recipient{{Address: "carol@other.test"}})
	if !ans[0].CanHandle || !strings.Contains(ans[0].Reason, "autocrypt") || !strings.Contains(ans[0].Reason, "unverified") {
		t.Errorf("harvested key: %+v", ans)
	}

	// The operator's discover command finds Bob's key the same way.
	out, e, code := cli(t, "", "keys", "discover", "Bob@partner.test", "--order", "wkd", "--ca-file", caFile,
		"--resolve", "openpgpkey.partner.test="+wkdAddr, "--data", t.TempDir())
	if code != 0 || !strings.Contains(out, " public wkd verified ") || !strings.Contains(out, "bob@partner.test") {
		t.Errorf("discover: %d %s %s", code, out, e)
	}
	if _, e, code := cli(t, "", "keys", "discover", "nobody@partner.test", "--order", "wkd", "--ca-file", caFile,
		"--resolve", "openpgpkey.partner.test="+wkdAddr, "--resolve", "partner.test="+wkdAddr, "--data", t.TempDir()); code != 1 || !strings.Contains(e, "no key published") {
		t.Errorf("discover nobody: %d %s", code, e)
	}

	// The lookup page and WKD of the partner serve Bob's key.
	hc := newHTTPClient(c, wkdAddr)
	resp, err := hc.Get("https://partner.test/?email=bob@partner.test")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(page, []byte("BEGIN PGP PUBLIC KEY BLOCK")) || bytes.Contains(page, []byte("PRIVATE")) {
		t.Errorf("lookup page:\n%s", page)
	}
}
