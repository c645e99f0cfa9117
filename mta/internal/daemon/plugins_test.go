package daemon_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/daemon"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/testbed/remotemta"
	"github.com/posthorn/posthorn/testbed/wait"
)

// testPlugin is mta/pluginhost's test plugin (a real process whose
// behaviour is chosen by the sender's local part), built once.
func testPlugin(t *testing.T) string {
	t.Helper()
	return buildOnce(t, "tp", "../pluginhost/internal/testplugin")
}

func pluginConf(t *testing.T, extra string) string {
	return pluginConfWith(t, "", extra)
}

func pluginConfWith(t *testing.T, pluginKeys, extra string) string {
	return fmt.Sprintf(`
[[plugin]]
name = "tp"
path = %q
timeout = "3s"
%s
[plugin.config]
name = "tp"
%s`, testPlugin(t), pluginKeys, extra)
}

func TestInboundPluginVerdicts(t *testing.T) {
	e := startEnv(t, pluginConf(t, ""))
	waitPlugin(t, e, "running")
	c := e.dial(smtpd.MX)
	if err := send(c, "reject@example.com", []string{"bob@example.test"}, testMessage("p1")); codeOf(err) != 550 {
		t.Fatalf("reject@: want 550 from the plugin, got %v", err)
	}
	if err := send(c, "count@example.com", []string{"bob@example.test"}, testMessage("p2")); err != nil {
		t.Fatal(err)
	}
	m := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]
	if !strings.Contains(m, "X-Count: ") || !strings.Contains(m, "X-Sha256: ") {
		t.Fatalf("plugin headers missing:\n%s", m)
	}
	// A plugin that crashes mid-inspection: 451 (on_failure = tempfail),
	// nothing queued; the supervisor restarts it and mail flows again.
	if err := send(c, "crash@example.com", []string{"bob@example.test"}, testMessage("p3")); codeOf(err) != 451 {
		t.Fatalf("crash@: want 451, got %v", err)
	}
	waitRestarted(t, e, 1)
	if err := send(c, "after@example.com", []string{"bob@example.test"}, testMessage("p4")); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	e.waitMail("example.test", "bob", 2, 10*time.Second)
}

// waitRestarted waits until plugin tp is running again after n restarts.
func waitRestarted(t *testing.T, e *testEnv, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range e.d.PluginStatus() {
			if s.Name == "tp" && s.State == "running" && s.Restarts >= n {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("plugin tp not restarted: %+v", e.d.PluginStatus())
}

func waitPlugin(t *testing.T, e *testEnv, state string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range e.d.PluginStatus() {
			if s.Name == "tp" && s.State == state {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("plugin tp never %s: %+v", state, e.d.PluginStatus())
}

func TestEncryptionChain(t *testing.T) {
	e, m := remoteEnv(t, remotemta.Config{}, pluginConf(t, `
[encryption]
methods = ["tp"]
[[encryption.rule]]
recipients = ["secret.remote.test"]
encrypt = "required"
methods = ["tp"]
`))
	e.dns.Zone("secret.remote.test", 0).MX("secret.remote.test.", 10, "mx.remote.test.")
	waitPlugin(t, e, "running")
	c := e.dial(smtpd.MX)
	// Required, and the method can't handle "no@": bounced with the reason,
	// never sent in plaintext.
	if err := send(c, "bob@example.test", []string{"no@secret.remote.test"}, testMessage("enc1")); err != nil {
		t.Fatal(err)
	}
	b := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]
	if !strings.Contains(b, "Action: failed") || !strings.Contains(b, "encryption is required by rule 1") {
		t.Fatalf("bounce:\n%s", b)
	}
	// The subject tag makes encryption required for any recipient; the tag
	// and the trigger header are removed before sending.
	msg := "From: bob@example.test\r\nSubject: [secure] quarterly figures\r\nX-Posthorn-Encrypt: required\r\nMessage-ID: <tag@example.test>\r\n\r\nbody\r\n"
	if err := send(c, "bob@example.test", []string{"x@remote.test"}, msg); err != nil {
		t.Fatal(err)
	}
	got, err := m.WaitMessages(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	data := string(got[0].Data)
	if !strings.Contains(data, "Subject: quarterly figures") || strings.Contains(data, "[secure]") || strings.Contains(data, "X-Posthorn-Encrypt") {
		t.Fatalf("tag or trigger header not removed:\n%s", data)
	}
	if len(m.Messages()) != 1 {
		t.Fatalf("%d messages at the remote; the bounced one must never be sent", len(m.Messages()))
	}
}

func TestDivertedPendingUntilConfirmed(t *testing.T) {
	e, m := remoteEnv(t, remotemta.Config{}, pluginConf(t, `
[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "required"
methods = ["tp"]
`))
	waitPlugin(t, e, "running")
	c := e.dial(smtpd.MX)
	if err := send(c, "divert@example.test", []string{"x@remote.test"}, testMessage("div")); err != nil {
		t.Fatal(err)
	}
	// The plugin takes the recipient over and confirms it; the message
	// leaves the queue without being sent anywhere.
	deadline := time.Now().Add(10 * time.Second)
	for len(e.d.Queue.List()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still queued: %+v", e.d.Queue.List()[0].Recipients[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(m.Messages()) != 0 {
		t.Fatal("diverted mail was also sent")
	}
}

func TestPluginDownDefersRequiredMail(t *testing.T) {
	// on_failure = "accept": the inbound hook of the dead plugin does not
	// hold up reception; its outbound part defers the encrypted recipient.
	e, m := remoteEnv(t, remotemta.Config{}, pluginConfWith(t, `on_failure = "accept"`, `
[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "required"
methods = ["tp"]
`))
	waitPlugin(t, e, "running")
	pid := 0
	for _, s := range e.d.PluginStatus() {
		pid = s.Pid
	}
	syscall.Kill(pid, syscall.SIGKILL)
	c := e.dial(smtpd.MX)
	if err := send(c, "bob@example.test", []string{"x@remote.test"}, testMessage("down")); err != nil {
		t.Fatal(err)
	}
	// Deferred while the plugin is down, delivered once it is back; never
	// in plaintext in between.
	got, err := m.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatalf("not delivered after the plugin came back: %v", err)
	}
	if !strings.Contains(string(got[0].Data), "Message-ID: <down@example.com>") {
		t.Fatalf("%s", got[0].Data)
	}
	var restarts int
	for _, s := range e.d.PluginStatus() {
		restarts = s.Restarts
	}
	if restarts < 1 {
		t.Fatalf("plugin not restarted: %+v", e.d.PluginStatus())
	}
}

// TestOpportunisticOneCall: with one method the plugin decides and
// transforms in one call (protocol minor 6). A recipient it cannot handle
// goes out plain (opportunistic), one it can gets the transformed message
// of the same call. A call that breaks before the plugin's answers arrive
// (CanHandle fails, the plugin dies in Transform) defers the message:
// never plaintext to a recipient the plugin might have encrypted for.
func TestOpportunisticOneCall(t *testing.T) {
	e, m := remoteEnv(t, remotemta.Config{}, pluginConf(t, `
[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "opportunistic"
methods = ["tp"]
`))
	waitPlugin(t, e, "running")
	c := e.dial(smtpd.MX)
	if err := send(c, "split@example.test", []string{"a@remote.test", "no@remote.test"}, testMessage("one")); err != nil {
		t.Fatal(err)
	}
	got, err := m.WaitMessages(2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range got {
		if len(g.Rcpts) != 1 {
			t.Fatalf("message for %d recipients", len(g.Rcpts))
		}
		transformed := strings.HasPrefix(string(g.Data), "To: <a@remote.test>")
		if (g.Rcpts[0].Addr == "a@remote.test") != transformed {
			t.Errorf("%s: transformed %v:\n%.200s", g.Rcpts[0].Addr, transformed, g.Data)
		}
	}
	for _, from := range []string{"cherr", "tcrash"} {
		if err := send(c, from+"@example.test", []string{"x@remote.test"}, testMessage(from)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			var diag string
			for _, env := range e.d.Queue.List() {
				if env.From == from+"@example.test" && env.Recipients[0].Attempts > 0 {
					diag = env.Recipients[0].Diagnostic
				}
			}
			if strings.Contains(diag, "encryption method tp failed") {
				break
			}
			if diag != "" || time.Now().After(deadline) {
				t.Fatalf("%s: diagnostic %q, want a deferral for the failed method", from, diag)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if n := len(m.Messages()); n != 2 {
		t.Fatalf("%d messages at the remote, want 2: a failed call must not send plaintext", n)
	}
}

// TestNotifyThroughTheRealQueue: an event for the notify plugin becomes a
// localized mail that goes through Host.Submit, our queue and local
// delivery.
func TestNotifyThroughTheRealQueue(t *testing.T) {
	bin := pluginBinary(t, "notify")
	e := startEnv(t, fmt.Sprintf(`
[[plugin]]
name = "notify"
path = %q
[plugin.config]
from = "postmaster@example.test"
default_language = "en"
`, bin))
	e.waitPluginsRunning(1)
	e.d.EmitForTest(sdk.Event{ID: "ev-1", Type: "webmailbox.activation", Recipient: "bob@example.test", Language: "de",
		SourcePlugin: "webmailbox", Time: time.Now(),
		Attributes: map[string]string{"link": "https://mail.example.test/activate/abc", "expires": time.Now().Add(72 * time.Hour).Format(time.RFC3339)}})
	m := e.waitMail("example.test", "bob", 1, 15*time.Second)[0]
	for _, want := range []string{"From: ", "postmaster@example.test", "Content-Language: de", "X-Posthorn-Event: webmailbox.activation",
		"Auto-Submitted: auto-generated", "Received: by mx.example.test (Posthorn, from plugin notify)"} {
		if !strings.Contains(m, want) {
			t.Errorf("notification lacks %q:\n%s", want, m)
		}
	}
	if !strings.Contains(strings.ReplaceAll(m, "=\n", ""), "activate/abc") {
		t.Errorf("no activation link:\n%s", m)
	}
}

// TestSubmitIdempotentAcrossRestarts: a plugin that retries a submission
// with the same key, even after a restart and after the first copy was
// delivered, queues nothing new.
func TestSubmitIdempotentAcrossRestarts(t *testing.T) {
	e := startEnv(t, "")
	env := &sdk.Envelope{MailFrom: "notify@example.test", Recipients: []sdk.Recipient{{Address: "bob@example.test"}}}
	msg := "Subject: once\r\nMessage-ID: <once@example.test>\r\n\r\nonce\r\n"
	id, err := e.d.SubmitForTest(env, msg, "notify:ev-42")
	if err != nil {
		t.Fatal(err)
	}
	if id2, err := e.d.SubmitForTest(env, msg, "notify:ev-42"); id2 != id || err == nil {
		t.Fatalf("second submit: %s %v", id2, err)
	}
	e.waitMail("example.test", "bob", 1, 10*time.Second)
	// Restart on the same state.
	e.d.Shutdown(t.Context())
	d2, err := daemon.Start(e.cfg, e.d.Logger(), daemon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Shutdown(t.Context())
	if id3, err := d2.SubmitForTest(env, msg, "notify:ev-42"); id3 != id || err == nil {
		t.Fatalf("after restart: %s %v", id3, err)
	}
	if _, err := d2.SubmitForTest(env, msg, "notify:ev-43"); err != nil {
		t.Fatal(err)
	}
	e.waitMail("example.test", "bob", 2, 10*time.Second)
	// With the queue empty, no third copy is on its way.
	wait.For(t, 15*time.Second, "an empty queue", func() bool { return len(d2.Queue.List()) == 0 })
	if n := e.mailCount("example.test", "bob"); n != 2 {
		t.Fatalf("%d messages, want 2", n)
	}
}

// TestInboundFilterBeforeSpooling (issue 19.4): mail that no inbound
// plugin's filter selects is queued as it streams in, without being
// spooled for the plugins first — and arrives as it did that way: our
// forged Authentication-Results stripped, the rest byte for byte, the
// plugin not asked. Mail the filter selects is still inspected, and a
// header too long to decide on in memory takes the spooling path.
func TestInboundFilterBeforeSpooling(t *testing.T) {
	e := startEnv(t, pluginConf(t, `filter_header = "X-Want"`))
	waitPlugin(t, e, "running")
	c := e.dial(smtpd.MX)
	forged := "Authentication-Results: mx.example.test; dkim=pass header.d=forged.test\r\n"
	body := "\r\nHello.\r\n" + forged + "..dots\r\n"
	long := "X-Long:" + strings.Repeat(" "+strings.Repeat("x", 70)+"\r\n", 1000) // 72 KB folded
	for i, m := range []struct {
		hdr       string
		inspected bool
	}{
		{"From: <a@example.com>\r\n" + forged + "Subject: one\r\n folded\r\nX-Other: 1\r\n", false},
		{"From: <a@example.com>\r\n" + forged + "X-Want: yes\r\nSubject: two\r\n", true},
		{"From: <a@example.com>\r\n" + forged + long + "Subject: three\r\n", false},
		{forged + "x-want: lower case\r\nSubject: four\r\n", true},
	} {
		if err := send(c, "count@example.com", []string{"bob@example.test"}, m.hdr+body); err != nil {
			t.Fatal(i, err)
		}
		got := e.waitMail("example.test", "bob", i+1, 10*time.Second)
		var msg string
		for _, g := range got {
			if strings.Contains(g, "Subject: "+[]string{"one", "two", "three", "four"}[i]) {
				msg = g
			}
		}
		if msg == "" {
			t.Fatalf("%d: not delivered", i)
		}
		if strings.Contains(msg, "X-Count: ") != m.inspected {
			t.Fatalf("%d: inspected %v, want %v:\n%.600s", i, !m.inspected, m.inspected, msg)
		}
		// The maildir has LF line ends.
		want := strings.ReplaceAll(strings.Replace(m.hdr, forged, "", 1)+body, "\r\n", "\n")
		if !strings.HasSuffix(msg, want) || strings.Count(msg, "Authentication-Results") != 1 {
			t.Fatalf("%d: delivered\n%.600q\nwant it to end in\n%.600q", i, msg, want)
		}
	}
}
