package smime

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

// TestSenderCopyOAEP (issue 13.5): the sender's own copy is wrapped with
// RSAES-OAEP once the holder's capabilities announce it — here: alice's
// client signed a mail with SMIMECapabilities listing rsaesOaep, and the
// plugin harvested her certificate with them. openssl cms -cmsout -print
// shows the key transport of every RecipientInfo, and openssl decrypts
// the sender's copy.
func TestSenderCopyOAEP(t *testing.T) {
	needOpenSSL(t)
	f := newFixture(t, nil)
	ctx := context.Background()
	for _, r := range NewRecords(f.bob.Cert, Capabilities{OAEP: true}, "import", time.Now()) {
		f.p.st.store.Put(ctx, r)
	}
	send := func() ([]byte, string) {
		t.Helper()
		res, err := f.p.Transform(ctx, &sdk.Envelope{ID: "Q1", MailFrom: "alice@org.test"}, []sdk.Recipient{{Address: "bob@ext.test"}}, strings.NewReader(testMsg))
		if err != nil || res.Action != sdk.OutboundTransformed {
			t.Fatalf("%v %+v", err, res)
		}
		out, _ := io.ReadAll(res.Outputs[0].Body)
		printed := string(openssl(t, nil, "cms", "-cmsout", "-print", "-in", writeFile(t, t.TempDir(), "o.eml", out)))
		return out, printed
	}
	_, printed := send()
	if !strings.Contains(printed, "rsaesOaep") || !strings.Contains(printed, "rsaEncryption") {
		t.Fatalf("before: want OAEP for bob and v1.5 for alice's copy:\n%s", printed)
	}

	// Alice's client signs a mail announcing OAEP; it passes Inspect (mail
	// submitted by our users goes through the inbound hook too).
	signed, err := Protect([]byte(testMsg), &f.alice, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.inspect(t, "bob@ext.test", signed)
	out, printed := send()
	if strings.Count(printed, "rsaesOaep") < 2 || strings.Contains(printed, "rsaEncryption") {
		t.Fatalf("after: want OAEP for both:\n%s", printed)
	}
	dir := t.TempDir()
	dec := openssl(t, nil, "cms", "-decrypt", "-in", writeFile(t, dir, "o.eml", out), "-recip", writeFile(t, dir, "a.pem", certPEM(f.alice.Cert)),
		"-inkey", writeFile(t, dir, "a.key", keyPEM(t, f.alice)))
	if !bytes.Contains(dec, []byte("multipart/signed")) {
		t.Fatalf("alice's copy: %q", dec)
	}
	_, env, err := Decrypt(mustDER(t, out), []Identity{f.alice})
	if err != nil || env.Transport != OAEP {
		t.Fatalf("%v %+v", err, env)
	}
}

// TestSenderCopyKeyTransportConfig: key_transport = "oaep" forces OAEP,
// "pkcs1v15" forces v1.5 even when OAEP is announced.
func TestSenderCopyKeyTransportConfig(t *testing.T) {
	for _, kt := range []string{"oaep", "pkcs1v15"} {
		f := newFixture(t, map[string]any{"identity": []map[string]any{{"cert": "alice.pem", "key": "alice.key", "key_transport": kt}}})
		ctx := context.Background()
		for _, r := range NewRecords(f.bob.Cert, Capabilities{}, "import", time.Now()) {
			f.p.st.store.Put(ctx, r)
		}
		for _, r := range NewRecords(f.alice.Cert, Capabilities{OAEP: true}, "harvest", time.Now()) {
			f.p.st.store.Put(ctx, r)
		}
		res, err := f.p.Transform(ctx, &sdk.Envelope{MailFrom: "alice@org.test"}, []sdk.Recipient{{Address: "bob@ext.test"}}, strings.NewReader(testMsg))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(res.Outputs[0].Body)
		_, env, err := Decrypt(mustDER(t, out), []Identity{f.alice})
		if err != nil || env.Transport.String() != map[string]string{"oaep": "rsa-oaep", "pkcs1v15": "rsa-pkcs1v15"}[kt] {
			t.Fatalf("%s: %v %+v", kt, err, env)
		}
	}
	if _, err := LoadIdentity(IdentityConfig{Cert: "x", KeyTransport: "rsa"}, ""); err == nil || !strings.Contains(err.Error(), "key_transport") {
		t.Fatal("bad key_transport accepted")
	}
}
