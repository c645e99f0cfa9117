package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/testbed/remotemta"
)

// TestWebMailboxFallback: mail that must be encrypted to a recipient with
// no certificate or key goes into the web mailbox; the notify plugin
// mails the recipient an activation link through our queue; the link
// opens the activation page.
func TestWebMailboxFallback(t *testing.T) {
	wmb := pluginBinary(t, "webmailbox")
	notify := pluginBinary(t, "notify")
	web := freeLocalAddr(t)
	e, m := remoteEnv(t, remotemta.Config{}, fmt.Sprintf(`
[[plugin]]
name = "notify"
path = %q
[plugin.config]
from = "notices@example.test"

[[plugin]]
name = "webmailbox"
path = %q
timeout = "60s"
[plugin.config]
base_url = "http://%s"
listen = %q
allowed_recipients = ["*@example.test"]
reset_mode = "question"
kdf = { time = 1, memory_kib = 8192, threads = 1 }

[[encryption.rule]]
senders = ["alice@example.test"]
recipients = ["remote.test"]
encrypt = "required"
methods = ["webmailbox"]
`, notify, wmb, web, web))
	e.waitPluginsRunning(2)
	s := e.login()
	if err := send(s, testUser, []string{"friend@remote.test"}, "From: alice@example.test\r\nTo: friend@remote.test\r\nSubject: the contract\r\n\r\nConfidential terms.\r\n"); err != nil {
		t.Fatal(err)
	}
	// What reaches friend@remote.test is the notification, never the mail.
	msgs, err := m.WaitMessages(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	note := strings.ReplaceAll(string(msgs[0].Data), "=\r\n", "")
	if strings.Contains(note, "Confidential terms.") {
		t.Fatalf("the protected mail itself went out:\n%s", note)
	}
	if msgs[0].To()[0] != "friend@remote.test" || !strings.Contains(note, "X-Posthorn-Event: webmailbox.activation") {
		t.Fatalf("notification:\n%s", note)
	}
	link := regexp.MustCompile(`http://` + regexp.QuoteMeta(web) + `/[^\s"<>]+`).FindString(note)
	if link == "" {
		t.Fatalf("no activation link in:\n%s", note)
	}
	link = strings.ReplaceAll(link, "=3D", "=")
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(strings.ToLower(string(page)), "<form") {
		t.Fatalf("activation link: %d\n%s", resp.StatusCode, page)
	}
}
