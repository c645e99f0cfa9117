package smime_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/plugins/smime"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
	"github.com/posthorn/posthorn/sdk/plugintest"
)

var (
	bin  string
	data string // CA, identity and trust store for the process tests
	ca   *x509.Certificate
	caK  *rsa.PrivateKey
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "smime")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		bin, err = plugintest.BuildIn(dir, "./cmd/posthorn-smime")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		data = filepath.Join(dir, "data")
		os.Mkdir(data, 0o700)
		if err := makePKI(data); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func leaf(addr string, k *rsa.PrivateKey, serial int64) *x509.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: addr}, EmailAddresses: []string{addr},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(100 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caK)
	if err != nil {
		panic(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func pemOf(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }

var aliceK, bobK *rsa.PrivateKey
var aliceC, bobC *x509.Certificate

func makePKI(dir string) error {
	var err error
	if caK, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Process Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(1000 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caK.PublicKey, caK)
	ca, _ = x509.ParseCertificate(der)
	aliceK, _ = rsa.GenerateKey(rand.Reader, 2048)
	bobK, _ = rsa.GenerateKey(rand.Reader, 2048)
	aliceC, bobC = leaf("alice@org.test", aliceK, 2), leaf("bob@ext.test", bobK, 3)
	ak, _ := x509.MarshalPKCS8PrivateKey(aliceK)
	files := map[string][]byte{
		"ca.pem":    pemOf("CERTIFICATE", ca.Raw),
		"alice.pem": append(pemOf("CERTIFICATE", aliceC.Raw), pemOf("PRIVATE KEY", ak)...),
		"bob.pem":   pemOf("CERTIFICATE", bobC.Raw),
	}
	// The conformance kit's recipient has a certificate, so that its
	// large message goes through Transform too.
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	st, err := smime.OpenSQLite(filepath.Join(dir, "conformance.db"))
	if err != nil {
		return err
	}
	for _, r := range smime.NewRecords(leaf("rcpt@example.test", rk, 4), smime.Capabilities{GCM: true}, "import", time.Now()) {
		if err := st.Put(context.Background(), r); err != nil {
			return err
		}
	}
	st.Close()
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func config() map[string]any {
	return map[string]any{
		"identity":         []map[string]any{{"cert": filepath.Join(data, "alice.pem")}},
		"trust_store":      filepath.Join(data, "ca.pem"),
		"internal_domains": []string{"org.test"},
	}
}

func TestConformance(t *testing.T) {
	cfg := config()
	cfg["store"] = filepath.Join(data, "conformance.db")
	cfg["collection_address"] = "certs@org.test"
	plugintest.Run(t, bin, plugintest.Options{Config: cfg, LocalDomains: []string{"org.test"}, FilterCases: []plugintest.FilterCase{
		{Name: "encrypted", Recipients: []string{"alice@org.test"}, Want: true,
			Message: "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n"},
		{Name: "signed", Recipients: []string{"alice@org.test"}, Want: true,
			Message: "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\r\n\r\n"},
		{Name: "plain", Recipients: []string{"alice@org.test"}, Want: false,
			Message: "Content-Type: text/plain\r\nSubject: hi\r\n\r\nhello\r\n"},
		{Name: "forged result header", Recipients: []string{"alice@org.test"}, Want: true,
			Message: "X-Posthorn-SMIME: decrypted; signature=valid\r\n\r\nhello\r\n"},
		{Name: "to the collection address", Recipients: []string{"certs@org.test"}, Want: true,
			Message: "Content-Type: multipart/mixed; boundary=b\r\n\r\n"},
	}})
}

// TestProcess runs the built binary as the host does: Bob's certificate
// is imported with the CLI, then mail to him is signed and encrypted and
// his encrypted answer decrypted.
func TestProcess(t *testing.T) {
	dataDir := t.TempDir()
	db := filepath.Join(dataDir, "certs.db")
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "POSTHORN_SMIME_DB="+db, "POSTHORN_PLUGIN=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := cli("certs", "import", "-ca", filepath.Join(data, "ca.pem"), filepath.Join(data, "bob.pem")); err != nil || !strings.Contains(out, "imported bob@ext.test") {
		t.Fatalf("import: %v %s", err, out)
	}
	if out, err := cli("certs", "list"); err != nil || !strings.Contains(out, "bob@ext.test") || !strings.Contains(out, "valid") {
		t.Fatalf("list: %v %s", err, out)
	}
	if out, err := cli("certs", "show", "bob@ext.test"); err != nil || !strings.Contains(out, smime.Fingerprint(bobC)) {
		t.Fatalf("show: %v %s", err, out)
	}
	if out, err := cli("certs", "export", "bob@ext.test"); err != nil || out != string(pemOf("CERTIFICATE", bobC.Raw)) {
		t.Fatalf("export: %v %s", err, out)
	}
	if out, err := cli("certs", "import", filepath.Join(data, "missing.pem")); err == nil {
		t.Fatalf("import of a missing file: %s", out)
	}
	if out, err := cli("bogus"); err == nil || !strings.Contains(out, "usage") {
		t.Fatalf("bogus: %v %s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host := &plugintest.RecordingHost{}
	c := plugintest.Start(t, bin, hostside.Options{Name: "smime"})
	if _, err := c.Describe(ctx); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(config())
	if err := c.Configure(ctx, js, dataDir, host); err != nil {
		t.Fatal(err)
	}
	ans, err := c.CanHandle(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "bob@ext.test"}, {Address: "carol@ext.test"}})
	if err != nil || len(ans) != 2 || !ans[0].CanHandle || ans[1].CanHandle {
		t.Fatalf("%v %+v", err, ans)
	}
	msg := "From: alice@org.test\r\nTo: bob@ext.test\r\nSubject: s\r\n\r\nconfidential\r\n"
	res, err := c.Transform(ctx, &sdk.Envelope{MailFrom: "alice@org.test"}, []sdk.Recipient{{Address: "bob@ext.test"}}, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	out, err := res.Next()
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := io.ReadAll(out.Body)
	if !bytes.Contains(enc, []byte("application/pkcs7-mime; smime-type=enveloped-data")) || bytes.Contains(enc, []byte("confidential")) {
		t.Fatalf("%s", enc)
	}
	r, err := smime.Open(enc, []smime.Identity{{Cert: bobC, Key: bobK}}, smime.VerifyOptions{From: "alice@org.test"})
	if err != nil || !r.Encrypted || !r.Signed || r.SigErr != nil || !bytes.Contains(r.Message, []byte("confidential")) {
		t.Fatalf("%v %+v", err, r)
	}

	// Bob answers, signed and encrypted to Alice.
	answer, err := smime.Protect([]byte("From: bob@ext.test\r\nTo: alice@org.test\r\nSubject: re\r\n\r\nthanks\r\n"),
		&smime.Identity{Cert: bobC, Key: bobK}, smime.AES256GCM, []smime.Recipient{{Cert: aliceC, Transport: smime.OAEP}})
	if err != nil {
		t.Fatal(err)
	}
	v, repl, err := c.Inspect(ctx, &sdk.Envelope{MailFrom: "bob@ext.test", Recipients: []sdk.Recipient{{Address: "alice@org.test"}}}, bytes.NewReader(answer))
	if err != nil || v.Action != sdk.ActionReplace || repl == nil {
		t.Fatalf("%v %+v", err, v)
	}
	dec, _ := io.ReadAll(repl)
	repl.Close()
	if !bytes.Contains(dec, []byte("signature=valid; signer=bob@ext.test")) || !bytes.Contains(dec, []byte("thanks")) {
		t.Fatalf("%s", dec)
	}

	// The CLI, another process, removes Bob's certificate while the
	// plugin runs (and has looked it up, more than once): the next
	// message is not encrypted to it (the plugin's look-ups are cached,
	// issue 19.4). Imported again, it is used again.
	ans, err = c.CanHandle(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "bob@ext.test"}})
	if err != nil || len(ans) != 1 || !ans[0].CanHandle {
		t.Fatalf("%v %+v", err, ans)
	}
	if out, err := cli("certs", "remove", "bob@ext.test"); err != nil || !strings.Contains(out, "removed 1") {
		t.Fatalf("remove: %v %s", err, out)
	}
	ans, err = c.CanHandle(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "bob@ext.test"}})
	if err != nil || len(ans) != 1 || ans[0].CanHandle {
		t.Fatalf("after the CLI removed the certificate: %v %+v", err, ans)
	}
	res2, err := c.Transform(ctx, &sdk.Envelope{MailFrom: "alice@org.test"}, []sdk.Recipient{{Address: "bob@ext.test"}}, strings.NewReader(msg))
	if err != nil || res2.Action != sdk.OutboundDeclined {
		t.Fatalf("Transform after the CLI removed the certificate: %v %+v", err, res2)
	}
	res2.Close()
	if out, err := cli("certs", "import", "-ca", filepath.Join(data, "ca.pem"), filepath.Join(data, "bob.pem")); err != nil {
		t.Fatalf("import: %v %s", err, out)
	}
	ans, err = c.CanHandle(ctx, &sdk.Envelope{}, []sdk.Recipient{{Address: "bob@ext.test"}})
	if err != nil || len(ans) != 1 || !ans[0].CanHandle {
		t.Fatalf("after the CLI imported the certificate again: %v %+v", err, ans)
	}
}
