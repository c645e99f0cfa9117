package webmailbox

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Issue 14, points 1-3: sessions end with a password change or reset;
// a reset starts with a link by mail and does not tell which addresses
// exist; guessing is slowed per (account, client), not by locking the
// account for everyone.

func TestPasswordChangeEndsOtherSessions(t *testing.T) {
	e, b := loggedIn(t, nil)
	other := e.browser()
	if r := other.login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Fatalf("second login: %d", r.code)
	}
	if r := other.get("/box/inbox"); r.code != 200 {
		t.Fatalf("second session: %d", r.code)
	}
	r := b.post("/box/settings", url.Values{"csrf": {b.csrf("/box/settings")}, "old": {"correct horse"},
		"password": {"battery staple"}, "password2": {"battery staple"}})
	if r.code != 200 || !strings.Contains(r.body, "Every other login to this mailbox has been ended") {
		t.Fatalf("password change: %d %s", r.code, r.body)
	}
	// The session that changed it goes on; the other one is over.
	if r := b.get("/box/inbox"); r.code != 200 {
		t.Errorf("own session after the change: %d", r.code)
	}
	if r := other.get("/box/inbox"); r.code != 303 || !strings.Contains(r.loc, "/box/login") {
		t.Errorf("other session after the change: %d %s", r.code, r.loc)
	}
	if !strings.Contains(e.logs.String(), "other sessions ended") || !strings.Contains(e.logs.String(), "sessions_ended=1") {
		t.Errorf("no log line for the ended sessions:\n%s", e.logs)
	}

	// A reset ends every session, the one that asked included.
	third := e.browser()
	if r := third.login("bob@partner.test", "battery staple"); r.code != 303 {
		t.Fatalf("third login: %d", r.code)
	}
	rb := e.browser()
	link := rb.resetLink("bob@partner.test")
	tok := strings.TrimPrefix(link[strings.Index(link, "?"):], "?t=")
	r = rb.post("/box/reset", url.Values{"csrf": {rb.csrf(link)}, "t": {tok}, "answer": {"rex the dog"}, "password": {"fresh password"}, "password2": {"fresh password"}})
	if r.code != 303 {
		t.Fatalf("reset: %d %s", r.code, r.body)
	}
	for name, br := range map[string]*browser{"first": b, "third": third} {
		if r := br.get("/box/inbox"); r.code != 303 {
			t.Errorf("%s session after the reset: %d", name, r.code)
		}
	}
	if r := rb.login("bob@partner.test", "fresh password"); r.code != 303 {
		t.Errorf("login with the new password: %d", r.code)
	}
}

func TestResetStartsWithALinkAndTellsNothing(t *testing.T) {
	e, _ := loggedIn(t, nil)
	b := e.browser()
	// The old way, the question for any address typed in, is gone.
	if r := b.get("/box/reset?address=bob@partner.test"); r.code != 200 || strings.Contains(r.body, "First pet?") || !strings.Contains(r.body, `action="/box/reset/link"`) {
		t.Fatalf("reset page shows the question for an address: %d %s", r.code, r.body)
	}
	ask := func(addr string) resp {
		return b.post("/box/reset/link", url.Values{"csrf": {b.csrf("/box/reset")}, "address": {addr}})
	}
	known, unknown := ask("bob@partner.test"), ask("nobody@partner.test")
	e.sv.bg.Wait()
	strip := regexp.MustCompile(`name="csrf" value="[^"]*"`)
	if known.code != 200 || known.code != unknown.code || strip.ReplaceAllString(known.body, "") != strip.ReplaceAllString(unknown.body, "") {
		t.Errorf("answers differ for a known and an unknown address: %d %d\n%s\n---\n%s", known.code, unknown.code, known.body, unknown.body)
	}
	evs := e.host.eventsOf("webmailbox.reset_link")
	if len(evs) != 1 || evs[0].Recipient != "bob@partner.test" || evs[0].Language != "en" || !strings.Contains(evs[0].Attributes["link"], "/box/reset?t=") {
		t.Fatalf("reset link events: %+v", evs)
	}
	// Asking again at once sends nothing more (no mail bombing).
	ask("bob@partner.test")
	e.sv.bg.Wait()
	if n := len(e.host.eventsOf("webmailbox.reset_link")); n != 1 {
		t.Errorf("%d reset links after asking twice in a row", n)
	}
	// Only a reset link's token opens the question: not a made-up one,
	// not an expired one.
	if r := b.get("/box/reset?t=made-up"); r.code != 404 || strings.Contains(r.body, "First pet?") {
		t.Errorf("made-up token: %d", r.code)
	}
	link := evs[0].Attributes["link"]
	u, _ := url.Parse(link)
	if r := b.get(u.Path + "?" + u.RawQuery); r.code != 200 || !strings.Contains(r.body, "First pet?") {
		t.Errorf("reset link: %d %s", r.code, r.body)
	}
	e.clock.Add(61 * time.Minute)
	if r := b.get(u.Path + "?" + u.RawQuery); r.code != 404 {
		t.Errorf("reset link after an hour: %d", r.code)
	}
}

func TestNoResetLinkInNoResetMode(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["reset_mode"] = "none" })
	e.divert(testMsg, "carol@partner.test")
	b := e.browser()
	if r := b.activate("carol@partner.test", "password1", url.Values{"ack": {"1"}}); r.code != 303 {
		t.Fatalf("activation: %d", r.code)
	}
	e.sv.RequestReset("carol@partner.test", "192.0.2.1")
	e.sv.bg.Wait()
	if evs := e.host.eventsOf("webmailbox.reset_link"); len(evs) != 0 {
		t.Errorf("reset link in no-reset mode: %+v", evs)
	}
}

// throttled is an env whose clients are told apart by X-Real-IP, with 3
// free failures per client.
func throttled(t *testing.T, change func(map[string]any)) *env {
	return newEnv(t, func(c map[string]any) {
		c["client_ip_header"] = "X-Real-IP"
		c["max_failed_logins"] = 3
		c["lockout"] = "10m"
		if change != nil {
			change(c)
		}
	})
}

func (e *env) browserAt(ip string) *browser {
	b := e.browser()
	b.ip = ip
	return b
}

func TestGuessingIsSlowedPerClientNotLockedForAll(t *testing.T) {
	e := throttled(t, nil)
	e.divert(testMsg, "bob@partner.test")
	owner := e.browserAt("198.51.100.7")
	if r := owner.activate("bob@partner.test", "correct horse", qa); r.code != 303 {
		t.Fatalf("activation: %d", r.code)
	}
	attacker := e.browserAt("203.0.113.66")
	for i := 1; i <= 3; i++ {
		if r := attacker.login("bob@partner.test", "guess"); r.code != 401 {
			t.Fatalf("failure %d: %d", i, r.code)
		}
	}
	// The third failure started a delay for this client: even the right
	// password is not tried, and the page says how long to wait.
	r := attacker.login("bob@partner.test", "correct horse")
	if r.code != 429 || !strings.Contains(r.body, "Sie können es wieder versuchen in 30 Sekunden.") {
		t.Fatalf("attacker after 3 failures: %d %s", r.code, r.body)
	}
	// The owner, at another address, gets in at once.
	if r := owner.login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Fatalf("owner while the attacker waits: %d %s", r.code, r.body)
	}
	// The delays grow: 30 s, 60 s, 120 s …
	e.clock.Add(31 * time.Second)
	if r := attacker.login("bob@partner.test", "guess"); r.code != 401 {
		t.Fatalf("after the first delay: %d", r.code)
	}
	e.clock.Add(31 * time.Second)
	if r := attacker.login("bob@partner.test", "guess"); r.code != 429 || !strings.Contains(r.body, "29 Sekunden") {
		t.Errorf("the second delay is not 60 s: %d", r.code)
	}
	e.clock.Add(30 * time.Second)
	attacker.login("bob@partner.test", "guess")
	if r := attacker.login("bob@partner.test", "guess"); r.code != 429 || !strings.Contains(r.body, "2 Minuten") {
		t.Errorf("the third delay is not 120 s: %d", r.code)
	}
	// The same for an address without a mailbox: nothing tells them apart.
	for i := 0; i < 3; i++ {
		attacker.login("nobody@partner.test", "guess")
	}
	if r := attacker.login("nobody@partner.test", "guess"); r.code != 429 {
		t.Errorf("unknown address not throttled alike: %d", r.code)
	}
	st := e.sv.ThrottleStats()
	if st.Failures != 8 || st.Throttled != 4 || st.Delays != 4 {
		t.Errorf("counters = %+v", st)
	}
	logs := e.logs.String()
	for _, want := range []string{"client delayed after failed attempts", "attempt refused: client must wait", "client=203.0.113.66", "failures_total=8"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestAccountWideLimitSparesKnownClients(t *testing.T) {
	e := throttled(t, nil)
	e.divert(testMsg, "bob@partner.test")
	owner := e.browserAt("198.51.100.7")
	owner.activate("bob@partner.test", "correct horse", qa)
	if r := owner.login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Fatalf("owner: %d", r.code)
	}
	// 30 failures (ten times the per-client allowance) from 15 addresses.
	for i := 0; i < 30; i++ {
		e.browserAt("203.0.113."+itoa(int64(i/2+1))).login("bob@partner.test", "guess")
	}
	if r := e.browserAt("192.0.2.200").login("bob@partner.test", "correct horse"); r.code != 429 {
		t.Errorf("a new client during a distributed attack: %d", r.code)
	}
	if r := owner.login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Errorf("the owner's known client during a distributed attack: %d", r.code)
	}
	if !strings.Contains(e.logs.String(), "account-wide delay") {
		t.Errorf("no log of the account-wide delay")
	}
	e.clock.Add(11 * time.Second)
	if r := e.browserAt("192.0.2.200").login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Errorf("after the account-wide delay: %d", r.code)
	}
}

func TestOneClientTryingManyAddresses(t *testing.T) {
	e := throttled(t, nil)
	e.divert(testMsg, "bob@partner.test")
	b := e.browserAt("198.51.100.7")
	b.activate("bob@partner.test", "correct horse", qa)
	sprayer := e.browserAt("203.0.113.9")
	for i := 0; i < 20; i++ {
		sprayer.login("nobody"+itoa(int64(i))+"@x.test", "password1")
	}
	if r := sprayer.login("bob@partner.test", "correct horse"); r.code != 429 {
		t.Errorf("after 20 failures on 20 addresses: %d", r.code)
	}
	if r := b.login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Errorf("another client: %d", r.code)
	}
	e.clock.Add(11 * time.Minute)
	if r := sprayer.login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Errorf("after the window: %d", r.code)
	}
}

func TestPINAndResetAnswerGuessingThrottled(t *testing.T) {
	e := throttled(t, func(c map[string]any) { c["sender_pin"] = true })
	e.divert(testMsg, "bob@partner.test")
	pin := e.host.eventsOf("webmailbox.pin")[0].Attributes["pin"]
	attacker, owner := e.browserAt("203.0.113.66"), e.browserAt("198.51.100.7")
	for i := 0; i < 3; i++ {
		if r := attacker.activate("bob@partner.test", "password1", url2(qa, "pin", "000000")); r.code != 422 || !strings.Contains(r.body, "The PIN is wrong") {
			t.Fatalf("wrong PIN %d: %d", i, r.code)
		}
	}
	if r := attacker.activate("bob@partner.test", "password1", url2(qa, "pin", pin)); r.code != 422 || !strings.Contains(r.body, "try again in") {
		t.Fatalf("attacker with the right PIN while delayed: %d %s", r.code, r.body)
	}
	if r := owner.activate("bob@partner.test", "correct horse", url2(qa, "pin", pin)); r.code != 303 {
		t.Fatalf("the recipient's activation: %d %s", r.code, r.body)
	}
	// Reset answers count the same way (another attacker: this one has
	// used up its allowance for this account).
	attacker = e.browserAt("203.0.113.67")
	link := attacker.resetLink("bob@partner.test")
	tok := strings.TrimPrefix(link[strings.Index(link, "?"):], "?t=")
	csrf := attacker.csrf(link)
	try := func(b *browser, answer string) resp {
		return b.post("/box/reset", url.Values{"csrf": {csrf}, "t": {tok}, "answer": {answer}, "password": {"new password"}, "password2": {"new password"}})
	}
	for i := 0; i < 3; i++ {
		if r := try(attacker, "wrong"); r.code != 401 {
			t.Fatalf("wrong answer %d: %d", i, r.code)
		}
	}
	if r := try(attacker, "rex the dog"); r.code != 429 {
		t.Errorf("right answer while delayed: %d", r.code)
	}
}

// Issue 14.6: a reply to a mistyped address of the organisation (the
// domain is allowed, the mailbox does not exist) says so and keeps the
// draft; so does a host that cannot take the message just now.
func TestReplyToMistypedAddressKeepsTheDraft(t *testing.T) {
	e, b := loggedIn(t, nil)
	e.host.unknown = map[string]bool{"sendr@org.example": true}
	id := msgLinkRE.FindStringSubmatch(b.get("/box/inbox").body)[1]
	r := b.get("/box/compose?reply=" + id)
	tok := csrfRE.FindStringSubmatch(r.body)[1]
	nonce := regexp.MustCompile(`name="nonce" value="([^"]+)"`).FindStringSubmatch(r.body)[1]
	draft := "My long answer, line one.\nLine two."
	send := func() resp {
		return b.post("/box/send", url.Values{"csrf": {tok}, "nonce": {nonce}, "reply": {id}, "to": {"sendr@org.example"}, "subject": {"Re: Quarterly"}, "body": {draft}})
	}
	r = send()
	if r.code != 422 || !strings.Contains(r.body, "this address does not exist") || !strings.Contains(r.body, "sendr@org.example") ||
		!strings.Contains(r.body, "My long answer, line one.\nLine two.</textarea>") || strings.Contains(r.body, "internal error") {
		t.Fatalf("reply to a mistyped address: %d %s", r.code, r.body)
	}
	e.host.unknown = nil
	e.host.failSubmits = true
	r = send()
	if r.code != 502 || !strings.Contains(r.body, "Your text has been kept") || !strings.Contains(r.body, "Line two.</textarea>") {
		t.Fatalf("host down: %d %s", r.code, r.body)
	}
	if len(e.host.submissions()) != 0 {
		t.Errorf("something was submitted")
	}
}

// Issue 14.6: dates in the reader's language and the configured time
// zone, not the raw header.
func TestDatesInLanguageAndTimeZone(t *testing.T) {
	_, b := loggedIn(t, nil) // bob chose English
	id := msgLinkRE.FindStringSubmatch(b.get("/box/inbox").body)[1]
	r := b.get("/box/msg/" + id)
	// Date: Tue, 24 Nov 2026 09:00:00 +0000 → 10:00 in Berlin.
	if !strings.Contains(r.body, "<dd>Tue, 24 Nov 2026, 10:00 CET</dd>") || strings.Contains(r.body, "09:00:00 +0000") {
		t.Errorf("message date not localised: %s", r.body)
	}
	if r := b.get("/box/inbox"); !strings.Contains(r.body, "Tue, 24 Nov 2026, 11:00") { // arrived 10:00 UTC
		t.Errorf("inbox date not localised: %s", r.body)
	}
	if got := formatDate(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC), "de", mustLoc(t, "Europe/Berlin"), true); got != "Mi. 01.07.2026, 14:00 CEST" {
		t.Errorf("German summer date = %q", got)
	}
}

func mustLoc(t *testing.T, name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
