package webmailbox

import (
	"context"
	"testing"
	"time"
)

func TestRemindersRetentionInactivity(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["reminder_after"] = "48h" })
	ctx := context.Background()
	e.divert(testMsg, "pending@partner.test")
	_, b := e, e.browser()
	e.divert(testMsg, "bob@partner.test")
	b.activate("bob@partner.test", "correct horse", qa)

	e.clock.Add(24 * time.Hour)
	if err := e.sv.Housekeeping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.host.eventsOf("webmailbox.reminder_recipient")); n != 0 {
		t.Fatalf("reminders too early: %d", n)
	}
	e.clock.Add(25 * time.Hour)
	if err := e.sv.Housekeeping(ctx); err != nil {
		t.Fatal(err)
	}
	rr, rs := e.host.eventsOf("webmailbox.reminder_recipient"), e.host.eventsOf("webmailbox.reminder_sender")
	if len(rr) != 2 || len(rs) != 2 {
		t.Fatalf("reminders: recipient %+v sender %+v", rr, rs)
	}
	states := map[string]string{}
	for _, ev := range rs {
		if ev.Sender != "alice@org.example" || ev.Attributes["sent"] == "" {
			t.Errorf("sender reminder %+v", ev)
		}
		states[ev.Recipient] = ev.Attributes["state"]
	}
	if states["pending@partner.test"] != "unactivated" || states["bob@partner.test"] != "unread" {
		t.Errorf("states = %v", states)
	}
	for _, ev := range rr {
		if ev.Attributes["link"] == "" {
			t.Errorf("recipient reminder without link: %+v", ev)
		}
	}
	// The pending mailbox's reminder carries a working activation link.
	e.clock.Add(time.Hour)
	if err := e.sv.Housekeeping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.host.eventsOf("webmailbox.reminder_recipient")); n != 2 {
		t.Errorf("reminded twice: %d", n)
	}

	// Retention: after 90 days the messages are gone.
	e.clock.Add(90 * 24 * time.Hour)
	if err := e.sv.Housekeeping(ctx); err != nil {
		t.Fatal(err)
	}
	if ms, _ := e.sv.store.ListMessages(ctx, "bob@partner.test", ""); len(ms) != 0 {
		t.Errorf("retention: %d messages left", len(ms))
	}
	if mb, _ := e.sv.store.GetMailbox(ctx, "bob@partner.test"); mb == nil || mb.UsedBytes != 0 {
		t.Errorf("quota not given back: %+v", mb)
	}

	// Inactivity: a warning 14 days before 365 days, then deletion.
	e.clock.Add(365*24*time.Hour - 94*24*time.Hour) // ~ day 352 since last activity
	if err := e.sv.Housekeeping(ctx); err != nil {
		t.Fatal(err)
	}
	warned := e.host.eventsOf("webmailbox.inactivity_warning")
	if len(warned) != 1 || warned[0].Recipient != "bob@partner.test" || warned[0].Attributes["delete_on"] == "" {
		t.Errorf("inactivity warnings = %+v", warned)
	}
	e.clock.Add(20 * 24 * time.Hour)
	if err := e.sv.Housekeeping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sv.store.GetMailbox(ctx, "bob@partner.test"); err != ErrNotFound {
		t.Errorf("inactive mailbox not deleted: %v", err)
	}
}
