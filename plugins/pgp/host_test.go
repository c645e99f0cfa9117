package pgp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/posthorn/posthorn/plugins/pgp/internal/gpgtest"
	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
	"github.com/posthorn/posthorn/sdk/plugintest"
)

// TestThroughHost runs the built binary under the MTA's plugin host: the
// organisation's key from a [[plugin.config.key]] file, gpg's key
// imported with the CLI; outbound to gpg, inbound from gpg.
func TestThroughHost(t *testing.T) {
	g := gpgtest.New(t)
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "pgp")
	// Our domain key, exported to a file the config names.
	genDir := t.TempDir()
	out, e, code := cli(t, "", "keys", "generate", "gateway@example.org", "--domain", "--data", genDir)
	if code != 0 {
		t.Fatal(e)
	}
	fpr := strings.Fields(out)[0]
	sec, e, code := cli(t, "", "keys", "export", "--secret", fpr, "--data", genDir)
	if code != 0 {
		t.Fatal(e)
	}
	pub, _, _ := cli(t, "", "keys", "export", fpr, "--data", genDir)
	g.Run([]byte(pub), "--import")
	keyFile := writeFile(t, t.TempDir(), "org.asc", []byte(sec))

	g.NewKey("Dora <dora@partner.test>")
	doraPub, _ := g.Run(nil, "--armor", "--export", "dora@partner.test")
	if _, e, code := cli(t, doraPub, "keys", "import", "-", "--data", data); code != 0 {
		t.Fatal(e)
	}

	finn, _ := pgpmail.Generate("finn@partner.test", pgpmail.GenerateOptions{V6: true})
	finnPub, _ := pgpmail.Armor(finn, false)
	if _, e, code := cli(t, string(finnPub), "keys", "import", "-", "--data", data); code != 0 {
		t.Fatal(e)
	}

	h := plugintest.Start(t, bin, hostside.Options{Name: "pgp", Logger: plugintest.TestLogger(t, slog.LevelWarn)})
	cfg, err := json.Marshal(map[string]any{
		"discovery":        []any{"local"},
		"internal_domains": []any{"example.org"},
		"key":              []any{map[string]any{"file": keyFile, "addresses": []any{"example.org"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Configure(ctx, cfg, data, &plugintest.RecordingHost{}); err != nil {
		t.Fatal(err)
	}

	// Outbound: anyone at example.org signs with the domain key.
	env := &sdk.Envelope{ID: "Q7", MailFrom: "erik@example.org", Recipients: []sdk.Recipient{{Address: "dora@partner.test"}}}
	ans, err := h.CanHandle(ctx, env, env.Recipients)
	if err != nil || len(ans) != 1 || !ans[0].CanHandle {
		t.Fatalf("CanHandle: %+v %v", ans, err)
	}
	res, err := h.Transform(ctx, env, env.Recipients, strings.NewReader("From: erik@example.org\r\nTo: dora@partner.test\r\nSubject: Angebot\r\n\r\nAnbei das Angebot.\r\n"))
	if err != nil || res.Action != sdk.OutboundTransformed {
		t.Fatalf("Transform: %+v %v", res, err)
	}
	o, err := res.Next()
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := io.ReadAll(o.Body)
	res.Close()
	i, j := bytes.Index(enc, []byte("-----BEGIN PGP MESSAGE-----")), bytes.Index(enc, []byte("-----END PGP MESSAGE-----"))
	if i < 0 || j < 0 {
		t.Fatalf("no PGP message:\n%s", enc)
	}
	plain, status := g.Run(enc[i:j+25], "--status-fd", "2", "--decrypt")
	if !strings.Contains(status, "VALIDSIG "+fpr) || !strings.Contains(plain, "Anbei das Angebot.") {
		t.Errorf("gpg:\n%s\n%s", status, plain)
	}

	// Two recipients: a message each, so neither sees the other's key.
	two := []sdk.Recipient{{Address: "dora@partner.test"}, {Address: "finn@partner.test"}}
	res, err = h.Transform(ctx, env, two, strings.NewReader("From: erik@example.org\r\nTo: dora@partner.test\r\nBcc: finn@partner.test\r\nSubject: x\r\n\r\nHallo beide.\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	for {
		o, err := res.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(o.Body)
		if err != nil || len(o.Recipients) != 1 || o.Recipients[0] != two[len(bodies)].Address {
			t.Fatalf("output %d: %v %v", len(bodies), o.Recipients, err)
		}
		bodies = append(bodies, b)
	}
	res.Close()
	if len(bodies) != 2 {
		t.Fatalf("%d outputs", len(bodies))
	}
	armOf := func(b []byte) []byte {
		return b[bytes.Index(b, []byte("-----BEGIN PGP MESSAGE-----")) : bytes.Index(b, []byte("-----END PGP MESSAGE-----"))+25]
	}
	if plain, _ := g.Run(armOf(bodies[0]), "--decrypt"); !strings.Contains(plain, "Hallo beide.") {
		t.Errorf("dora's copy: %s", plain)
	}
	if _, e, err := g.Try(armOf(bodies[1]), "--decrypt"); err == nil || !strings.Contains(e, "No secret key") {
		t.Errorf("finn's copy is readable with dora's key: %v %s", err, e)
	}
	if r, err := pgpmail.Decrypt(bodies[1], openpgp.EntityList{finn}, time.Time{}); err != nil || !r.Decrypted || r.Signature != pgpmail.SigUnknownKey {
		t.Errorf("finn (v6): %+v %v", r, err)
	}

	// Inbound: gpg encrypts and signs to the domain key.
	inner := "Content-Type: text/plain; charset=us-ascii\r\n\r\nDanke, angenommen.\r\n"
	armored, _ := g.Run([]byte(inner), "--armor", "--encrypt", "--sign", "--local-user", "dora@partner.test", "--recipient", fpr)
	msg := "From: dora@partner.test\r\nTo: erik@example.org\r\nSubject: Re: Angebot\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"zz\"\r\n\r\n--zz\r\n" +
		"Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--zz\r\nContent-Type: application/octet-stream\r\n\r\n" + armored + "\r\n--zz--\r\n"
	v, repl, err := h.Inspect(ctx, &sdk.Envelope{MailFrom: "dora@partner.test", Recipients: []sdk.Recipient{{Address: "erik@example.org"}}}, strings.NewReader(msg))
	if err != nil || v.Action != sdk.ActionReplace || repl == nil {
		t.Fatalf("Inspect: %+v %v", v, err)
	}
	dec, _ := io.ReadAll(repl)
	repl.Close()
	if !bytes.Contains(dec, []byte("X-Posthorn-PGP: decrypted; signature=valid; signer=")) || !bytes.Contains(dec, []byte("Danke, angenommen.")) ||
		!bytes.Contains(dec, []byte("Subject: Re: Angebot")) {
		t.Errorf("decrypted:\n%s", dec)
	}
}
