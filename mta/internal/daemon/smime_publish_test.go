package daemon_test

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// issueValid writes NAME.crt and NAME.key for addr, valid from nb to na.
func (p *smimePKI) issueValid(name, addr string, nb, na time.Time) (string, string) {
	return p.issueTemplate(name, rsaKey(p.t), &x509.Certificate{Subject: pkix.Name{CommonName: addr, Organization: []string{"Kanzlei Muster"}},
		EmailAddresses: []string{addr}, NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
}

// TestSMIMEPublicationPage (issue 13.7): the smime plugin of the real
// daemon serves the publication page. Alice's current certificate ends in
// 20 days; her successor is already valid: both are listed (the successor
// beside, not instead of, the current one), each with a SHA-256
// fingerprint equal to what openssl x509 -fingerprint -sha256 prints for
// the PEM and DER downloads. A staff OpenPGP key is listed with its
// fingerprint. German and English, no JavaScript, nothing external.
func TestSMIMEPublicationPage(t *testing.T) {
	needOpenSSL(t)
	bin := pluginBinary(t, "smime")
	dir := shortTempDir(t)
	pki := newSMIMEPKI(t, dir)
	now := time.Now()
	curCrt, curKey := pki.issueValid("cur", "alice@example.test", now.Add(-300*24*time.Hour), now.Add(20*24*time.Hour))
	nextCrt, nextKey := pki.issueValid("next", "alice@example.test", now.Add(-time.Hour), now.Add(400*24*time.Hour))

	staff, err := openpgp.NewEntity("Bob Staff", "", "bob@example.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	var keyFile bytes.Buffer
	aw, _ := armor.Encode(&keyFile, openpgp.PublicKeyType, nil)
	staff.Serialize(aw)
	aw.Close()
	pgpFile := filepath.Join(dir, "staff.asc")
	os.WriteFile(pgpFile, keyFile.Bytes(), 0o600)
	wantPGP := strings.ToUpper(fmt.Sprintf("%x", staff.PrimaryKey.Fingerprint))

	listen := freeLocalAddr(t)
	e := startEnv(t, fmt.Sprintf(`
[[plugin]]
name = "smime"
path = %q
[plugin.config]
trust_store = %q
internal_domains = ["example.test"]
publish_listen = %q
publish_days = 42
publish_name = "Kanzlei Muster"
publish_pgp_keys = [%q]
[[plugin.config.identity]]
cert = %q
key = %q
[[plugin.config.identity]]
cert = %q
key = %q
`, bin, pki.caFile("trust.pem"), listen, pgpFile, curCrt, curKey, nextCrt, nextKey))
	waitPluginNamed(t, e, "smime", "running")

	get := func(path, lang string) (string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+listen+path, nil)
		if lang != "" {
			req.Header.Set("Accept-Language", lang)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return string(b), resp.Header
	}
	de, h := get("/smime/", "de-DE,de;q=0.9,en;q=0.5")
	if h.Get("Content-Language") != "de" || !strings.Contains(de, "SHA-256-Fingerabdruck") || !strings.Contains(de, "Nachfolger") {
		t.Fatalf("German page:\n%s", de)
	}
	en, _ := get("/smime/en", "")
	if !strings.Contains(en, "SHA-256 fingerprint") || !strings.Contains(en, "successor") || !strings.Contains(en, "Kanzlei Muster") {
		t.Fatalf("English page:\n%s", en)
	}
	for _, page := range []string{de, en} {
		low := strings.ToLower(page)
		if strings.Contains(low, "<script") || strings.Contains(low, "src=") || strings.Contains(low, "http://") || strings.Contains(low, "https://") || regexp.MustCompile(`\son[a-z]+=`).MatchString(low) {
			t.Fatalf("script or external reference in the page:\n%s", page)
		}
	}

	// Every listed fingerprint matches openssl's for both downloads, and
	// the two certificates are exactly the current one and its successor.
	fpRE := regexp.MustCompile(`<code class="fp">([0-9A-F:]+)</code>`)
	linkRE := regexp.MustCompile(`href="cert/([0-9a-f]{64})\.pem"`)
	fps, links := fpRE.FindAllStringSubmatch(en, -1), linkRE.FindAllStringSubmatch(en, -1)
	if len(fps) != 2 || len(links) != 2 {
		t.Fatalf("%d fingerprints, %d links:\n%s", len(fps), len(links), en)
	}
	fileFP := func(args ...string) string {
		out, err := exec.Command("openssl", append([]string{"x509", "-noout", "-fingerprint", "-sha256"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl x509 %v: %v\n%s", args, err, out)
		}
		_, fp, _ := strings.Cut(strings.TrimSpace(string(out)), "=")
		return fp
	}
	want := map[string]bool{fileFP("-in", curCrt): true, fileFP("-in", nextCrt): true}
	for i, m := range fps {
		if !want[m[1]] {
			t.Fatalf("listed fingerprint %s is not one of alice's certificates (%v)", m[1], want)
		}
		for _, ext := range []string{"pem", "der"} {
			body, _ := get("/smime/cert/"+links[i][1]+"."+ext, "")
			f := filepath.Join(dir, "dl."+ext)
			os.WriteFile(f, []byte(body), 0o600)
			if got := fileFP("-in", f, "-inform", strings.ToUpper(ext)); got != m[1] {
				t.Fatalf("%s download of %s: openssl says %s", ext, m[1], got)
			}
		}
	}
	if fps[0][1] != fileFP("-in", curCrt) || !strings.Contains(en[:strings.Index(en, fps[1][1])], "current") {
		t.Fatalf("the current certificate must come first, the successor after it:\n%s", en)
	}
	// The staff key, with the fingerprint of the key file.
	if !strings.Contains(en, wantPGP) || !strings.Contains(en, "bob@example.test") {
		t.Fatalf("staff PGP key %s not listed:\n%s", wantPGP, en)
	}
	if out, err := exec.Command("gpg", "--show-keys", "--with-colons", pgpFile).Output(); err == nil && !strings.Contains(string(out), "fpr:::::::::"+wantPGP) {
		t.Fatalf("gpg sees another fingerprint:\n%s", out)
	}
}
