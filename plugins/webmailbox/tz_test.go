package webmailbox

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestZoneList: every zone offered loads, the list is sorted (validZone
// searches it) and the organisation's usual zones are there.
func TestZoneList(t *testing.T) {
	zs := zones()
	if len(zs) < 300 {
		t.Fatalf("%d zones", len(zs))
	}
	for i, z := range zs {
		if i > 0 && zs[i-1] >= z {
			t.Fatalf("not sorted at %q", z)
		}
		if _, err := time.LoadLocation(z); err != nil {
			t.Errorf("%s: %v", z, err)
		}
	}
	for _, z := range []string{"Europe/Berlin", "Europe/Vienna", "Europe/Zurich", "America/New_York", "Asia/Tokyo", "UTC"} {
		if !validZone(z) {
			t.Errorf("%s missing", z)
		}
	}
	for _, z := range []string{"", "Local", "Europe/Nowhere", "../../etc/passwd", "europe/berlin"} {
		if validZone(z) {
			t.Errorf("%q accepted", z)
		}
	}
	n := 0
	for _, g := range zoneGroups() {
		n += len(g.Zones)
	}
	if n != len(zs) {
		t.Errorf("groups hold %d zones, the list %d", n, len(zs))
	}
}

// TestPerUserTimeZone: the settings page offers the zones with the
// organisation's selected; the owner's choice moves every date — inbox,
// message, notifications to them (reset link, inactivity warning) — and
// is kept with the mailbox; a new (pending) mailbox's mail is in the
// organisation's zone; a zone not in the list is refused.
func TestPerUserTimeZone(t *testing.T) {
	e, b := loggedIn(t, func(c map[string]any) { c["time_zone"] = "Europe/Vienna" })
	r := b.get("/box/settings")
	if !strings.Contains(r.body, `<option value="Europe/Vienna" selected>Vienna</option>`) || !strings.Contains(r.body, `<optgroup label="America">`) ||
		!strings.Contains(r.body, `<time id="now">Tue, 24 Nov 2026, 11:00 CET</time>`) {
		t.Fatalf("settings page: %s", r.body)
	}
	id := msgLinkRE.FindStringSubmatch(b.get("/box/inbox").body)[1]
	if r := b.get("/box/inbox"); !strings.Contains(r.body, "Tue, 24 Nov 2026, 11:00") { // arrived 10:00 UTC
		t.Fatalf("inbox in Vienna: %s", r.body)
	}
	tok := b.csrf("/box/settings")
	if r := b.post("/box/settings/zone", url.Values{"csrf": {tok}, "zone": {"Mars/Olympus"}}); r.code != 422 || !strings.Contains(r.body, `id="zone-err"`) {
		t.Errorf("unknown zone: %d %s", r.code, r.body)
	}
	if r := b.post("/box/settings/zone", url.Values{"zone": {"America/New_York"}}); r.code != 403 {
		t.Errorf("without CSRF token: %d", r.code)
	}
	r = b.post("/box/settings/zone", url.Values{"csrf": {tok}, "zone": {"America/New_York"}})
	if r.code != 303 || r.loc != "/box/settings?done=zone" {
		t.Fatalf("choosing a zone: %d %s", r.code, r.loc)
	}
	if r := b.get("/box/settings?done=zone"); !strings.Contains(r.body, "The time zone has been saved.") ||
		!strings.Contains(r.body, `<option value="America/New_York" selected>New York</option>`) || !strings.Contains(r.body, "05:00 EST</time>") {
		t.Errorf("settings after the change: %s", r.body)
	}
	if mb, _ := e.sv.store.GetMailbox(context.Background(), "bob@partner.test"); mb.TimeZone != "America/New_York" {
		t.Errorf("stored zone %q", mb.TimeZone)
	}
	if r := b.get("/box/inbox"); !strings.Contains(r.body, "Tue, 24 Nov 2026, 05:00") || strings.Contains(r.body, "11:00") {
		t.Errorf("inbox in New York: %s", r.body)
	}
	// Date: Tue, 24 Nov 2026 09:00:00 +0000.
	if r := b.get("/box/msg/" + id); !strings.Contains(r.body, "<dd>Tue, 24 Nov 2026, 04:00 EST</dd>") {
		t.Errorf("message date in New York: %s", r.body)
	}

	// Notifications to the owner follow the choice.
	e.sv.RequestReset("bob@partner.test", "192.0.2.1")
	e.sv.bg.Wait()
	ev := e.host.eventsOf("webmailbox.reset_link")
	if len(ev) != 1 || ev[0].Attributes["time_zone"] != "America/New_York" || !strings.HasSuffix(ev[0].Attributes["expires"], "-05:00") {
		t.Errorf("reset link event: %+v", ev)
	}
	e.clock.Add(352 * 24 * time.Hour) // 13 days before the inactivity deletion
	if err := e.sv.Housekeeping(context.Background()); err != nil {
		t.Fatal(err)
	}
	ev = e.host.eventsOf("webmailbox.inactivity_warning")
	if len(ev) != 1 || ev[0].Attributes["time_zone"] != "America/New_York" || !strings.HasSuffix(ev[0].Attributes["delete_on"], "-05:00") {
		t.Errorf("inactivity warning: %+v", ev)
	}
	// A pending mailbox's activation mail: the organisation's zone.
	e.divert(testMsg, "carol@partner.test")
	ev = e.host.eventsOf("webmailbox.activation")
	if last := ev[len(ev)-1]; last.Recipient != "carol@partner.test" || last.Attributes["time_zone"] != "Europe/Vienna" || !strings.HasSuffix(last.Attributes["expires"], "+01:00") {
		t.Errorf("activation for a new mailbox: %+v", last)
	}
}
