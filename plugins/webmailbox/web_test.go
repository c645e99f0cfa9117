package webmailbox

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// activate runs the activation form for addr with password pw.
func (b *browser) activate(addr, pw string, extra url.Values) resp {
	b.t.Helper()
	link := b.e.activationLink(addr)
	r := b.get(link)
	if r.code != 200 {
		b.t.Fatalf("GET activation link: %d %s", r.code, r.body)
	}
	tok := strings.TrimPrefix(link[strings.Index(link, "?"):], "?t=")
	form := url.Values{"csrf": {csrfRE.FindStringSubmatch(r.body)[1]}, "t": {tok}, "language": {"en"},
		"password": {pw}, "password2": {pw}}
	for k, v := range extra {
		form[k] = v
	}
	return b.post("/box/activate", form)
}

func (b *browser) login(addr, pw string) resp {
	b.t.Helper()
	return b.post("/box/login", url.Values{"csrf": {b.csrf("/box/login")}, "address": {addr}, "password": {pw}})
}

var qa = url.Values{"question": {"First pet?"}, "answer": {"Rex the Dog"}}

func TestActivationResetModeAndLogin(t *testing.T) {
	e := newEnv(t, nil)
	e.divert(testMsg, "bob@partner.test")
	b := e.browser()

	link := e.activationLink("bob@partner.test")
	r := b.get(link)
	if r.code != 200 || !strings.Contains(r.body, `name="question"`) || strings.Contains(r.body, "can never be changed") && !strings.Contains(r.body, "kann weder") {
		t.Fatalf("activation page: %d %s", r.code, r.body)
	}
	// Security headers and cookie attributes.
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'none'", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
		"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "Strict-Transport-Security": "max-age=",
	} {
		if !strings.Contains(r.h.Get(h), want) {
			t.Errorf("header %s = %q, want %q", h, r.h.Get(h), want)
		}
	}
	for _, c := range r.h.Values("Set-Cookie") {
		if !strings.Contains(c, "Secure") || !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Strict") || !strings.HasPrefix(c, "__Host-") {
			t.Errorf("cookie %q lacks Secure/HttpOnly/SameSite/__Host-", c)
		}
	}
	// Too short, mismatched, missing question: clear errors, the token stays valid.
	r = b.activate("bob@partner.test", "short", qa)
	if r.code != 422 || !strings.Contains(r.body, "at least 8 characters") {
		t.Errorf("short password: %d", r.code)
	}
	r = b.activate("bob@partner.test", "longenough", url.Values{"password2": {"different1"}, "question": {"q"}, "answer": {"abc"}})
	if r.code != 422 || !strings.Contains(r.body, "do not match") {
		t.Errorf("mismatch: %d", r.code)
	}
	r = b.activate("bob@partner.test", "longenough", nil)
	if r.code != 422 || !strings.Contains(r.body, "security question") {
		t.Errorf("no question: %d", r.code)
	}
	// Without the CSRF token: refused.
	r = b.post("/box/activate", url.Values{"t": {"x"}, "password": {"longenough"}})
	if r.code != 403 {
		t.Errorf("activation without csrf: %d", r.code)
	}
	// The language switch on the activation page keeps the token.
	r = b.get(link)
	back := regexp.MustCompile(`name="back" value="([^"]+)"`).FindStringSubmatch(r.body)[1]
	r = b.post("/box/lang", url.Values{"csrf": {csrfRE.FindStringSubmatch(r.body)[1]}, "lang": {"en"}, "back": {html.UnescapeString(back)}})
	if r.code != 303 || r.loc != link {
		t.Errorf("language switch on the activation page: %d %q, want %q", r.code, r.loc, link)
	}
	if r := b.get(link); !strings.Contains(r.body, "Set up your mailbox") {
		t.Errorf("activation page not in English after the switch")
	}
	r = b.activate("bob@partner.test", "correct horse", qa)
	if r.code != 303 || !strings.HasSuffix(r.loc, "/box/login?activated=1") {
		t.Fatalf("activation: %d %s %s", r.code, r.loc, r.body)
	}
	// Single use.
	if r := b.get(link); r.code != 404 {
		t.Errorf("reused link: %d", r.code)
	}

	// Login, read the inbox with the message that arrived before activation.
	r = b.login("bob@partner.test", "correct horse")
	if r.code != 303 || !strings.HasSuffix(r.loc, "/box/inbox") {
		t.Fatalf("login: %d %s", r.code, r.body)
	}
	r = b.get("/box/inbox")
	if r.code != 200 || !strings.Contains(r.body, "Quarterly figures SECRETSUBJECT") || !strings.Contains(r.body, "1 unread") {
		t.Fatalf("inbox: %d %s", r.code, r.body)
	}
	// Later mail: "new message", not activation.
	e.divert(strings.Replace(testMsg, "Quarterly", "Later", 1), "bob@partner.test")
	if nm := e.host.eventsOf("webmailbox.new_message"); len(nm) != 1 || nm[0].Language != "en" || !strings.HasSuffix(nm[0].Attributes["link"], "/box/login") {
		t.Errorf("new_message events = %+v", nm)
	}
	if r := b.get("/box/inbox"); !strings.Contains(r.body, "Later figures") || !strings.Contains(r.body, "2 unread") {
		t.Errorf("inbox after the second message: %s", r.body)
	}

	// Password reset: a link by mail, then the security answer (case
	// and spaces do not matter).
	b2 := e.browser()
	link = b2.resetLink("bob@partner.test")
	r = b2.get(link)
	if r.code != 200 || !strings.Contains(r.body, "First pet?") {
		t.Fatalf("reset page lacks the question: %d %s", r.code, r.body)
	}
	tok := strings.TrimPrefix(link[strings.Index(link, "?"):], "?t=")
	csrf := csrfRE.FindStringSubmatch(r.body)[1]
	r = b2.post("/box/reset", url.Values{"csrf": {csrf}, "t": {tok}, "answer": {"wrong"}, "password": {"new password"}, "password2": {"new password"}})
	if r.code != 401 {
		t.Errorf("reset with a wrong answer: %d", r.code)
	}
	r = b2.post("/box/reset", url.Values{"csrf": {csrf}, "t": {tok}, "answer": {"  rex THE dog "}, "password": {"new password"}, "password2": {"new password"}})
	if r.code != 303 {
		t.Fatalf("reset: %d %s", r.code, r.body)
	}
	if r := b2.get(link); r.code != 404 {
		t.Errorf("reset link used twice: %d", r.code)
	}
	if r := b2.login("bob@partner.test", "correct horse"); r.code != 401 {
		t.Errorf("old password still works: %d", r.code)
	}
	if r := b2.login("bob@partner.test", "new password"); r.code != 303 {
		t.Fatalf("new password: %d", r.code)
	}
	if r := b2.get("/box/inbox"); !strings.Contains(r.body, "SECRETSUBJECT") {
		t.Errorf("messages not readable after reset")
	}
}

// resetLink asks for a reset link for addr and returns its path+query.
func (b *browser) resetLink(addr string) string {
	b.t.Helper()
	before := len(b.e.host.eventsOf("webmailbox.reset_link"))
	r := b.post("/box/reset/link", url.Values{"csrf": {b.csrf("/box/reset")}, "address": {addr}})
	if r.code != 200 || !strings.Contains(r.body, "If this address has a mailbox") && !strings.Contains(r.body, "Wenn zu dieser Adresse") {
		b.t.Fatalf("asking for a reset link: %d %s", r.code, r.body)
	}
	b.e.sv.bg.Wait()
	evs := b.e.host.eventsOf("webmailbox.reset_link")
	if len(evs) != before+1 || evs[len(evs)-1].Recipient != addr {
		b.t.Fatalf("reset link events: %+v", evs)
	}
	u, err := url.Parse(evs[len(evs)-1].Attributes["link"])
	if err != nil {
		b.t.Fatal(err)
	}
	return u.Path + "?" + u.RawQuery
}

func TestActivationNoResetMode(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["reset_mode"] = "none"; c["sender_pin"] = true })
	e.divert(testMsg, "carol@partner.test")
	pin := e.host.eventsOf("webmailbox.pin")[0].Attributes["pin"]
	b := e.browser()
	r := b.get(e.activationLink("carol@partner.test"))
	if !strings.Contains(r.body, "kann weder geändert noch zurückgesetzt werden") || strings.Contains(r.body, `name="question"`) || !strings.Contains(r.body, `name="pin"`) {
		t.Fatalf("no-reset activation page lacks the warning or the PIN field: %s", r.body)
	}
	// Without acknowledging the warning: refused.
	if r := b.activate("carol@partner.test", "password1", url.Values{"pin": {pin}}); r.code != 422 {
		t.Errorf("no ack: %d", r.code)
	}
	if r := b.activate("carol@partner.test", "password1", url.Values{"pin": {"000000x"}, "ack": {"1"}}); r.code != 422 || !strings.Contains(r.body, "The PIN is wrong") {
		t.Errorf("wrong pin: %d", r.code)
	}
	if r := b.activate("carol@partner.test", "password1", url.Values{"pin": {pin}, "ack": {"1"}}); r.code != 303 {
		t.Fatalf("activation: %d %s", r.code, r.body)
	}
	mb, _ := e.sv.store.GetMailbox(t.Context(), "carol@partner.test")
	if mb.WrappedQA != nil || mb.ResetAllow || mb.WrappedMK != nil || mb.Language != "en" {
		t.Errorf("no-reset mailbox = %+v", mb)
	}
	if r := b.get("/box/reset"); r.code != 404 {
		t.Errorf("reset page in no-reset mode: %d", r.code)
	}
	if r := b.login("carol@partner.test", "password1"); r.code != 303 {
		t.Fatalf("login: %d", r.code)
	}
}

func TestLoginGenericErrorsAndCSRF(t *testing.T) {
	e := newEnv(t, nil)
	e.divert(testMsg, "bob@partner.test")
	b := e.browser()
	b.activate("bob@partner.test", "correct horse", qa)

	unknown := b.login("nobody@partner.test", "whatever1")
	wrong := b.login("bob@partner.test", "wrong password")
	if unknown.code != 401 || wrong.code != 401 {
		t.Fatalf("failed logins: %d %d", unknown.code, wrong.code)
	}
	msg := regexp.MustCompile(`<p class="error"[^>]*>[^<]*</p>`)
	if msg.FindString(unknown.body) == "" || msg.FindString(unknown.body) != msg.FindString(wrong.body) {
		t.Errorf("errors differ: %q vs %q", msg.FindString(unknown.body), msg.FindString(wrong.body))
	}
	// Login without the CSRF cookie/token: refused.
	nb := e.browser()
	if r := nb.post("/box/login", url.Values{"address": {"bob@partner.test"}, "password": {"correct horse"}}); r.code != 403 {
		t.Errorf("login without csrf: %d", r.code)
	}
	// A cross-site post with the right token is refused too.
	tok := nb.csrf("/box/login")
	req, _ := http.NewRequest("POST", nb.url+"/box/login", strings.NewReader(url.Values{"csrf": {tok}, "address": {"bob@partner.test"}, "password": {"correct horse"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if r := nb.do(req); r.code != 403 {
		t.Errorf("cross-origin login: %d", r.code)
	}
}

// loggedIn returns a browser logged into bob's activated mailbox holding testMsg.
func loggedIn(t *testing.T, change func(map[string]any), prepare ...func(dataDir string)) (*env, *browser) {
	e := newEnv(t, change, prepare...)
	e.divert(testMsg, "bob@partner.test")
	b := e.browser()
	if r := b.activate("bob@partner.test", "correct horse", qa); r.code != 303 {
		t.Fatalf("activation: %d", r.code)
	}
	if r := b.login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Fatalf("login: %d", r.code)
	}
	return e, b
}

var msgLinkRE = regexp.MustCompile(`href="/box/msg/(\d+)"`)

func TestReadReplyDeleteExport(t *testing.T) {
	e, b := loggedIn(t, nil)
	r := b.get("/box/inbox")
	m := msgLinkRE.FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no message link in %s", r.body)
	}
	id := m[1]
	r = b.get("/box/msg/" + id)
	if r.code != 200 || !strings.Contains(r.body, "SECRETBODY. Grüße") || !strings.Contains(r.body, "figures.pdf") ||
		!strings.Contains(r.body, `sandbox="allow-scripts"`) || strings.Contains(r.body, "allow-same-origin") ||
		strings.Count(r.body, "<script") != 1 || !strings.Contains(r.body, `<script src="/box/frame.js"></script>`) {
		t.Fatalf("message page: %d %s", r.code, r.body)
	}
	if r := b.get("/box/inbox"); strings.Contains(r.body, "unread</span>") {
		t.Errorf("still unread after reading")
	}
	// HTML part: sanitised, under a sandboxing CSP.
	r = b.get("/box/msg/" + id + "/html")
	// The only script is ours, allowed by the CSP's nonce; the mail's own
	// script is gone, and the frame has no same-origin access.
	csp := r.h.Get("Content-Security-Policy")
	scriptNonce := regexp.MustCompile(`script-src 'nonce-([^']+)'`).FindStringSubmatch(csp)
	if strings.Contains(r.body, "alert(1)") || strings.Contains(r.body, "tracker.example") || !strings.Contains(r.body, "Dear Bob") ||
		!strings.Contains(csp, "sandbox allow-scripts") || strings.Contains(csp, "allow-same-origin") || scriptNonce == nil ||
		strings.Count(r.body, "<script") != 1 || !strings.Contains(r.body, `<script nonce="`+scriptNonce[1]+`">`) {
		t.Errorf("html view: %s / %s", r.body, csp)
	}
	// Attachment: a download, never inline.
	r = b.get("/box/msg/" + id + "/att/0")
	if r.code != 200 || r.body != "%PDF-1.4\nSECRETATTACH" || !strings.HasPrefix(r.h.Get("Content-Disposition"), "attachment") {
		t.Errorf("attachment: %d %q %q", r.code, r.body, r.h.Get("Content-Disposition"))
	}
	// Export .eml: the original message.
	r = b.get("/box/msg/" + id + "/export/eml")
	if r.code != 200 || r.body != testMsg || r.h.Get("Content-Type") != "message/rfc822" || !strings.Contains(r.h.Get("Content-Disposition"), ".eml") {
		t.Errorf("eml export: %d %q", r.code, r.h.Get("Content-Disposition"))
	}
	r = b.get("/box/msg/" + id + "/export/msg")
	if r.code != 200 || !strings.HasPrefix(r.body, "\xD0\xCF\x11\xE0") || !strings.Contains(r.h.Get("Content-Disposition"), ".msg") {
		t.Errorf("msg export: %d %q", r.code, r.h.Get("Content-Disposition"))
	}
	r = b.get("/box/msg/" + id + "/export/pdf")
	if r.code != 200 || !strings.HasPrefix(r.body, "%PDF-") || r.h.Get("Content-Type") != "application/pdf" {
		t.Errorf("pdf export: %d %q", r.code, r.h.Get("Content-Type"))
	}
	// Print view.
	if r := b.get("/box/msg/" + id + "/print"); r.code != 200 || !strings.Contains(r.body, "SECRETBODY") {
		t.Errorf("print: %d", r.code)
	}

	// Reply form is prefilled; replying elsewhere is refused by the server.
	r = b.get("/box/compose?reply=" + id)
	if !strings.Contains(r.body, `value="alice@org.example"`) || !strings.Contains(r.body, "Re: Quarterly") {
		t.Fatalf("reply form: %s", r.body)
	}
	tok := csrfRE.FindStringSubmatch(r.body)[1]
	nonce := regexp.MustCompile(`name="nonce" value="([^"]+)"`).FindStringSubmatch(r.body)[1]
	for _, to := range []string{"mallory@evil.example", "alice@org.example, mallory@evil.example", "x@org.example.evil.test", "a@b@org.example"} {
		r = b.post("/box/send", url.Values{"csrf": {tok}, "nonce": {nonce}, "reply": {id}, "to": {to}, "subject": {"Re"}, "body": {"hi"}})
		if r.code == 200 || r.code == 303 {
			t.Errorf("reply to %q accepted: %d", to, r.code)
		}
	}
	if s := e.host.submissions(); len(s) != 0 {
		t.Fatalf("refused replies were submitted: %+v", s)
	}
	// Without the CSRF token: refused.
	if r := b.post("/box/send", url.Values{"to": {"alice@org.example"}, "body": {"x"}}); r.code != 403 {
		t.Errorf("send without csrf: %d", r.code)
	}
	r = b.post("/box/send", url.Values{"csrf": {tok}, "nonce": {nonce}, "reply": {id}, "to": {"alice@org.example"}, "subject": {"Re: Quarterly"}, "body": {"Thanks, Alice — received."}})
	if r.code != 303 || r.loc != "/box/inbox?done=sent" {
		t.Fatalf("reply: %d %s %s", r.code, r.loc, r.body)
	}
	// Back in the mailbox, with a confirmation.
	if r := b.get(r.loc); r.code != 200 || !strings.Contains(r.body, `role="status">The message has been sent.`) || !strings.Contains(r.body, "Quarterly figures") {
		t.Errorf("after sending: %d %s", r.code, r.body)
	}
	subs := e.host.submissions()
	if len(subs) != 1 || subs[0].env.MailFrom != "bob@partner.test" || len(subs[0].env.Recipients) != 1 ||
		subs[0].env.Recipients[0].Address != "alice@org.example" || !strings.Contains(subs[0].body, "In-Reply-To: <m1@org.example>") ||
		subs[0].key != "webmailbox-send:"+nonce {
		t.Fatalf("submission = %+v", subs)
	}
	r = b.get("/box/sent")
	if !strings.Contains(r.body, "Re: Quarterly") {
		t.Errorf("sent folder: %s", r.body)
	}
	sentID := msgLinkRE.FindStringSubmatch(r.body)[1]
	if r := b.get("/box/compose?reply=" + sentID); !strings.Contains(r.body, `name="to" required value="alice@org.example"`) {
		t.Errorf("follow-up on a sent message does not go to its recipient")
	}
	// Forward to an allowed full address.
	r = b.get("/box/compose?forward=" + id)
	nonce2 := regexp.MustCompile(`name="nonce" value="([^"]+)"`).FindStringSubmatch(r.body)[1]
	r = b.post("/box/send", url.Values{"csrf": {tok}, "nonce": {nonce2}, "forward": {id}, "to": {"Boss <boss@partner.example>"}, "subject": {"Fwd"}, "body": {"see below"}})
	if r.code != 303 {
		t.Fatalf("forward: %d %s", r.code, r.body)
	}
	if subs := e.host.submissions(); len(subs) != 2 || !strings.Contains(subs[1].body, "message/rfc822") || !strings.Contains(subs[1].body, "SECRETBODY") {
		t.Errorf("forward submission: %+v", subs[1:])
	}

	// Delete asks first (the message page links to the question), needs
	// the CSRF token, then confirms; the message is gone.
	if r := b.get("/box/msg/" + id); !strings.Contains(r.body, `href="/box/msg/`+id+`/delete"`) {
		t.Errorf("message page has no link to delete")
	}
	r = b.get("/box/msg/" + id + "/delete")
	if r.code != 200 || !strings.Contains(r.body, "<h1>Delete this message?</h1>") || !strings.Contains(r.body, "Quarterly figures") ||
		!strings.Contains(r.body, `action="/box/msg/`+id+`/delete"`) || !strings.Contains(r.body, `href="/box/msg/`+id+`">Cancel`) {
		t.Errorf("delete question: %d %s", r.code, r.body)
	}
	if r := b.get("/box/msg/" + id); r.code != 200 {
		t.Errorf("asking deleted the message: %d", r.code)
	}
	if r := b.post("/box/msg/"+id+"/delete", nil); r.code != 403 {
		t.Errorf("delete without csrf: %d", r.code)
	}
	r = b.post("/box/msg/"+id+"/delete", url.Values{"csrf": {tok}})
	if r.code != 303 || r.loc != "/box/inbox?done=deleted" {
		t.Fatalf("delete: %d %s", r.code, r.loc)
	}
	if r := b.get(r.loc); !strings.Contains(r.body, `role="status">The message has been deleted.`) {
		t.Errorf("no confirmation after deleting: %s", r.body)
	}
	if r := b.get("/box/msg/" + id); r.code != 404 {
		t.Errorf("deleted message: %d", r.code)
	}
	// Another mailbox's message ids are not reachable.
	e.divert(testMsg, "eve@partner.test")
	evs, _ := e.sv.store.ListMessages(t.Context(), "eve@partner.test", "")
	if r := b.get("/box/msg/" + itoa(evs[0].ID)); r.code != 404 {
		t.Errorf("someone else's message: %d", r.code)
	}

	// Language switch (back to the page it was on), then logout.
	r = b.get("/box/inbox")
	back := regexp.MustCompile(`name="back" value="([^"]+)"`).FindStringSubmatch(r.body)[1]
	if back != "/box/inbox" {
		t.Errorf("back = %q", back)
	}
	r = b.post("/box/lang", url.Values{"csrf": {tok}, "lang": {"de"}, "back": {back}})
	if r.code != 303 || r.loc != "/box/inbox" {
		t.Fatalf("lang: %d %s", r.code, r.loc)
	}
	if r := b.get("/box/inbox"); !strings.Contains(r.body, "Posteingang") || !strings.Contains(r.body, `lang="de"`) {
		t.Errorf("not German after switching")
	}
	if r := b.post("/box/lang", url.Values{"csrf": {tok}, "lang": {"en"}, "back": {"//evil.example/"}}); r.loc != "/" {
		t.Errorf("open redirect: %s", r.loc)
	}
	if r := b.post("/box/logout", url.Values{"csrf": {tok}}); r.code != 303 {
		t.Fatalf("logout: %d", r.code)
	}
	if r := b.get("/box/inbox"); r.code != 303 || !strings.Contains(r.loc, "/box/login") {
		t.Errorf("inbox after logout: %d", r.code)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestSessionTimeout(t *testing.T) {
	e, b := loggedIn(t, func(c map[string]any) { c["session_timeout"] = "15m" })
	e.clock.Add(10 * time.Minute)
	if r := b.get("/box/inbox"); r.code != 200 {
		t.Fatalf("within the timeout: %d", r.code)
	}
	e.clock.Add(16 * time.Minute)
	if r := b.get("/box/inbox"); r.code != 303 || !strings.Contains(r.loc, "expired") {
		t.Errorf("after the timeout: %d %s", r.code, r.loc)
	}
}

func TestExpiredActivationLink(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["link_ttl"] = "1h" })
	e.divert(testMsg, "bob@partner.test")
	b := e.browser()
	link := e.activationLink("bob@partner.test")
	e.clock.Add(2 * time.Hour)
	if r := b.get(link); r.code != 404 || !strings.Contains(r.body, "abgelaufen") {
		t.Errorf("expired link: %d", r.code)
	}
	if r := b.get("/box/activate?t=garbage"); r.code != 404 {
		t.Errorf("bad token: %d", r.code)
	}
}

func TestChangePassword(t *testing.T) {
	_, b := loggedIn(t, nil)
	tok := b.csrf("/box/settings")
	if r := b.post("/box/settings", url.Values{"csrf": {tok}, "old": {"wrong"}, "password": {"brand new pw"}, "password2": {"brand new pw"}}); r.code != 401 {
		t.Errorf("wrong old password: %d", r.code)
	}
	if r := b.post("/box/settings", url.Values{"csrf": {tok}, "old": {"correct horse"}, "password": {"brand new pw"}, "password2": {"brand new pw"},
		"question": {"Town?"}, "answer": {"Bonn"}}); r.code != 200 {
		t.Fatalf("change: %d %s", r.code, r.body)
	}
	nb := e2browser(b)
	if r := nb.login("bob@partner.test", "brand new pw"); r.code != 303 {
		t.Fatalf("new password: %d", r.code)
	}
	if r := nb.get("/box/inbox"); !strings.Contains(r.body, "SECRETSUBJECT") {
		t.Error("messages unreadable after the change")
	}
	if r := nb.get(nb.resetLink("bob@partner.test")); !strings.Contains(r.body, "Town?") {
		t.Error("new question not used")
	}
}

func TestNoResetModeCannotChangePassword(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["reset_mode"] = "none" })
	e.divert(testMsg, "bob@partner.test")
	b := e.browser()
	b.activate("bob@partner.test", "correct horse", url.Values{"ack": {"1"}})
	if r := b.login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Fatalf("login: %d", r.code)
	}
	r := b.get("/box/settings")
	if strings.Contains(r.body, `name="old"`) {
		t.Error("password form offered in no-reset mode")
	}
	tok := csrfRE.FindStringSubmatch(r.body)[1]
	if r := b.post("/box/settings", url.Values{"csrf": {tok}, "old": {"correct horse"}, "password": {"brand new pw"}, "password2": {"brand new pw"}}); r.code != 422 {
		t.Errorf("change in no-reset mode: %d", r.code)
	}
}

func e2browser(b *browser) *browser { return b.e.browser() }

// TestPagesSelfContained: no scripts (but frame.js), no external assets, a language and a
// viewport on every page.
func TestPagesSelfContained(t *testing.T) {
	_, b := loggedIn(t, nil)
	id := msgLinkRE.FindStringSubmatch(b.get("/box/inbox").body)[1]
	for _, p := range []string{"/box/inbox", "/box/sent", "/box/msg/" + id, "/box/msg/" + id + "/print", "/box/compose", "/box/keys", "/box/settings", "/box/login", "/box/reset"} {
		r := b.get(p)
		if r.code != 200 {
			t.Errorf("%s: %d", p, r.code)
			continue
		}
		// One script at most, our own frame.js on the message page, and
		// the page does not need it (TestHTMLFrameSizedToContent).
		scripts := strings.Count(r.body, "<script")
		if strings.HasPrefix(p, "/box/msg/") && !strings.HasSuffix(p, "/print") {
			scripts -= strings.Count(r.body, `<script src="/box/frame.js"></script>`)
		}
		if scripts != 0 || regexp.MustCompile(`(src|href)="(https?:)?//`).MatchString(r.body) {
			t.Errorf("%s has scripts or external assets", p)
		}
		if !strings.Contains(r.body, `<html lang="`) || !strings.Contains(r.body, `name="viewport"`) {
			t.Errorf("%s lacks lang or viewport", p)
		}
	}
	if r := b.get("/box/style.css"); r.code != 200 || !strings.Contains(r.h.Get("Content-Type"), "text/css") || strings.Contains(r.body, "url(") {
		t.Errorf("style.css: %d", r.code)
	}
}
