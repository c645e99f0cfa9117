package webmailbox

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

func testCert(t *testing.T, email string) []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: email}, EmailAddresses: []string{email},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestParseUploadedKey(t *testing.T) {
	k, err := ParseUploadedKey(testCert(t, "Bob@Partner.test"), "bob@partner.test")
	if err != nil || k.Kind != "smime" || len(k.Fingerprint) != 64 {
		t.Fatalf("cert: %+v %v", k, err)
	}
	if _, err := ParseUploadedKey(testCert(t, "other@x.test"), "bob@partner.test"); err == nil {
		t.Error("certificate for another address accepted")
	}
	e, err := openpgp.NewEntity("Bob", "", "bob@partner.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	var pub bytes.Buffer
	e.Serialize(&pub)
	k, err = ParseUploadedKey(pub.Bytes(), "bob@partner.test")
	if err != nil || k.Kind != "pgp" || !strings.Contains(k.Armored, "BEGIN PGP PUBLIC KEY BLOCK") {
		t.Fatalf("pgp: %+v %v", k, err)
	}
	var priv bytes.Buffer
	e.SerializePrivate(&priv, nil)
	if _, err := ParseUploadedKey(priv.Bytes(), "bob@partner.test"); err == nil {
		t.Error("private key accepted")
	}
	if _, err := ParseUploadedKey([]byte("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"), "bob@partner.test"); !errors.Is(err, errPrivateKey) {
		t.Errorf("PEM private key: %v", err)
	}
	if _, err := ParseUploadedKey([]byte("garbage"), "bob@partner.test"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestKeyUploadOverHTTP(t *testing.T) {
	e, b := loggedIn(t, nil)
	tok := b.csrf("/box/keys")
	upload := func(data []byte, csrf string) resp {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("csrf", csrf)
		fw, _ := mw.CreateFormFile("key", "bob.pem")
		fw.Write(data)
		mw.Close()
		req, _ := http.NewRequest("POST", b.url+"/box/keys", &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		return b.do(req)
	}
	if r := upload(testCert(t, "bob@partner.test"), "wrong"); r.code != 403 {
		t.Errorf("upload without csrf: %d", r.code)
	}
	if r := upload([]byte("nonsense"), tok); r.code != 422 || !strings.Contains(r.body, "neither a valid certificate") {
		t.Errorf("bad key: %d", r.code)
	}
	if r := upload(testCert(t, "other@x.test"), tok); r.code != 422 || !strings.Contains(r.body, "does not belong") {
		t.Errorf("someone else's certificate: %d", r.code)
	}
	if r := upload(testCert(t, "bob@partner.test"), tok); r.code != 200 {
		t.Fatalf("upload: %d %s", r.code, r.body)
	}
	evs := e.host.eventsOf("webmailbox.key_uploaded")
	if len(evs) != 1 || evs[0].Attributes["kind"] != "smime" || !strings.Contains(evs[0].Attributes["key"], "BEGIN CERTIFICATE") || evs[0].Recipient != "bob@partner.test" {
		t.Errorf("events = %+v", evs)
	}
}

func TestClientIPHeader(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["client_ip_header"] = "X-Forwarded-For" })
	r, _ := http.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.0.0.1:1234"
	r.Header.Set("X-Forwarded-For", "203.0.113.9, 198.51.100.7")
	if ip := e.sv.clientIP(r); ip != "198.51.100.7" {
		t.Errorf("client ip = %q", ip)
	}
}
