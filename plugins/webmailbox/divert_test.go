package webmailbox

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/sdk"
)

func TestDivertStoresEncryptedAndNotifies(t *testing.T) {
	e := newEnv(t, nil)
	res := e.divert(testMsg, "Bob@Partner.test")
	if res.Action != sdk.OutboundDiverted || res.Pending {
		t.Fatalf("Transform = %+v, want diverted, not pending", res)
	}
	ctx := context.Background()
	mb, err := e.sv.store.GetMailbox(ctx, "bob@partner.test")
	if err != nil {
		t.Fatalf("mailbox not created: %v", err)
	}
	if mb.State != StatePending || mb.WrappedPW != nil || mb.WrappedMK == nil {
		t.Fatalf("new mailbox = %+v", mb)
	}
	ms, err := e.sv.store.ListMessages(ctx, "bob@partner.test", "inbox")
	if err != nil || len(ms) != 1 || !ms[0].Unread || ms[0].Size != int64(len(testMsg)) {
		t.Fatalf("messages = %+v, %v", ms, err)
	}
	if mb.UsedBytes != int64(len(testMsg)) {
		t.Errorf("used bytes = %d", mb.UsedBytes)
	}
	act := e.host.eventsOf("webmailbox.activation")
	if len(act) != 1 {
		t.Fatalf("activation events = %+v", e.host.events)
	}
	ev := act[0]
	if ev.Recipient != "bob@partner.test" || ev.Sender != "alice@org.example" || ev.QueueID != "Q1" ||
		!strings.HasPrefix(ev.Attributes["link"], "https://mail.example.org/box/activate?t=") || ev.Attributes["expires"] == "" || ev.Language != "de" {
		t.Errorf("activation event = %+v", ev)
	}

	// The second message goes to the same mailbox; still pending, so a
	// fresh activation link goes out.
	e.divert(strings.Replace(testMsg, "Quarterly", "Second", 1), "bob@partner.test")
	if ms, _ := e.sv.store.ListMessages(ctx, "bob@partner.test", "inbox"); len(ms) != 2 {
		t.Fatalf("after a second message: %d messages", len(ms))
	}
	if n := len(e.host.eventsOf("webmailbox.activation")); n != 2 {
		t.Errorf("activation events = %d, want 2", n)
	}

	// No plaintext of the message anywhere in the database files.
	e.p.mu.Lock()
	e.p.shutdownLocked() // close the database: checkpoint the WAL
	e.p.mu.Unlock()
	files, _ := filepath.Glob(filepath.Join(e.dir, "webmailbox.db*"))
	if len(files) == 0 {
		t.Fatal("no database file")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{"SECRETSUBJECT", "SECRETBODY", "Quarterly", "alice@org.example", "figures.pdf", "JVBERi0xLjQKU0VDUkVUQVRUQUNI"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s contains plaintext %q", filepath.Base(f), secret)
			}
		}
	}
}

func TestDivertSeveralRecipientsAndQuota(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["quota_bytes"] = len(testMsg) + 10 })
	res := e.divert(testMsg, "a@x.test", "b@y.test")
	if res.Action != sdk.OutboundDiverted || res.Pending {
		t.Fatalf("first: %+v", res)
	}
	// a's mailbox is now nearly full; b deletes nothing either: both over.
	// Make b's fit by giving it an empty mailbox instead.
	res = e.divert(testMsg, "a@x.test", "c@z.test")
	if res.Action != sdk.OutboundDiverted || !res.Pending {
		t.Fatalf("over quota: %+v, want diverted pending", res)
	}
	e.host.mu.Lock()
	confs := append([]sdk.Confirmation(nil), e.host.confs...)
	e.host.mu.Unlock()
	if len(confs) != 2 {
		t.Fatalf("confirmations = %+v", confs)
	}
	for _, c := range confs {
		want := sdk.ConfirmDelivered
		if c.Recipient == "a@x.test" {
			want = sdk.ConfirmFailed
		}
		if c.Outcome != want || c.QueueID != "Q2" {
			t.Errorf("confirmation %+v, want outcome %v", c, want)
		}
	}
	q := e.host.eventsOf("webmailbox.quota_exceeded")
	if len(q) != 1 || q[0].Recipient != "a@x.test" || q[0].Attributes["limit"] == "" || q[0].Attributes["link"] == "" {
		t.Errorf("quota events = %+v", q)
	}
	if ms, _ := e.sv.store.ListMessages(context.Background(), "a@x.test", ""); len(ms) != 1 {
		t.Errorf("a has %d messages, want 1", len(ms))
	}
}

func TestSenderPIN(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["sender_pin"] = true })
	e.divert(testMsg, "bob@partner.test")
	pins := e.host.eventsOf("webmailbox.pin")
	if len(pins) != 1 || pins[0].Sender != "alice@org.example" || len(pins[0].Attributes["pin"]) != 6 {
		t.Fatalf("pin events = %+v", pins)
	}
	// A further message before activation: the same PIN to its sender again.
	e.divert(testMsg, "bob@partner.test")
	pins = e.host.eventsOf("webmailbox.pin")
	if len(pins) != 2 || pins[1].Attributes["pin"] != pins[0].Attributes["pin"] || pins[1].Attributes["repeated"] != "true" {
		t.Errorf("repeated PIN events = %+v", pins)
	}
	// The sender can also ask for it again, any time before activation.
	if pin, err := e.sv.PINFor(context.Background(), "Bob@Partner.test"); err != nil || pin != pins[0].Attributes["pin"] {
		t.Errorf("PINFor = %q, %v", pin, err)
	}
	// Not after activation.
	b := e.browser()
	if r := b.activate("bob@partner.test", "correct horse", url.Values{"question": {"q?"}, "answer": {"abc"}, "pin": {pins[0].Attributes["pin"]}}); r.code != 303 {
		t.Fatalf("activation with PIN: %d", r.code)
	}
	e.divert(testMsg, "bob@partner.test")
	if n := len(e.host.eventsOf("webmailbox.pin")); n != 2 {
		t.Errorf("PIN sent after activation: %d events", n)
	}
	if mb, _ := e.sv.store.GetMailbox(context.Background(), "bob@partner.test"); mb.PINSealed != nil {
		t.Error("sealed PIN kept after activation")
	}
	if _, err := e.sv.PINFor(context.Background(), "bob@partner.test"); err == nil {
		t.Error("a PIN shown after activation")
	}
	if _, err := e.sv.PINFor(context.Background(), "nobody@partner.test"); err == nil {
		t.Error("a PIN for a mailbox that does not exist")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		change func(map[string]any)
		key    string
	}{
		{func(c map[string]any) { delete(c, "base_url") }, "base_url"},
		{func(c map[string]any) { c["base_url"] = "ftp://x" }, "base_url"},
		{func(c map[string]any) { delete(c, "allowed_recipients") }, "allowed_recipients"},
		{func(c map[string]any) { c["allowed_recipients"] = []string{"*@"} }, "allowed_recipients"},
		{func(c map[string]any) { c["reset_mode"] = "maybe" }, "reset_mode"},
		{func(c map[string]any) { c["link_ttl"] = "soon" }, "link_ttl"},
		{func(c map[string]any) { c["default_language"] = "fr" }, "default_language"},
		{func(c map[string]any) { c["bogus"] = 1 }, "bogus"},
		{func(c map[string]any) { c["kdf"] = map[string]any{"time": 0, "memory_kib": 1, "threads": 1} }, "kdf"},
	} {
		cfg := baseConfig()
		tc.change(cfg)
		js := mustJSON(cfg)
		p := &Plugin{}
		err := p.Configure(context.Background(), sdk.Config{JSON: js, DataDir: t.TempDir()})
		ce, ok := err.(*sdk.ConfigError)
		if !ok || ce.Key != tc.key {
			t.Errorf("config %s: error %v, want a ConfigError for %s", js, err, tc.key)
		}
	}
}

func TestDivertRetryAfterFailedNotification(t *testing.T) {
	e := newEnv(t, nil)
	e.host.failEmits = 1
	en := &sdk.Envelope{ID: "Q77", MailFrom: "alice@org.example", Recipients: []sdk.Recipient{{Address: "bob@partner.test"}}}
	if _, err := e.p.Transform(context.Background(), en, en.Recipients, strings.NewReader(testMsg)); err == nil {
		t.Fatal("Transform succeeded although the activation event was not emitted")
	}
	res, err := e.p.Transform(context.Background(), en, en.Recipients, strings.NewReader(testMsg))
	if err != nil || res.Action != sdk.OutboundDiverted {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if ms, _ := e.sv.store.ListMessages(context.Background(), "bob@partner.test", ""); len(ms) != 1 {
		t.Errorf("stored %d times", len(ms))
	}
	if n := len(e.host.eventsOf("webmailbox.activation")); n != 1 {
		t.Errorf("activation events = %d", n)
	}
}

func TestDivertPINNotDeliveredUndoesMailbox(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["sender_pin"] = true })
	e.host.failEmits = 1
	en := &sdk.Envelope{ID: "Q78", MailFrom: "alice@org.example", Recipients: []sdk.Recipient{{Address: "bob@partner.test"}}}
	if _, err := e.p.Transform(context.Background(), en, en.Recipients, strings.NewReader(testMsg)); err == nil {
		t.Fatal("Transform succeeded although the PIN was not emitted")
	}
	if _, err := e.sv.store.GetMailbox(context.Background(), "bob@partner.test"); err != ErrNotFound {
		t.Fatalf("mailbox kept without a PIN at the sender: %v", err)
	}
	if _, err := e.p.Transform(context.Background(), en, en.Recipients, strings.NewReader(testMsg)); err != nil {
		t.Fatal(err)
	}
	if len(e.host.eventsOf("webmailbox.pin")) != 1 || len(e.host.eventsOf("webmailbox.activation")) != 1 {
		t.Errorf("events = %+v", e.host.events)
	}
}
