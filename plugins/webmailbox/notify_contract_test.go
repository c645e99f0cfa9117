package webmailbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/plugins/notify"
	"github.com/posthorn/posthorn/sdk"
)

// TestEventsRenderWithNotify feeds every event this plugin emits into the
// notify plugin (in process) and checks the mails it would queue: the
// events carry what notify's templates need, in both languages.
func TestEventsRenderWithNotify(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["sender_pin"] = true; c["quota_bytes"] = 3 * len(testMsg) })
	e.divert(testMsg, "bob@partner.test") // activation + pin
	b := e.browser()
	pin := e.host.eventsOf("webmailbox.pin")[0].Attributes["pin"]
	b.activate("bob@partner.test", "correct horse", url2(qa, "pin", pin))
	e.sv.RequestReset("bob@partner.test", "192.0.2.1") // reset_link
	e.sv.bg.Wait()
	e.divert(testMsg, "bob@partner.test") // new_message
	e.divert(testMsg, "bob@partner.test")
	e.divert(testMsg, "bob@partner.test") // quota_exceeded
	e.clock.Add(100 * time.Hour)
	e.sv.Housekeeping(context.Background()) // reminders

	e.host.mu.Lock()
	events := append([]sdk.Event(nil), e.host.events...)
	e.host.mu.Unlock()
	seen := map[string]bool{}
	for i, ev := range events {
		ev.ID = "ev" + itoa(int64(i))
		ev.SourcePlugin = "webmailbox"
		seen[ev.Type] = true
		for _, lang := range []string{"de", "en"} {
			nh := &fakeHost{}
			n := &notify.Plugin{}
			if err := n.Configure(context.Background(), sdk.Config{JSON: []byte(`{"from":"secure@org.example"}`), DataDir: t.TempDir(), Host: nh}); err != nil {
				t.Fatal(err)
			}
			ev.Language = lang
			if err := n.HandleEvent(context.Background(), ev); err != nil {
				t.Errorf("notify refused %s (%s): %v", ev.Type, lang, err)
				continue
			}
			subs := nh.submissions()
			if len(subs) != 1 {
				t.Errorf("%s: %d mails", ev.Type, len(subs))
				continue
			}
			p, err := ParseMessage([]byte(subs[0].body))
			if err != nil {
				t.Errorf("%s: notify's mail does not parse: %v", ev.Type, err)
				continue
			}
			if l := ev.Attributes["link"]; l != "" && !strings.Contains(p.Text, l) {
				t.Errorf("%s mail (%s) lacks the link %s:\n%s", ev.Type, lang, l, p.Text)
			}
			if pin := ev.Attributes["pin"]; pin != "" && !strings.Contains(p.Text, pin) {
				t.Errorf("pin mail lacks the PIN")
			}
		}
	}
	for _, typ := range []string{"webmailbox.activation", "webmailbox.pin", "webmailbox.new_message", "webmailbox.quota_exceeded", "webmailbox.reminder_recipient", "webmailbox.reminder_sender", "webmailbox.reset_link"} {
		if !seen[typ] {
			t.Errorf("scenario emitted no %s", typ)
		}
	}
}

func url2(v map[string][]string, k, val string) map[string][]string {
	out := map[string][]string{k: {val}}
	for a, b := range v {
		out[a] = b
	}
	return out
}
