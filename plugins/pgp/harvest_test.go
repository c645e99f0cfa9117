package pgp_test

import (
	"context"
	"encoding/base64"
	"io"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/plugins/pgp"
	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
	"github.com/posthorn/posthorn/sdk"
)

func TestHarvestAttachedAndForged(t *testing.T) {
	ctx := context.Background()
	p := &pgp.Plugin{}
	if err := p.Configure(ctx, sdk.Config{JSON: []byte(`{"discovery":["local","autocrypt"]}`), DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	frank, _ := pgpmail.Generate("frank@other.test", pgpmail.GenerateOptions{V6: true})
	arm, _ := pgpmail.Armor(frank, false)
	other, _ := pgpmail.Generate("someone@else.test", pgpmail.GenerateOptions{})
	otherBin, _ := pgpmail.Binary(other)
	msg := "From: Frank <frank@other.test>\r\nSubject: my key\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n" +
		"--m\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" +
		"--m\r\nContent-Type: application/pgp-keys; name=\"frank.asc\"\r\n\r\n" + string(arm) + "\r\n" +
		"--m\r\nContent-Type: application/pgp-keys\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(otherBin) + "\r\n" +
		"--m--\r\n"
	env := &sdk.Envelope{MailFrom: "frank@other.test", Recipients: []sdk.Recipient{{Address: "x@example.org"}}}
	v, err := p.Inspect(ctx, env, strings.NewReader(msg))
	if err != nil || v.Action != sdk.ActionAccept {
		t.Fatalf("Inspect: %+v %v", v, err)
	}
	ans, _ := p.CanHandle(ctx, env, []sdk.Recipient{{Address: "frank@other.test"}, {Address: "someone@else.test"}})
	if !ans[0].CanHandle || !strings.Contains(ans[0].Reason, "(attached), unverified") || ans[1].CanHandle {
		t.Errorf("harvest: %+v", ans)
	}
	// A forged result header from outside is removed.
	v, err = p.Inspect(ctx, env, strings.NewReader("X-Posthorn-PGP: decrypted; signature=valid\r\nSubject: x\r\n\r\nhi\r\n"))
	if err != nil || v.Action != sdk.ActionReplace {
		t.Fatalf("forged: %+v %v", v, err)
	}
	buf := new(strings.Builder)
	if _, err := io.Copy(buf, v.Replacement); err != nil || strings.Contains(buf.String(), "X-Posthorn-PGP") || !strings.Contains(buf.String(), "Subject: x\r\n\r\nhi") {
		t.Errorf("forged header kept: %q %v", buf, err)
	}
}
