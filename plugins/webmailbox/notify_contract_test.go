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
	for _, typ := range []string{"webmailbox.activation", "webmailbox.pin", "webmailbox.new_message", "webmailbox.quota_exceeded", "webmailbox.reminder_recipient", "webmailbox.reminder_sender", "webmailbox.reset_link"} { // inactivity_warning: TestNotificationTexts
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

// render feeds ev to the notify plugin and returns the mail's text.
func renderNotice(t *testing.T, ev sdk.Event) string {
	t.Helper()
	nh := &fakeHost{}
	n := &notify.Plugin{}
	if err := n.Configure(context.Background(), sdk.Config{JSON: []byte(`{"from":"secure@org.example","organization":"Example GmbH"}`), DataDir: t.TempDir(), Host: nh}); err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.SourcePlugin = "ev1", "webmailbox"
	if err := n.HandleEvent(context.Background(), ev); err != nil {
		t.Fatalf("notify refused %s: %v", ev.Type, err)
	}
	subs := nh.submissions()
	if len(subs) != 1 {
		t.Fatalf("%s: %d mails", ev.Type, len(subs))
	}
	p, err := ParseMessage([]byte(subs[0].body))
	if err != nil {
		t.Fatal(err)
	}
	return p.Header.Get("Subject") + "\n" + p.Header.Get("Content-Language") + "\n" + p.Text
}

// TestNotificationTexts (issue 14.4-5): each mode's activation mail
// describes that mode's steps; while the recipient's language is unknown
// the mail is in the default language with the other one below; the
// inactivity warning says the whole mailbox goes, and when.
func TestNotificationTexts(t *testing.T) {
	modes := []struct {
		name       string
		change     func(map[string]any)
		want, not  []string
		sender     string
		tan        bool
		lookForPIN bool
	}{
		{"question", nil, []string{"Sicherheitsfrage mit Antwort", "security question with its answer"}, []string{"PIN", "Brief", "weder geändert"}, "alice@org.example", false, false},
		{"none+pin", func(c map[string]any) { c["reset_mode"] = "none"; c["sender_pin"] = true },
			[]string{"weder geändert noch zurückgesetzt", "never be changed or reset", "PIN ein, die Ihnen alice@org.example", "PIN that alice@org.example"},
			[]string{"Sicherheitsfrage", "security question", "Brief"}, "alice@org.example", false, true},
		{"tan", func(c map[string]any) { c["require_tan"] = true }, []string{"Code aus dem Brief", "code from the letter", "Sicherheitsfrage"}, []string{"PIN"}, "alice@org.example", true, false},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m.change)
			e.divert(testMsg, "bob@partner.test")
			evs := e.host.eventsOf("webmailbox.activation")
			if len(evs) != 1 {
				t.Fatalf("activation events: %+v", evs)
			}
			text := renderNotice(t, evs[0])
			for _, w := range m.want {
				if !strings.Contains(text, w) {
					t.Errorf("activation mail lacks %q:\n%s", w, text)
				}
			}
			for _, w := range m.not {
				if strings.Contains(text, w) {
					t.Errorf("activation mail mentions %q:\n%s", w, text)
				}
			}
			// German (the default) first, English below.
			if de, en := strings.Index(text, "Guten Tag"), strings.Index(text, "Hello"); de < 0 || en < de || !strings.Contains(text, "\nde, en\n") {
				t.Errorf("not German first, English below:\n%s", text)
			}
			// The activation page says the same.
			r := e.browser().get(e.activationLink("bob@partner.test"))
			if m.tan != strings.Contains(r.body, `name="tan"`) || m.lookForPIN != strings.Contains(r.body, `name="pin"`) {
				t.Errorf("activation page fields do not match the mode")
			}
		})
	}

	// Once the recipient chose English, English only.
	e, b := loggedIn(t, nil)
	_ = b
	e.divert(testMsg, "bob@partner.test")
	nm := e.host.eventsOf("webmailbox.new_message")
	if text := renderNotice(t, nm[len(nm)-1]); strings.Contains(text, "Guten Tag") || !strings.Contains(text, "Hello") {
		t.Errorf("new message mail not in the chosen language:\n%s", text)
	}
	// The inactivity warning: the whole mailbox, and the date.
	e.clock.Add(352 * 24 * time.Hour)
	if err := e.sv.Housekeeping(context.Background()); err != nil {
		t.Fatal(err)
	}
	iw := e.host.eventsOf("webmailbox.inactivity_warning")
	if len(iw) != 1 {
		t.Fatalf("inactivity warnings: %+v", iw)
	}
	text := renderNotice(t, iw[0])
	for _, w := range []string{"will be deleted", "deleted completely", "every message", "November 2027", "log in once"} {
		if !strings.Contains(text, w) {
			t.Errorf("inactivity warning lacks %q:\n%s", w, text)
		}
	}
	if strings.Contains(text, "unread") || strings.Contains(text, "waiting") {
		t.Errorf("inactivity warning reads like an unread-message reminder:\n%s", text)
	}
}
