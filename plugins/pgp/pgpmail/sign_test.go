package pgpmail

import (
	"bytes"
	"io"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSignGPGVerifies: a multipart/signed message made by Sign verifies in
// gpg, the content part byte for byte as signed, and in our own Decrypt
// (which also verifies signed messages).
func TestSignGPGVerifies(t *testing.T) {
	g := newGPG(t)
	alice, err := Generate("alice@example.org", GenerateOptions{Name: "Alice"})
	if err != nil {
		t.Fatal(err)
	}
	g.importKey(alice)
	out, err := Sign([]byte(testMsg), alice, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if !strings.Contains(s, "multipart/signed") || !strings.Contains(s, "micalg=pgp-sha256") || !strings.Contains(s, "Subject: Quarterly numbers") {
		t.Fatalf("%s", s)
	}
	if IsEncrypted(out) {
		t.Fatal("a signed message counted as encrypted")
	}
	// Split by the boundary as a MIME reader would: the signed bytes are
	// those between "--B\r\n" and "\r\n--B".
	i := strings.Index(s, "boundary=\"")
	b := s[i+len("boundary=\"") : i+len("boundary=\"")+strings.Index(s[i+len("boundary=\""):], "\"")]
	parts := strings.Split(s, "--"+b)
	content := strings.TrimPrefix(parts[1], "\r\n")
	content = strings.TrimSuffix(content, "\r\n")
	// testMsg's body is 8-bit: the signed part must have been made 7-bit
	// first (RFC 3156 §3), as quoted-printable that still reads "Grüße".
	for i := 0; i < len(content); i++ {
		if content[i] >= 0x80 {
			t.Fatalf("signed content has the 8-bit byte %#x at %d:\n%s", content[i], i, content)
		}
	}
	if !strings.Contains(content, "Content-Transfer-Encoding: quoted-printable") {
		t.Fatalf("signed content not re-encoded:\n%s", content)
	}
	qp, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(content[strings.Index(content, "\r\n\r\n")+4:])))
	if err != nil || !strings.Contains(string(qp), "Grüße, the numbers are up.") {
		t.Fatalf("signed body decodes to %q (%v)", qp, err)
	}
	sigPart := parts[2]
	sig := sigPart[strings.Index(sigPart, "-----BEGIN PGP SIGNATURE-----"):]
	sig = sig[:strings.Index(sig, "-----END PGP SIGNATURE-----")+len("-----END PGP SIGNATURE-----")]
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "content"), []byte(content), 0o600)
	os.WriteFile(filepath.Join(dir, "sig.asc"), []byte(sig), 0o600)
	_, stderr, err := g.try(nil, "--verify", filepath.Join(dir, "sig.asc"), filepath.Join(dir, "content"))
	if err != nil || !strings.Contains(stderr, "Good signature") {
		t.Fatalf("gpg --verify: %v\n%s", err, stderr)
	}
	// Tampering breaks it.
	os.WriteFile(filepath.Join(dir, "content"), bytes.Replace([]byte(content), []byte("up"), []byte("down"), 1), 0o600)
	if _, _, err := g.try(nil, "--verify", filepath.Join(dir, "sig.asc"), filepath.Join(dir, "content")); err == nil {
		t.Fatal("gpg verified a tampered message")
	}
}
