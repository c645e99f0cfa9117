package pgpmail

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// gpgHome is a throw-away GnuPG home with its own agent.
type gpgHome struct {
	t   *testing.T
	dir string
}

func newGPG(t *testing.T) *gpgHome {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg is not installed: skipping the GnuPG interoperability test")
	}
	dir, err := os.MkdirTemp("/tmp", "g")
	if err != nil {
		t.Fatal(err)
	}
	g := &gpgHome{t: t, dir: dir}
	t.Cleanup(func() {
		c := exec.Command("gpgconf", "--kill", "gpg-agent")
		c.Env = append(os.Environ(), "GNUPGHOME="+dir)
		c.Run()
		os.RemoveAll(dir)
	})
	return g
}

func (g *gpgHome) run(stdin []byte, args ...string) (stdout, stderr string) {
	g.t.Helper()
	out, errOut, err := g.try(stdin, args...)
	if err != nil {
		g.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out, errOut
}

func (g *gpgHome) try(stdin []byte, args ...string) (string, string, error) {
	cmd := exec.Command("gpg", append([]string{"--homedir", g.dir, "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "", "--trust-model", "always"}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}

// newKey makes a GnuPG key (Ed25519 + Curve25519) for uid and returns its
// public key as read by go-crypto.
func (g *gpgHome) newKey(uid string) *openpgp.Entity {
	g.t.Helper()
	g.run(nil, "--quick-gen-key", uid, "future-default", "default", "never")
	pub, _ := g.run(nil, "--armor", "--export", uid)
	el, err := ParseKeys([]byte(pub))
	if err != nil {
		g.t.Fatalf("reading gpg's key: %v", err)
	}
	return el[0]
}

func (g *gpgHome) importKey(e *openpgp.Entity) {
	g.t.Helper()
	a, err := Armor(e, false)
	if err != nil {
		g.t.Fatal(err)
	}
	g.run(a, "--import")
}

const testMsg = "From: Alice <alice@example.org>\r\n" +
	"To: Bob <bob@partner.test>\r\n" +
	"Subject: Quarterly numbers\r\n" +
	"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n" +
	"Message-ID: <q3@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Grüße, the numbers are up.\r\n"

// armoredPart returns the second part of a multipart/encrypted message.
func armoredPart(t *testing.T, msg []byte) []byte {
	t.Helper()
	fields, body, err := splitEntity(msg)
	if err != nil {
		t.Fatal(err)
	}
	ct, p := mediaType(get(fields, "Content-Type"))
	if ct != "multipart/encrypted" || p["protocol"] != "application/pgp-encrypted" {
		t.Fatalf("Content-Type %q %v", ct, p)
	}
	ps, err := parts(body, p["boundary"])
	if err != nil || len(ps) != 2 {
		t.Fatalf("parts: %d %v", len(ps), err)
	}
	if !strings.Contains(string(ps[0]), "Version: 1") {
		t.Errorf("first part %q", ps[0])
	}
	_, data, _ := splitEntity(ps[1])
	return data
}

func TestEncryptGPGDecryptsAndVerifies(t *testing.T) {
	g := newGPG(t)
	bob := g.newKey("Bob <bob@partner.test>")
	alice, err := Generate("alice@example.org", GenerateOptions{Name: "Alice"})
	if err != nil {
		t.Fatal(err)
	}
	g.importKey(alice)
	alicePub, _ := PublicOnly(alice)

	for _, protect := range []bool{false, true} {
		out, err := Encrypt([]byte(testMsg), EncryptOptions{Recipients: []*openpgp.Entity{bob, alicePub}, Signer: alice, ProtectHeaders: protect})
		if err != nil {
			t.Fatal(err)
		}
		if !IsEncrypted(out) {
			t.Error("output not recognised as encrypted")
		}
		if _, err := Encrypt(out, EncryptOptions{Recipients: []*openpgp.Entity{bob}}); err != ErrAlreadyEncrypted {
			t.Errorf("encrypting twice: %v", err)
		}
		hdr, _, _ := splitEntity(out)
		wantSubj := "Quarterly numbers"
		if protect {
			wantSubj = "..."
		}
		if s := get(hdr, "Subject"); s != wantSubj {
			t.Errorf("outer Subject %q, want %q", s, wantSubj)
		}
		if get(hdr, "From") != "Alice <alice@example.org>" || get(hdr, "Message-ID") != "<q3@example.org>" {
			t.Errorf("outer headers lost: %q", hdr)
		}
		plain, status := g.run(armoredPart(t, out), "--status-fd", "2", "--decrypt")
		for _, want := range []string{"DECRYPTION_OKAY", "GOODSIG", "VALIDSIG " + Fingerprint(alice)} {
			if !strings.Contains(status, want) {
				t.Errorf("protect=%v: gpg status lacks %s:\n%s", protect, want, status)
			}
		}
		for _, want := range []string{"Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "\r\n\r\nGrüße, the numbers are up.\r\n"} {
			if !strings.Contains(plain, want) {
				t.Errorf("protect=%v: plaintext lacks %q:\n%s", protect, want, plain)
			}
		}
		if protect != strings.Contains(plain, "protected-headers=\"v1\"") || protect != strings.Contains(plain, "Subject: Quarterly numbers") {
			t.Errorf("protect=%v: protected headers:\n%s", protect, plain)
		}
		// Our own key is a recipient too: we can read what we sent.
		res, err := Decrypt(out, openpgp.EntityList{alice}, time.Time{})
		if err != nil || !res.Decrypted || res.Signature != SigValid {
			t.Fatalf("own decryption: %+v %v", res, err)
		}
		if !bytes.Contains(res.Message, []byte("Subject: Quarterly numbers\r\n")) || bytes.Contains(res.Message, []byte("Subject: ...")) {
			t.Errorf("protect=%v: decrypted message:\n%s", protect, res.Message)
		}
	}
}

func TestDecryptWhatGPGEncrypted(t *testing.T) {
	g := newGPG(t)
	bob := g.newKey("Bob <bob@partner.test>")
	alice, err := Generate("alice@example.org", GenerateOptions{Name: "Alice"})
	if err != nil {
		t.Fatal(err)
	}
	g.importKey(alice)
	keys := openpgp.EntityList{alice, bob}

	entity := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHallo Alice, schöne Grüße.\r\n"
	enc, _ := g.run([]byte(entity), "--armor", "--encrypt", "--sign", "--local-user", "bob@partner.test", "--recipient", "alice@example.org")
	msg := "From: bob@partner.test\r\nTo: alice@example.org\r\nSubject: hi\r\nX-Posthorn-PGP: decrypted; signature=valid; signer=FORGED\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b1\r\nContent-Type: application/octet-stream\r\n\r\n" +
		enc + "\r\n--b1--\r\n"
	res, err := Decrypt([]byte(msg), keys, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Decrypted || res.Signature != SigValid || res.Signer != Fingerprint(bob) {
		t.Fatalf("result %+v", res)
	}
	out := string(res.Message)
	if !strings.HasPrefix(out, ResultHeader+": decrypted; signature=valid; signer="+Fingerprint(bob)+"\r\n") ||
		strings.Contains(out, "FORGED") || !strings.Contains(out, "Subject: hi\r\n") ||
		!strings.Contains(out, "\r\n\r\nHallo Alice, schöne Grüße.\r\n") || strings.Contains(out, "multipart/encrypted") {
		t.Errorf("decrypted message:\n%s", out)
	}

	// Hidden recipients (gpg --throw-keyids, as for Bcc): found by trying
	// our secret keys.
	hidden, _ := g.run([]byte(entity), "--armor", "--encrypt", "--throw-keyids", "--recipient", "alice@example.org", "--recipient", "bob@partner.test")
	msgH := strings.Replace(msg, enc, hidden, 1)
	if res, err := Decrypt([]byte(msgH), keys, time.Time{}); err != nil || !res.Decrypted {
		t.Errorf("hidden recipients: %+v %v", res, err)
	}

	// Signed, then encrypted (RFC 3156 §6.1, as Enigmail did): a
	// multipart/signed entity inside the encryption.
	part := "Content-Type: text/plain; charset=us-ascii\r\n\r\nzuerst signiert\r\n"
	dsig, _ := g.run([]byte(part), "--armor", "--detach-sign", "--local-user", "bob@partner.test")
	signedEntity := "Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"in\"\r\n\r\n" +
		"--in\r\n" + part + "\r\n--in\r\nContent-Type: application/pgp-signature\r\n\r\n" + dsig + "\r\n--in--\r\n"
	enc2, _ := g.run([]byte(signedEntity), "--armor", "--encrypt", "--recipient", "alice@example.org")
	res, err = Decrypt([]byte(strings.Replace(msg, enc, enc2, 1)), keys, time.Time{})
	if err != nil || !res.Decrypted || res.Signature != SigValid || res.Signer != Fingerprint(bob) {
		t.Errorf("signed then encrypted: %+v %v", res, err)
	}

	// Without Bob's public key the signature is from an unknown key.
	res, _ = Decrypt([]byte(msg), openpgp.EntityList{alice}, time.Time{})
	if !res.Decrypted || res.Signature != SigUnknownKey {
		t.Errorf("unknown signer: %+v", res)
	}
	// Without our secret key nothing is decrypted, and it says why.
	res, _ = Decrypt([]byte(msg), openpgp.EntityList{bob}, time.Time{})
	if res.Decrypted || !res.Encrypted || res.Message != nil || res.Detail == "" {
		t.Errorf("no key: %+v", res)
	}

	// Inline PGP in a quoted-printable text body.
	inl, _ := g.run([]byte("Inline geheim\n"), "--armor", "--encrypt", "--recipient", "alice@example.org")
	msg2 := "From: bob@partner.test\r\nSubject: inline\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi,\r\n\r\n" + strings.ReplaceAll(inl, "\n", "\r\n") + "\r\nBye\r\n"
	res, err = Decrypt([]byte(msg2), keys, time.Time{})
	if err != nil || !res.Decrypted || res.Signature != SigNone {
		t.Fatalf("inline: %+v %v", res, err)
	}
	if s := string(res.Message); !strings.Contains(s, "Hi,\r\n\r\nInline geheim\r\n") || !strings.Contains(s, "\r\nBye") || strings.Contains(s, "BEGIN PGP") {
		t.Errorf("inline result:\n%s", s)
	}

	// PGP/MIME signed only (RFC 3156 §5), by gpg.
	signed := "Content-Type: text/plain; charset=us-ascii\r\n\r\nsigned text\r\n"
	sig, _ := g.run([]byte(signed), "--armor", "--detach-sign", "--local-user", "bob@partner.test")
	msg3 := "From: bob@partner.test\r\nSubject: signed\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"s1\"\r\n\r\n" +
		"--s1\r\n" + signed + "\r\n--s1\r\nContent-Type: application/pgp-signature\r\n\r\n" + sig + "\r\n--s1--\r\n"
	res, err = Decrypt([]byte(msg3), keys, time.Time{})
	if err != nil || res.Encrypted || res.Signature != SigValid || res.Signer != Fingerprint(bob) {
		t.Fatalf("signed: %+v %v", res, err)
	}
	// Inline cleartext signature by gpg.
	cs, _ := g.run([]byte("Termin bestätigt.\n"), "--clearsign", "--local-user", "bob@partner.test")
	msg4 := "From: bob@partner.test\r\nSubject: cs\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + strings.ReplaceAll(cs, "\n", "\r\n")
	res, err = Decrypt([]byte(msg4), keys, time.Time{})
	if err != nil || res.Encrypted || res.Signature != SigValid || res.Signer != Fingerprint(bob) || !bytes.Contains(res.Message, []byte("Termin bestätigt.")) {
		t.Fatalf("clearsigned: %+v %v", res, err)
	}
	res, _ = Decrypt([]byte(strings.Replace(msg4, "Termin", "Termine", 1)), keys, time.Time{})
	if res.Signature != SigBad {
		t.Errorf("tampered clearsigned: %+v", res)
	}
	tampered := strings.Replace(msg3, "signed text", "signed test", 1)
	if res, _ = Decrypt([]byte(tampered), keys, time.Time{}); res.Signature != SigBad {
		t.Errorf("tampered: %+v", res)
	}
}

func TestV6RoundTrip(t *testing.T) {
	// GnuPG 2.2 does not read RFC 9580 v6 keys; v6 is checked against
	// go-crypto itself, v4 and v6 recipients mixed.
	alice, err := Generate("alice@example.org", GenerateOptions{V6: true})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := Generate("bob@partner.test", GenerateOptions{V6: true})
	if err != nil {
		t.Fatal(err)
	}
	carol, err := Generate("carol@partner.test", GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if alice.PrimaryKey.Version != 6 || carol.PrimaryKey.Version != 4 {
		t.Fatalf("versions %d %d", alice.PrimaryKey.Version, carol.PrimaryKey.Version)
	}
	bobPub, _ := PublicOnly(bob)
	alicePub, _ := PublicOnly(alice)
	for _, rcpts := range [][]*openpgp.Entity{{bobPub, alicePub}, {bobPub, carol}} {
		out, err := Encrypt([]byte(testMsg), EncryptOptions{Recipients: rcpts, Signer: alice, ProtectHeaders: true})
		if err != nil {
			t.Fatal(err)
		}
		res, err := Decrypt(out, openpgp.EntityList{bob, alicePub}, time.Time{})
		if err != nil || !res.Decrypted || res.Signature != SigValid || res.Signer != Fingerprint(alice) {
			t.Fatalf("v6: %+v %v", res, err)
		}
	}
}

// TestRSAKeyFromGPG: GnuPG's RSA keys (its default for years) work both
// ways too.
func TestRSAKeyFromGPG(t *testing.T) {
	g := newGPG(t)
	g.run(nil, "--quick-gen-key", "Rita <rita@partner.test>", "rsa2048", "sign", "never")
	colons, _ := g.run(nil, "--with-colons", "--list-keys", "rita@partner.test")
	var fpr string
	for _, l := range strings.Split(colons, "\n") {
		if f := strings.Split(l, ":"); f[0] == "fpr" && fpr == "" {
			fpr = f[9]
		}
	}
	g.run(nil, "--quick-add-key", fpr, "rsa2048", "encr", "never")
	pub, _ := g.run(nil, "--armor", "--export", "rita@partner.test")
	el, err := ParseKeys([]byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	rita := el[0]
	if err := CanEncrypt(rita, time.Now()); err != nil {
		t.Fatal(err)
	}
	out, err := Encrypt([]byte(testMsg), EncryptOptions{Recipients: []*openpgp.Entity{rita}})
	if err != nil {
		t.Fatal(err)
	}
	plain, status := g.run(armoredPart(t, out), "--status-fd", "2", "--decrypt")
	if !strings.Contains(status, "DECRYPTION_OKAY") || !strings.Contains(plain, "the numbers are up") {
		t.Errorf("gpg:\n%s\n%s", status, plain)
	}
	sec, _ := g.run(nil, "--armor", "--export-secret-keys", "rita@partner.test")
	ring, err := ParseKeys([]byte(sec))
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := g.run([]byte("Content-Type: text/plain\r\n\r\nRSA geht.\r\n"), "--armor", "--encrypt", "--sign", "--local-user", "rita@partner.test", "--recipient", "rita@partner.test")
	msg := "Subject: r\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"r\"\r\n\r\n--r\r\n\r\nVersion: 1\r\n--r\r\n\r\n" + enc + "\r\n--r--\r\n"
	res, err := Decrypt([]byte(msg), ring, time.Time{})
	if err != nil || !res.Decrypted || res.Signature != SigValid || !strings.Contains(string(res.Message), "RSA geht.") {
		t.Errorf("%+v %v", res, err)
	}
}

// TestStrongestCommonCipher (issue 13.5): AES-256 when every recipient's
// key prefers it (it used to fall back to AES-128), AES-128 as soon as one
// key lists only AES-128. GnuPG's DECRYPTION_INFO status names the cipher
// (9 = AES-256, 7 = AES-128).
func TestStrongestCommonCipher(t *testing.T) {
	g := newGPG(t)
	bob := g.newKey("Bob <bob@partner.test>")
	g.run(nil, "--default-preference-list", "AES SHA256 ZLIB", "--quick-gen-key", "Carol <carol@partner.test>", "future-default", "default", "never")
	pub, _ := g.run(nil, "--armor", "--export", "carol@partner.test")
	el, err := ParseKeys([]byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	carol := el[0]
	alice, err := Generate("alice@example.org", GenerateOptions{Name: "Alice"})
	if err != nil {
		t.Fatal(err)
	}
	alicePub, _ := PublicOnly(alice)
	for _, c := range []struct {
		name string
		to   []*openpgp.Entity
		want string
	}{
		{"all prefer AES-256", []*openpgp.Entity{bob, alicePub}, "DECRYPTION_INFO 2 9"},
		{"one key AES-128 only", []*openpgp.Entity{bob, carol, alicePub}, "DECRYPTION_INFO 2 7"},
	} {
		out, err := Encrypt([]byte(testMsg), EncryptOptions{Recipients: c.to})
		if err != nil {
			t.Fatal(err)
		}
		_, status := g.run(armoredPart(t, out), "--status-fd", "2", "--decrypt")
		if !strings.Contains(status, c.want) {
			t.Errorf("%s: want %q in gpg's status:\n%s", c.name, c.want, status)
		}
	}
}
