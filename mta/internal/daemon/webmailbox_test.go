package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// TestWebMailboxFallback: mail that must be encrypted to a recipient with
// no certificate or key goes into the web mailbox; the notify plugin
// mails the recipient an activation link through our queue; the link
// opens the activation page.
func TestWebMailboxFallback(t *testing.T) {
	dir := shortTempDir(t)
	build := func(name, pkg string) string {
		bin := filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return bin
	}
	wmb := build("posthorn-webmailbox", "github.com/posthorn/posthorn/plugins/webmailbox/cmd/posthorn-webmailbox")
	notify := build("posthorn-notify", "github.com/posthorn/posthorn/plugins/notify/cmd/posthorn-notify")
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		running := 0
		for _, s := range e.d.PluginStatus() {
			if s.State == "running" {
				running++
			}
		}
		if running == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugins not running: %+v", e.d.PluginStatus())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := e.dialTLS(smtpd.Submission)
	if err := s.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
		t.Fatal(err)
	}
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
