package daemon_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/browsertest"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// TestWebMailboxReplyToStaffEncrypted (issue 14.9): a reply written in
// the web mailbox goes through the encryption policy chain like any mail,
// so a member of staff whose certificate the smime plugin knows receives
// it encrypted, and decrypts it with openssl cms.
func TestWebMailboxReplyToStaffEncrypted(t *testing.T) {
	browsertest.Path(t)
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (.ci/run installs it)")
	}
	dir := shortTempDir(t)
	wmb, notify, smime := pluginBinary(t, "webmailbox"), pluginBinary(t, "notify"), pluginBinary(t, "smime")
	pki := newSMIMEPKI(t, dir)
	staffCrt, staffKey := pki.issue("staff", "staff@remote.test")
	aliceCrt, aliceKey := pki.issue("alice", "alice@example.test")
	trust := pki.caFile("trust.pem")
	web := freeLocalAddr(t)
	e, m := remoteEnv(t, remotemta.Config{}, fmt.Sprintf(`
[[plugin]]
name = "notify"
path = %q
[plugin.config]
from = "notices@example.test"

[[plugin]]
name = "smime"
path = %q
[plugin.config]
trust_store = %q
internal_domains = ["example.test"]
[[plugin.config.identity]]
cert = %q
key = %q

[[plugin]]
name = "webmailbox"
path = %q
timeout = "60s"
[plugin.config]
base_url = "http://%s"
listen = %q
allowed_recipients = ["*@remote.test", "*@example.test"]
kdf = { time = 1, memory_kib = 8192, threads = 1 }

# The external partner has no key: the web mailbox (mail from alice; the
# notifications themselves must not go there).
[[encryption.rule]]
senders = ["alice@example.test"]
recipients = ["friend@remote.test"]
encrypt = "required"
methods = ["smime", "webmailbox"]

# Everyone else at remote.test: encrypted when a certificate is known.
[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "opportunistic"
methods = ["smime"]
`, notify, smime, trust, aliceCrt, aliceKey, wmb, web, web))
	e.waitPluginsRunning(3)

	// staff@remote.test signs a mail to alice: the smime plugin harvests
	// the certificate on the way in.
	entity := filepath.Join(dir, "entity.txt")
	os.WriteFile(entity, []byte("Content-Type: text/plain\r\n\r\nMy certificate, for encrypted replies.\r\n"), 0o600)
	signed, err := exec.Command("openssl", "cms", "-sign", "-in", entity, "-signer", staffCrt, "-inkey", staffKey,
		"-from", "staff@remote.test", "-to", "alice@example.test", "-subject", "signed").Output()
	if err != nil {
		t.Fatal(err)
	}
	c := e.dial(smtpd.MX)
	if err := send(c, "staff@remote.test", []string{"alice@example.test"}, strings.ReplaceAll(strings.ReplaceAll(string(signed), "\r\n", "\n"), "\n", "\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := e.waitMail("example.test", "alice", 1, 20*time.Second)[0]; !strings.Contains(got, "signature=valid") {
		t.Fatalf("the signed mail was not verified:\n%s", got)
	}

	// Alice writes to the partner, who has no key: the web mailbox.
	s := e.login()
	if err := send(s, testUser, []string{"friend@remote.test"}, "From: alice@example.test\r\nTo: friend@remote.test\r\nSubject: the contract\r\n\r\nPlease ask our staff.\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs, err := m.WaitMessages(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	note := strings.ReplaceAll(strings.ReplaceAll(string(msgs[0].Data), "=\r\n", ""), "=3D", "=")
	link := regexp.MustCompile(`http://` + regexp.QuoteMeta(web) + `/activate\?t=[A-Za-z0-9_-]+`).FindString(note)
	if link == "" {
		t.Fatalf("no activation link in the notification:\n%s", note)
	}

	// The partner activates, reads and replies to staff@remote.test.
	ctx := browsertest.Start(t, browsertest.Options{})
	err = chromedp.Run(ctx,
		chromedp.Navigate(link),
		chromedp.WaitVisible(`#pw`, chromedp.ByID),
		chromedp.SendKeys(`#pw`, "a long passphrase", chromedp.ByID),
		chromedp.SendKeys(`#pw2`, "a long passphrase", chromedp.ByID),
		chromedp.SendKeys(`#q`, "First pet?", chromedp.ByID),
		chromedp.SendKeys(`#a`, "Rex", chromedp.ByID),
		clickAndLoad(`form[action$="/activate"] button[type=submit]`, `form[action$="/login"]`),
		chromedp.SetValue(`#addr`, "friend@remote.test", chromedp.ByID),
		chromedp.SendKeys(`#pw`, "a long passphrase", chromedp.ByID),
		clickAndLoad(`form[action$="/login"] button[type=submit]`, `table.list`),
		clickAndLoad(`table.list a`, `pre.body`),
		clickAndLoad(`a[href*="compose?reply="]`, `#body`),
		chromedp.SetValue(`#to`, "staff@remote.test", chromedp.ByID),
		chromedp.SendKeys(`#body`, "Question for staff: clause 7.\n", chromedp.ByID),
		clickAndLoad(`form[action$="/send"] button[type=submit]`, `.notice`),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}

	// What reaches staff@remote.test is S/MIME, and staff can read it.
	var toStaff []byte
	deadline := time.Now().Add(30 * time.Second)
	for toStaff == nil {
		msgs, _ := m.WaitMessages(2, time.Until(deadline))
		for _, msg := range msgs {
			if len(msg.To()) > 0 && msg.To()[0] == "staff@remote.test" {
				toStaff = msg.Data
			}
		}
		if toStaff == nil && time.Now().After(deadline) {
			t.Fatalf("no reply reached staff@remote.test: %d messages", len(msgs))
		}
		if toStaff == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !bytes.Contains(toStaff, []byte("application/pkcs7-mime")) || bytes.Contains(toStaff, []byte("clause 7")) {
		t.Fatalf("the reply to staff is not encrypted:\n%s", toStaff)
	}
	cmd := exec.Command("openssl", "cms", "-decrypt", "-recip", staffCrt, "-inkey", staffKey)
	cmd.Stdin = bytes.NewReader(toStaff)
	plain, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl cms -decrypt: %v\n%s", err, plain)
	}
	if !bytes.Contains(plain, []byte("Question for staff: clause 7.")) || !bytes.Contains(toStaff, []byte("From: <friend@remote.test>")) {
		t.Fatalf("decrypted reply:\n%s", plain)
	}
}
