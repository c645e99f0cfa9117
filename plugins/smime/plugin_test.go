package smime

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/plugins/smime/internal/opensslrsa"
	"github.com/posthorn/posthorn/sdk"
)

type fakeHost struct {
	mu     sync.Mutex
	events []sdk.Event
}

func (h *fakeHost) Submit(context.Context, string, *sdk.Envelope, io.Reader) (string, error) {
	return "", sdk.ErrNoHost
}
func (h *fakeHost) Emit(_ context.Context, ev sdk.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
	return nil
}
func (h *fakeHost) Confirm(context.Context, sdk.Confirmation) error { return sdk.ErrNoHost }

type fixture struct {
	pki   *testPKI
	dir   string
	alice Identity // org user
	bob   Identity // external correspondent
	p     *Plugin
	host  *fakeHost
}

func newFixture(t *testing.T, extra map[string]any) *fixture {
	f := &fixture{pki: newPKI(t), dir: t.TempDir(), host: &fakeHost{}}
	f.alice = f.pki.leaf(t, "alice@org.test")
	f.bob = f.pki.leaf(t, "bob@ext.test")
	writeFile(t, f.dir, "ca.pem", certPEM(f.pki.ca.Cert))
	writeFile(t, f.dir, "alice.pem", certPEM(f.alice.Cert))
	writeFile(t, f.dir, "alice.key", keyPEM(t, f.alice))
	cfg := map[string]any{
		"identity":           []map[string]any{{"cert": "alice.pem", "key": "alice.key"}},
		"trust_store":        "ca.pem",
		"collection_address": "certs@org.test",
		"internal_domains":   []string{"org.test"},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	js, _ := json.Marshal(cfg)
	f.p = &Plugin{}
	if err := f.p.Configure(context.Background(), sdk.Config{JSON: js, DataDir: f.dir, Host: f.host}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.p.st.close() })
	return f
}

func (f *fixture) inspect(t *testing.T, rcpt string, msg []byte) (sdk.Verdict, []byte) {
	t.Helper()
	v, err := f.p.Inspect(context.Background(), &sdk.Envelope{MailFrom: "x@ext.test", Recipients: []sdk.Recipient{{Address: rcpt}}}, bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	var repl []byte
	if v.Action == sdk.ActionReplace {
		repl, _ = io.ReadAll(v.Replacement)
	}
	return v, repl
}

func headerValue(v sdk.Verdict) string {
	for _, h := range v.Headers {
		return h.Value
	}
	return ""
}

const bobMsg = "From: Bob <bob@ext.test>\r\nTo: alice@org.test\r\nSubject: hi\r\n\r\nHello Alice\r\n"

func TestHarvestThenEncrypt(t *testing.T) {
	needOpenSSL(t)
	f := newFixture(t, nil)
	ctx := context.Background()
	// Before: nothing known about bob.
	ans, err := f.p.CanHandle(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "bob@ext.test"}})
	if err != nil || ans[0].CanHandle {
		t.Fatalf("%v %+v", err, ans)
	}
	// Bob's signed mail arrives: verified, his certificate harvested.
	signed, err := Protect([]byte(bobMsg), &f.bob, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := f.inspect(t, "alice@org.test", signed)
	if v.Action != sdk.ActionAddHeaders || !strings.Contains(headerValue(v), "signature=valid; signer=bob@ext.test") {
		t.Fatalf("verdict %+v", v)
	}
	ans, err = f.p.CanHandle(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "bob@ext.test"}, {Address: "carol@ext.test"}})
	if err != nil || !ans[0].CanHandle || ans[1].CanHandle {
		t.Fatalf("%v %+v", err, ans)
	}
	// A forged From: not harvested.
	forged := bytes.Replace(signed, []byte("From: Bob <bob@ext.test>"), []byte("From: mallory@ext.test"), 1)
	v, _ = f.inspect(t, "alice@org.test", forged)
	if !strings.Contains(headerValue(v), "signature=invalid") || !strings.Contains(headerValue(v), "not for mallory@ext.test") {
		t.Fatalf("forged: %+v", v)
	}
	// Alice writes to Bob: signed, encrypted with GCM and OAEP (Bob's
	// signature announced both).
	res, err := f.p.Transform(ctx, &sdk.Envelope{ID: "Q1", MailFrom: "alice@org.test"}, []sdk.Recipient{{Address: "bob@ext.test"}}, strings.NewReader(testMsg))
	if err != nil || res.Action != sdk.OutboundTransformed || len(res.Outputs) != 1 {
		t.Fatalf("%v %+v", err, res)
	}
	out, _ := io.ReadAll(res.Outputs[0].Body)
	if !bytes.Contains(out, []byte("authEnveloped-data")) {
		t.Fatalf("not GCM:\n%s", out[:300])
	}
	dir := t.TempDir()
	in := writeFile(t, dir, "out.eml", out)
	for _, who := range []Identity{f.bob, f.alice} { // the sender can read its copy
		dec := openssl(t, nil, "cms", "-decrypt", "-in", in, "-recip", writeFile(t, dir, "c.pem", certPEM(who.Cert)), "-inkey", writeFile(t, dir, "k.pem", keyPEM(t, who)))
		ver := openssl(t, nil, "cms", "-verify", "-in", writeFile(t, dir, "d.eml", dec), "-CAfile", writeFile(t, dir, "ca.pem", certPEM(f.pki.ca.Cert)))
		if !bytes.Contains(ver, []byte("the numbers are fine")) {
			t.Fatalf("%q", ver)
		}
	}
	o, _, err := Decrypt(mustDER(t, out), []Identity{f.bob})
	if err != nil {
		t.Fatal(err)
	}
	_ = o
}

func TestCBCForUnknownCapabilities(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	for _, r := range NewRecords(f.bob.Cert, Capabilities{}, "import", time.Now()) {
		f.p.st.store.Put(ctx, r)
	}
	res, err := f.p.Transform(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "bob@ext.test"}}, strings.NewReader(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(res.Outputs[0].Body)
	_, env, err := Decrypt(mustDER(t, out), []Identity{f.bob})
	if err != nil || env.Cipher != AES256CBC || env.Transport != PKCS1v15 {
		t.Fatalf("%v %+v", err, env)
	}
}

func TestInboundDecrypt(t *testing.T) {
	f := newFixture(t, nil)
	enc, err := Protect([]byte(bobMsg), &f.bob, AES256GCM, []Recipient{{Cert: f.alice.Cert, Transport: OAEP}})
	if err != nil {
		t.Fatal(err)
	}
	v, repl := f.inspect(t, "alice@org.test", enc)
	if v.Action != sdk.ActionReplace {
		t.Fatalf("%+v", v)
	}
	if !bytes.HasPrefix(repl, []byte("X-Posthorn-SMIME: decrypted; cipher=aes256-gcm; key-transport=rsa-oaep; signature=valid; signer=bob@ext.test\r\n")) ||
		!bytes.Contains(repl, []byte("Hello Alice")) || !bytes.Contains(repl, []byte("Subject: hi")) {
		t.Fatalf("%s", repl)
	}
	// To an outside recipient: left alone.
	v, _ = f.inspect(t, "someone@elsewhere.test", enc)
	if v.Action != sdk.ActionAddHeaders || !strings.Contains(headerValue(v), "not decrypted") {
		t.Fatalf("%+v", v)
	}
	// Not for our key: header with the reason, accepted.
	enc2, _ := Protect([]byte(bobMsg), nil, AES256CBC, []Recipient{{Cert: f.bob.Cert}})
	v, _ = f.inspect(t, "alice@org.test", enc2)
	if v.Action != sdk.ActionAddHeaders || !strings.Contains(headerValue(v), "error; smime: none of our certificates") {
		t.Fatalf("%+v", v)
	}
	// Plain mail: accepted without a header.
	v, _ = f.inspect(t, "alice@org.test", []byte(bobMsg))
	if v.Action != sdk.ActionAccept {
		t.Fatalf("%+v", v)
	}
}

func TestCollectionAddress(t *testing.T) {
	f := newFixture(t, nil)
	carol := f.pki.leaf(t, "carol@ext.test")
	stranger := newPKI(t).leaf(t, "dave@ext.test")
	msg := "From: carol@ext.test\r\nTo: certs@org.test\r\nSubject: my cert\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhere\r\n" +
		"--b1\r\nContent-Type: application/pkix-cert; name=carol.cer\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		string(base64Lines(carol.Cert.Raw)) +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=dave.pem\r\n\r\n" +
		string(certPEM(stranger.Cert)) + "--b1--\r\n"
	f.inspect(t, "certs@org.test", []byte(msg))
	ctx := context.Background()
	ans, _ := f.p.CanHandle(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "carol@ext.test"}, {Address: "dave@ext.test"}})
	if !ans[0].CanHandle || ans[1].CanHandle {
		t.Fatalf("%+v", ans)
	}
}

func TestExpiryEventsAndPublishing(t *testing.T) {
	f := newFixture(t, map[string]any{"publish_days": 42})
	now := time.Now()
	// Alice's current certificate ends in 20 days; the next one starts
	// in 19.
	cur := f.pki.leaf(t, "alice@org.test", func(c *x509.Certificate) { c.NotAfter = now.Add(20 * 24 * time.Hour) })
	next := f.pki.leaf(t, "alice@org.test", func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = now.Add(19*24*time.Hour), now.Add(400*24*time.Hour)
	})
	// A state of its own (the configured one belongs to the plugin's
	// expiry goroutine).
	st := &state{cfg: f.p.st.cfg, host: f.host, warned: map[string]string{}, ids: &identities{all: []*OrgIdentity{
		{Identity: cur, Addresses: []string{"alice@org.test"}}, {Identity: next, Addresses: []string{"alice@org.test"}}}}}
	if n := f.p.checkExpiry(context.Background(), st, now); n != 1 {
		t.Fatalf("%d events", n)
	}
	if n := f.p.checkExpiry(context.Background(), st, now); n != 0 {
		t.Fatalf("warned twice on one day: %d", n)
	}
	f.host.mu.Lock()
	ev := f.host.events[len(f.host.events)-1]
	f.host.mu.Unlock()
	if ev.Type != "smime.cert_expiring" || ev.Attributes["subject"] != cur.Cert.Subject.String() || ev.Attributes["not_after"] != cur.Cert.NotAfter.UTC().Format(time.RFC3339) {
		t.Fatalf("%+v", ev)
	}
	// Published: current and next (within 42 days of the end).
	if got := st.published("alice@org.test", now); len(got) != 2 || got[0] != cur.Cert || got[1] != next.Cert {
		t.Fatalf("published %d", len(got))
	}
	// With 10 days: only the current one.
	st.cfg.PublishDays = 10
	if got := st.published("alice@org.test", now); len(got) != 1 {
		t.Fatalf("published %d", len(got))
	}
	// Signing switches at the next one's start.
	if s := st.ids.signer("alice@org.test", now.Add(19*24*time.Hour+time.Hour)); s == nil || s.Cert != next.Cert {
		t.Fatal("no rotation")
	}
	srv := httptest.NewServer(f.p.publishHandler(st))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/smime/alice@org.test.der")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(b, cur.Cert.Raw) {
		t.Fatal("DER download differs")
	}
	resp, _ = srv.Client().Get(srv.URL + "/smime/nobody@org.test.pem")
	if resp.StatusCode != 404 {
		t.Fatal(resp.Status)
	}
	resp.Body.Close()
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for js, key := range map[string]string{
		`{"identity":[{"cert":"missing.pem"}]}`:   "identity[0]",
		`{"trust_store":"missing.pem"}`:           "trust_store",
		`{"collection_address":"not an address"}`: "collection_address",
		`{"bogus":1}`:                "bogus",
		`{"rsa_signer":"boringssl"}`: "rsa_signer",
	} {
		err := (&Plugin{}).Configure(context.Background(), sdk.Config{JSON: []byte(js), DataDir: dir})
		ce, ok := err.(*sdk.ConfigError)
		if !ok || ce.Key != key {
			t.Errorf("%s: %v", js, err)
		}
	}
}

func TestForgedResultHeaderRemoved(t *testing.T) {
	f := newFixture(t, nil)
	plain := "From: mallory@ext.test\r\nX-Posthorn-SMIME: signature=valid; signer=ceo@org.test\r\nSubject: pay\r\n\r\nbody\r\n"
	v, repl := f.inspect(t, "alice@org.test", []byte(plain))
	if v.Action != sdk.ActionReplace || bytes.Contains(repl, []byte("X-Posthorn-SMIME")) || !bytes.HasSuffix(repl, []byte("Subject: pay\r\n\r\nbody\r\n")) {
		t.Fatalf("%+v %q", v, repl)
	}
	signed, _ := Protect([]byte(bobMsg), &f.bob, 0, nil)
	signed = append([]byte("x-posthorn-smime: forged\r\n"), signed...)
	v, repl = f.inspect(t, "alice@org.test", signed)
	if v.Action != sdk.ActionReplace || bytes.Count(repl, []byte("-SMIME: ")) != 1 || !bytes.HasPrefix(repl, []byte("X-Posthorn-SMIME: signature=valid; signer=bob@ext.test\r\n")) {
		t.Fatalf("%+v %q", v, repl)
	}
}

func TestReconfigurePublish(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := newFixture(t, map[string]any{"publish_listen": addr})
	get := func() int {
		resp, err := http.Get("http://" + addr + "/smime/alice@org.test.pem")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && !bytes.Equal(b, certPEM(f.alice.Cert)) {
			t.Fatalf("%s", b)
		}
		return resp.StatusCode
	}
	if c := get(); c != 200 {
		t.Fatal(c)
	}
	// Reload with the same address: still served.
	js, _ := json.Marshal(map[string]any{
		"identity":       []map[string]any{{"cert": "alice.pem", "key": "alice.key"}},
		"trust_store":    "ca.pem",
		"publish_listen": addr,
	})
	if err := f.p.Configure(context.Background(), sdk.Config{JSON: js, DataDir: f.dir, Host: f.host}); err != nil {
		t.Fatal(err)
	}
	if c := get(); c != 200 {
		t.Fatal(c)
	}
}

// TestInboundFromOpenSSLClient: a correspondent's client (openssl here)
// signs, then encrypts with AES-256-GCM to Alice; the plugin decrypts,
// verifies and harvests.
func TestInboundFromOpenSSLClient(t *testing.T) {
	needOpenSSL(t)
	f := newFixture(t, nil)
	dir := t.TempDir()
	bc := writeFile(t, dir, "bob.pem", certPEM(f.bob.Cert))
	bk := writeFile(t, dir, "bob.key", keyPEM(t, f.bob))
	ac := writeFile(t, dir, "alice.pem", certPEM(f.alice.Cert))
	signed := openssl(t, []byte("Content-Type: text/plain\r\n\r\nfrom a real client\r\n"), "cms", "-sign", "-signer", bc, "-inkey", bk, "-md", "sha256")
	enc := openssl(t, signed, "cms", "-encrypt", "-aes-256-gcm", "-from", "bob@ext.test", "-to", "alice@org.test", "-subject", "hello", ac)
	v, repl := f.inspect(t, "alice@org.test", enc)
	if v.Action != sdk.ActionReplace || !bytes.Contains(repl, []byte("decrypted; cipher=aes256-gcm; key-transport=rsa-pkcs1v15; signature=valid; signer=bob@ext.test")) ||
		!bytes.Contains(repl, []byte("from a real client")) || !bytes.Contains(repl, []byte("Subject: hello")) {
		t.Fatalf("%+v\n%s", v, repl)
	}
	ans, _ := f.p.CanHandle(context.Background(), &sdk.Envelope{}, []sdk.Recipient{{Address: "bob@ext.test"}})
	if !ans[0].CanHandle {
		t.Fatal("not harvested")
	}
}

// A Transform output gives its buffer back once, when the SDK closes it,
// and reads nothing after.
func TestOutputClose(t *testing.T) {
	b := append(getBuf(100), "a message"...)
	o := newOutput(b)
	got, err := io.ReadAll(o)
	if err != nil || string(got) != "a message" {
		t.Fatalf("%q %v", got, err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil { // twice: the buffer is not given back twice
		t.Fatal(err)
	}
	if n, err := o.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("read after Close: %d %v", n, err)
	}
}

// rsa_signer = "openssl": the RSA identity's signatures are OpenSSL's
// (checked by Go, then by the openssl CLI), for signed+encrypted and
// for signed-only mail; decryption still uses the Go key.
func TestOpenSSLSigner(t *testing.T) {
	needOpenSSL(t)
	if _, err := opensslrsa.Available(); err != nil {
		t.Skipf("%v", err)
	}
	f := newFixture(t, map[string]any{"rsa_signer": "openssl"})
	if _, ok := f.p.st.ids.all[0].Signer.(*opensslrsa.Signer); !ok {
		t.Fatalf("identity signer is %T", f.p.st.ids.all[0].Signer)
	}
	ctx := context.Background()
	for _, r := range NewRecords(f.bob.Cert, Capabilities{}, "import", time.Now()) {
		f.p.st.store.Put(ctx, r)
	}
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", certPEM(f.pki.ca.Cert))
	env := &sdk.Envelope{ID: "Q1", MailFrom: "alice@org.test"}
	rcpts := []sdk.Recipient{{Address: "bob@ext.test"}}
	res, err := f.p.Transform(ctx, env, rcpts, strings.NewReader(testMsg))
	if err != nil || res.Action != sdk.OutboundTransformed {
		t.Fatalf("%v %+v", err, res)
	}
	out, _ := io.ReadAll(res.Outputs[0].Body)
	dec := openssl(t, nil, "cms", "-decrypt", "-in", writeFile(t, dir, "out.eml", out), "-recip", writeFile(t, dir, "c.pem", certPEM(f.bob.Cert)), "-inkey", writeFile(t, dir, "k.pem", keyPEM(t, f.bob)))
	if ver := openssl(t, nil, "cms", "-verify", "-in", writeFile(t, dir, "d.eml", dec), "-CAfile", ca); !bytes.Contains(ver, []byte("the numbers are fine")) {
		t.Fatalf("%q", ver)
	}
	// The sender's own copy is opened with the Go key, as before.
	if _, _, err := Decrypt(mustDER(t, out), []Identity{f.alice}); err != nil {
		t.Fatalf("sender's copy: %v", err)
	}
	res, err = f.p.Transform(sdk.WithSignOnly(ctx), env, rcpts, strings.NewReader(testMsg))
	if err != nil || res.Action != sdk.OutboundTransformed {
		t.Fatalf("sign only: %v %+v", err, res)
	}
	signed, _ := io.ReadAll(res.Outputs[0].Body)
	if ver := openssl(t, nil, "cms", "-verify", "-in", writeFile(t, dir, "s.eml", signed), "-CAfile", ca); !bytes.Contains(ver, []byte("the numbers are fine")) {
		t.Fatalf("sign only: %q", ver)
	}
	o, err := Open(signed, nil, VerifyOptions{Roots: f.pki.roots, From: "alice@org.test"})
	if err != nil || !o.Signed || o.SigErr != nil {
		t.Fatalf("Open: %v %+v", err, o)
	}
}

// rsa_signer: "auto" (the default) signs with OpenSSL where it can be
// loaded, "go" never does.
func TestRSASignerModes(t *testing.T) {
	_, avail := opensslrsa.Available()
	for mode, wantOpenSSL := range map[string]bool{"": avail == nil, "auto": avail == nil, "go": false} {
		extra := map[string]any{}
		if mode != "" {
			extra["rsa_signer"] = mode
		}
		f := newFixture(t, extra)
		_, isOpenSSL := f.p.st.ids.all[0].Signer.(*opensslrsa.Signer)
		if isOpenSSL != wantOpenSSL {
			t.Errorf("rsa_signer %q: signer %T, want OpenSSL %v", mode, f.p.st.ids.all[0].Signer, wantOpenSSL)
		}
		out, err := Protect([]byte(testMsg), &f.p.st.ids.all[0].Identity, 0, nil)
		if err != nil {
			t.Fatalf("%q: %v", mode, err)
		}
		o, err := Open(out, nil, VerifyOptions{Roots: f.pki.roots, From: "alice@org.test"})
		if err != nil || !o.Signed || o.SigErr != nil {
			t.Fatalf("%q: Open: %v %+v", mode, err, o)
		}
	}
}
