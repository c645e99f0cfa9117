package pgp_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/posthorn/posthorn/plugins/pgp"
	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
	"github.com/posthorn/posthorn/sdk"
)

// TestUnusableKeys: expired and revoked keys are refused with a reason
// that names the problem; nothing panics.
func TestUnusableKeys(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	expired, err := pgpmail.Generate("old@partner.test", pgpmail.GenerateOptions{Lifetime: time.Hour, Now: time.Now().Add(-48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	revoked, _ := pgpmail.Generate("gone@partner.test", pgpmail.GenerateOptions{})
	if err := revoked.Revoke(packet.KeyCompromised, "lost laptop", nil); err != nil {
		t.Fatal(err)
	}
	a1, _ := pgpmail.Armor(expired, false)
	a2, _ := pgpmail.Armor(revoked, false)
	for _, a := range [][]byte{a1, a2} {
		if _, e, code := cli(t, string(a), "keys", "import", "-", "--data", data); code != 0 {
			t.Fatal(e)
		}
	}
	p := &pgp.Plugin{}
	if err := p.Configure(ctx, sdk.Config{JSON: []byte(`{"discovery":["local"]}`), DataDir: data}); err != nil {
		t.Fatal(err)
	}
	defer p.Configure(ctx, sdk.Config{JSON: []byte(`{}`), DataDir: t.TempDir()})
	ans, err := p.CanHandle(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "old@partner.test"}, {Address: "gone@partner.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if ans[0].CanHandle || !strings.Contains(ans[0].Reason, "expired") {
		t.Errorf("expired: %+v", ans[0])
	}
	if ans[1].CanHandle || !strings.Contains(ans[1].Reason, "revoked") {
		t.Errorf("revoked: %+v", ans[1])
	}
}

// TestPartnerDomainKey: a partner gateway's key imported for a bare
// domain serves every address there; a harvested key does not.
func TestPartnerDomainKey(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	gw, _ := pgpmail.Generate("gateway@partner.test", pgpmail.GenerateOptions{})
	arm, _ := pgpmail.Armor(gw, false)
	if _, e, code := cli(t, string(arm), "keys", "import", "-", "--address", "partner.test", "--data", data); code != 0 {
		t.Fatal(e)
	}
	p := &pgp.Plugin{}
	if err := p.Configure(ctx, sdk.Config{JSON: []byte(`{"discovery":["local"]}`), DataDir: data}); err != nil {
		t.Fatal(err)
	}
	defer p.Configure(ctx, sdk.Config{JSON: []byte(`{}`), DataDir: t.TempDir()})
	ans, err := p.CanHandle(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "anyone@partner.test"}, {Address: "x@sub.partner.test"}})
	if err != nil || !ans[0].CanHandle || !strings.Contains(ans[0].Reason, pgpmail.Fingerprint(gw)) || ans[1].CanHandle {
		t.Errorf("domain key: %+v %v", ans, err)
	}
}

func TestImportProtectedSecretKeyWarns(t *testing.T) {
	e, _ := pgpmail.Generate("locked@example.org", pgpmail.GenerateOptions{})
	if err := e.EncryptPrivateKeys([]byte("secret"), nil); err != nil {
		t.Fatal(err)
	}
	arm, err := pgpmail.Armor(e, true)
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cli(t, string(arm), "keys", "import", "-", "--data", t.TempDir())
	if code != 0 || !strings.Contains(out, " own ") || !strings.Contains(errOut, "passphrase") {
		t.Errorf("import: %d %q %q", code, out, errOut)
	}
}

func TestOutputOverHostLimit(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	k, _ := pgpmail.Generate("big@partner.test", pgpmail.GenerateOptions{})
	arm, _ := pgpmail.Armor(k, false)
	if _, e, code := cli(t, string(arm), "keys", "import", "-", "--data", data); code != 0 {
		t.Fatal(e)
	}
	p := &pgp.Plugin{}
	if err := p.Configure(ctx, sdk.Config{JSON: []byte(`{"discovery":["local"]}`), DataDir: data, MaxMessageSize: 300}); err != nil {
		t.Fatal(err)
	}
	defer p.Configure(ctx, sdk.Config{JSON: []byte(`{}`), DataDir: t.TempDir()})
	rc := []sdk.Recipient{{Address: "big@partner.test"}}
	_, err := p.Transform(ctx, &sdk.Envelope{MailFrom: "a@example.org"}, rc, strings.NewReader("Subject: x\r\n\r\nhello\r\n"))
	if !errors.Is(err, sdk.ErrMessageTooLarge) {
		t.Errorf("Transform: %v", err)
	}
}
