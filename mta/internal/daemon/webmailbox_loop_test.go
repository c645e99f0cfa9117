package daemon_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/testbed/remotemta"
)

// TestWebMailboxNotificationLoopGuard: a rule sends everyone at
// remote.test to the web mailbox for every sender (no senders), so it
// also matches the web mailbox's own activation mail to them, which the
// notify plugin submits. Without the loop guard that mail went into the
// web mailbox, which notified again, endlessly, and the recipient never
// heard of it. With it the activation mail (Auto-Submitted, from a
// plugin) goes out as it is, once; the protected mail itself stays in
// the web mailbox — also when its SMTP client wrote Auto-Submitted on
// it, since only plugins' mail counts. The web mailbox plugin runs under
// another name ("securebox"): it is known by its binary.
func TestWebMailboxNotificationLoopGuard(t *testing.T) {
	wmb, notify := pluginBinary(t, "webmailbox"), pluginBinary(t, "notify")
	web := freeLocalAddr(t)
	e, m := remoteEnv(t, remotemta.Config{}, fmt.Sprintf(`
[[plugin]]
name = "notify"
path = %q
[plugin.config]
from = "notices@example.test"

[[plugin]]
name = "securebox"
path = %q
timeout = "60s"
[plugin.config]
base_url = "http://%s"
listen = %q
allowed_recipients = ["*@example.test"]
kdf = { time = 1, memory_kib = 8192, threads = 1 }

[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "required"
methods = ["securebox"]
`, notify, wmb, web, web))
	if w := e.cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0], "encryption.rule[0]") {
		t.Errorf("config warnings %q, want one for rule 0", w)
	}
	e.waitPluginsRunning(2)
	s := e.login()
	if err := send(s, testUser, []string{"friend@remote.test"}, "From: alice@example.test\r\nTo: friend@remote.test\r\nSubject: the contract\r\n"+
		"Auto-Submitted: auto-generated\r\n\r\nConfidential terms.\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitMessages(1, 60*time.Second); err != nil {
		t.Fatalf("no activation mail reached the recipient (a loop?): %v; queue: %d", err, len(e.d.Queue.List()))
	}
	waitQueueEmptyFor(t, e, 60*time.Second)
	msgs := m.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d mails reached remote.test, want the one activation mail", len(msgs))
	}
	note := strings.ReplaceAll(string(msgs[0].Data), "=\r\n", "")
	if strings.Contains(note, "Confidential terms.") {
		t.Fatalf("the protected mail itself went out:\n%s", note)
	}
	if msgs[0].To()[0] != "friend@remote.test" || msgs[0].From != "notices@example.test" ||
		!strings.Contains(note, "X-Posthorn-Event: webmailbox.activation") || !strings.Contains(note, "Auto-Submitted: auto-generated") {
		t.Fatalf("not the activation mail:\n%s", note)
	}
}

// waitQueueEmptyFor waits until the queue is empty.
func waitQueueEmptyFor(t *testing.T, e *testEnv, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for len(e.d.Queue.List()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("queue not empty after %v: %d messages", limit, len(e.d.Queue.List()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
