package webmailbox

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/posthorn/posthorn/testbed/browsertest"
)

// browserMode is one way an organisation sets the web mailbox up, and
// what its activation mail and page must say (and must not).
type browserMode struct {
	name           string
	reset          bool // security question (reset_mode "question") or none
	pin, tan       bool // the sender's PIN, the letter's code
	theme          func(map[string]any)
	mail, mailNot  map[string][]string // by language
	pageHas        map[string][]string
	pageHasNot     []string // CSS selectors that must not be on the activation page
	pageHasFields  []string // and that must
	secretSelector string
}

var browserModes = []browserMode{
	{name: "question", reset: true, theme: func(c map[string]any) { c["organization"] = "Example GmbH"; c["support_contact"] = "+49 30 1234-0" },
		mail:          map[string][]string{"de": {"Sicherheitsfrage mit Antwort"}, "en": {"security question with its answer"}},
		mailNot:       map[string][]string{"de": {"PIN", "Brief", "weder geändert"}, "en": {"PIN", "letter", "never be changed"}},
		pageHas:       map[string][]string{"de": {"Mit Frage und Antwort können Sie später ein neues Passwort setzen"}, "en": {"With question and answer you can set a new password later"}},
		pageHasFields: []string{"#q", "#a"}, pageHasNot: []string{"#pin", "#tan", "input[name=ack]"}},
	{name: "none+pin", pin: true, theme: func(c map[string]any) { c["primary_color"] = "#0b5e3a" },
		mail:          map[string][]string{"de": {"weder geändert noch zurückgesetzt", "PIN ein, die Ihnen alice@org.example"}, "en": {"never be changed or reset", "PIN that alice@org.example"}},
		mailNot:       map[string][]string{"de": {"Sicherheitsfrage", "Brief"}, "en": {"security question", "letter"}},
		pageHas:       map[string][]string{"de": {"weder geändert noch zurückgesetzt", "die PIN, die Ihnen der Absender"}, "en": {"never be changed or reset", "the PIN the sender gave you"}},
		pageHasFields: []string{"#pin", "input[name=ack]"}, pageHasNot: []string{"#q", "#tan"}, secretSelector: "#pin"},
	{name: "pin", reset: true, pin: true, theme: func(c map[string]any) { c["privacy_url"] = "https://example.org/privacy" },
		mail:          map[string][]string{"de": {"Sicherheitsfrage mit Antwort", "PIN ein, die Ihnen alice@org.example"}, "en": {"security question with its answer", "PIN that alice@org.example"}},
		mailNot:       map[string][]string{"de": {"weder geändert", "Brief"}, "en": {"never be changed", "letter"}},
		pageHas:       map[string][]string{"de": {"die PIN, die Ihnen der Absender"}, "en": {"the PIN the sender gave you"}},
		pageHasFields: []string{"#q", "#a", "#pin"}, pageHasNot: []string{"#tan", "input[name=ack]"}, secretSelector: "#pin"},
	{name: "tan", reset: true, tan: true, theme: func(c map[string]any) { c["imprint_url"] = "https://example.org/imprint" },
		mail:          map[string][]string{"de": {"Code aus dem Brief", "Sicherheitsfrage mit Antwort"}, "en": {"code from the letter", "security question with its answer"}},
		mailNot:       map[string][]string{"de": {"PIN", "weder geändert"}, "en": {"PIN", "never be changed"}},
		pageHas:       map[string][]string{"de": {"den Code aus dem Brief"}, "en": {"the code from the letter"}},
		pageHasFields: []string{"#q", "#a", "#tan"}, pageHasNot: []string{"#pin", "input[name=ack]"}, secretSelector: "#tan"},
}

// TestPagesInBrowserAllModes drives Debian's Chromium through every page
// in each mode — security question; no reset with the sender's PIN;
// security question with the sender's PIN; the letter's code (TAN) — in
// German and in English, and runs axe-core (WCAG 2.1 A/AA) on each: no
// serious or critical finding. The activation mail (rendered by the
// notify plugin from the event) and the activation page describe exactly
// that mode's steps. In settings the owner chooses another time zone and
// the inbox shows the message's time there. The daemon's browser test
// covers the way through the MTA; this one the breadth of pages.
//
// One Chromium serves all eight runs, each in a browser context of its
// own (like a fresh incognito window: no cookies, no cache), since
// starting Chromium is the slowest part on a loaded machine.
func TestPagesInBrowserAllModes(t *testing.T) {
	browsertest.Path(t)
	axeSrc := axeSource(t)
	root := browsertest.Start(t, browsertest.Options{IgnoreCertErrors: true, Timeout: 10 * time.Minute})
	if err := chromedp.Run(root); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	for _, m := range browserModes {
		for _, lang := range []string{"de", "en"} {
			t.Run(m.name+"/"+lang, func(t *testing.T) {
				browseMode(t, freshWindow(t, root), m, lang, axeSrc)
			})
		}
	}
}

// freshWindow opens a window in a browser context of its own (no
// cookies, storage or cache shared with other windows) in the browser of
// root, closed and disposed of at the end of the test. (chromedp's
// WithNewBrowserContext opens its tab without a window, which headless
// Chromium refuses with "no browser is open".)
func freshWindow(t *testing.T, root context.Context) context.Context {
	t.Helper()
	var bc cdp.BrowserContextID
	var tid target.ID
	err := chromedp.Run(root, chromedp.ActionFunc(func(ctx context.Context) error {
		exec := cdp.WithExecutor(ctx, chromedp.FromContext(ctx).Browser)
		var err error
		if bc, err = target.CreateBrowserContext().Do(exec); err != nil {
			return err
		}
		tid, err = target.CreateTarget("about:blank").WithBrowserContextID(bc).WithNewWindow(true).Do(exec)
		return err
	}))
	if err != nil {
		t.Fatalf("opening a window: %v", err)
	}
	ctx, cancel := chromedp.NewContext(root, chromedp.WithTargetID(tid))
	t.Cleanup(func() {
		cancel()
		err := chromedp.Run(root, chromedp.ActionFunc(func(ctx context.Context) error {
			return target.DisposeBrowserContext(bc).Do(cdp.WithExecutor(ctx, chromedp.FromContext(ctx).Browser))
		}))
		if err != nil {
			t.Errorf("closing the window: %v", err)
		}
	})
	return ctx
}

func browseMode(t *testing.T, ctx context.Context, m browserMode, lang, axeSrc string) {
	e := newEnv(t, func(c map[string]any) {
		c["default_language"] = lang // the organisation's: the activation mail's first language
		if !m.reset {
			c["reset_mode"] = "none"
		}
		c["sender_pin"], c["require_tan"] = m.pin, m.tan
		m.theme(c)
	})
	e.divert(testMsg, "bob@partner.test")
	link := e.srv.URL + e.activationLink("bob@partner.test")

	// The activation mail, as notify writes it: this mode's steps only.
	evs := e.host.eventsOf("webmailbox.activation")
	mail := renderNotice(t, evs[len(evs)-1])
	if !strings.Contains(mail, "\n"+lang+", ") {
		t.Errorf("activation mail not in %s first:\n%s", lang, mail)
	}
	for _, w := range m.mail[lang] {
		if !strings.Contains(mail, w) {
			t.Errorf("activation mail lacks %q:\n%s", w, mail)
		}
	}
	for _, w := range m.mailNot[lang] {
		if strings.Contains(mail, w) {
			t.Errorf("activation mail mentions %q:\n%s", w, mail)
		}
	}

	secret := ""
	switch {
	case m.pin:
		secret = e.host.eventsOf("webmailbox.pin")[0].Attributes["pin"]
	case m.tan:
		tan, l, _, err := e.sv.IssueTAN(context.Background(), "bob@partner.test", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(l)
		secret, link = tan, e.srv.URL+u.Path+"?"+u.RawQuery
	}
	var found []string
	check := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			vs, err := runAxe(ctx, axeSrc)
			for _, v := range vs {
				found = append(found, name+": "+v)
			}
			return err
		})
	}
	var actPage, actLang, errText string
	fields := map[string]bool{}
	probe := func(sels ...string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			for _, s := range sels {
				var n int
				if err := chromedp.Evaluate(fmt.Sprintf(`document.querySelectorAll(%q).length`, s), &n).Do(ctx); err != nil {
					return err
				}
				fields[s] = n > 0
			}
			return nil
		})
	}
	fillRest := func() []chromedp.Action {
		var a []chromedp.Action
		if m.reset {
			a = append(a, chromedp.SetValue(`#q`, "First pet?", chromedp.ByID), chromedp.SetValue(`#a`, "Rex", chromedp.ByID))
		} else {
			a = append(a, chromedp.Click(`input[name=ack]`, chromedp.ByQuery))
		}
		return a
	}
	steps := []chromedp.Action{
		network.Enable(),
		network.SetExtraHTTPHeaders(network.Headers{"Accept-Language": lang}),
		chromedp.ActionFunc(func(ctx context.Context) error { return cdppage.SetBypassCSP(axeSrc != "").Do(ctx) }),
		chromedp.Navigate(link),
		chromedp.WaitVisible(`#pw`, chromedp.ByID),
		chromedp.AttributeValue(`html`, "lang", &actLang, nil, chromedp.ByQuery),
		chromedp.Text(`main`, &actPage, chromedp.ByQuery),
		probe(append(append([]string{}, m.pageHasFields...), m.pageHasNot...)...),
		check("activation"),
		screenshot("activate-" + strings.ReplaceAll(m.name, "+", "-") + "-" + lang),
		chromedp.Click(`input[name=language][value=`+lang+`]`, chromedp.ByQuery),
		chromedp.SetValue(`#pw`, "correct horse", chromedp.ByID),
		chromedp.SetValue(`#pw2`, "correct horse", chromedp.ByID),
	}
	steps = append(steps, fillRest()...)
	if secret != "" {
		steps = append(steps, chromedp.SetValue(m.secretSelector, "WRONG1", chromedp.ByQuery),
			submit(`form[action$="/activate"] button[type=submit]`, `.error`),
			chromedp.Text(`#errsum`, &errText, chromedp.ByID),
			check("activation with an error"),
			chromedp.SetValue(`#pw`, "correct horse", chromedp.ByID),
			chromedp.SetValue(`#pw2`, "correct horse", chromedp.ByID),
			chromedp.SetValue(m.secretSelector, secret, chromedp.ByQuery))
		if m.reset {
			steps = append(steps, chromedp.SetValue(`#a`, "Rex", chromedp.ByID))
		} else {
			steps = append(steps, chromedp.Click(`input[name=ack]`, chromedp.ByQuery))
		}
	}
	var loginLang, dateBefore, dateAfter, nowAfter string
	steps = append(steps,
		submit(`form[action$="/activate"] button[type=submit]`, `form[action$="/login"]`),
		chromedp.AttributeValue(`html`, "lang", &loginLang, nil, chromedp.ByQuery),
		check("login"),
		chromedp.SetValue(`#addr`, "bob@partner.test", chromedp.ByID),
		chromedp.SendKeys(`#pw`, "wrong password", chromedp.ByID),
		submit(`form[action$="/login"] button[type=submit]`, `.error`),
		check("login failed"),
		chromedp.SendKeys(`#pw`, "correct horse", chromedp.ByID),
		submit(`form[action$="/login"] button[type=submit]`, `table.list`),
		chromedp.Text(`table.list tbody td:nth-child(3)`, &dateBefore, chromedp.ByQuery),
		check("inbox"),
		submit(`table.list a`, `pre.body`),
		check("message"),
		frameSizedToContent(),
		submit(`a[href$="/delete"]`, `form[action$="/delete"]`),
		check("delete question"),
		submit(`form[action$="/delete"] a`, `pre.body`),
		submit(`a[href*="compose?reply="]`, `#body`),
		check("compose"),
		chromedp.SetValue(`#to`, "mallory@evil.example", chromedp.ByID),
		submit(`form[action$="/send"] button[type=submit]`, `.error`),
		check("compose refused"),
		chromedp.Navigate(e.srv.URL+"/box/settings"),
		chromedp.WaitVisible(`#zone`, chromedp.ByID),
		check("settings"),
		// Another time zone: the inbox shows the message's time there.
		chromedp.SetValue(`#zone`, "America/New_York", chromedp.ByID),
		submit(`form[action$="/settings/zone"] button[type=submit]`, `.notice`),
		chromedp.Text(`#now`, &nowAfter, chromedp.ByID),
		check("settings saved"),
		screenshot(map[bool]string{true: "settings-" + lang}[m.name == "question"]),
		chromedp.Navigate(e.srv.URL+"/box/inbox"),
		chromedp.WaitVisible(`table.list`, chromedp.ByQuery),
		chromedp.Text(`table.list tbody td:nth-child(3)`, &dateAfter, chromedp.ByQuery),
		chromedp.Navigate(e.srv.URL+"/box/keys"),
		chromedp.WaitVisible(`h1`, chromedp.ByQuery),
		check("keys"),
		chromedp.Navigate(e.srv.URL+"/box/sent"),
		chromedp.WaitVisible(`h1`, chromedp.ByQuery),
		check("sent"),
		submit(`form[action$="/logout"] button`, `form[action$="/login"]`),
	)
	if m.reset {
		steps = append(steps, chromedp.Navigate(e.srv.URL+"/box/reset"), chromedp.WaitVisible(`#addr`, chromedp.ByID), check("reset"))
	}
	steps = append(steps,
		chromedp.Navigate(e.srv.URL+"/box/msg/999"),
		chromedp.WaitVisible(`h1`, chromedp.ByQuery),
		check("not logged in"),
	)
	if err := chromedp.Run(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}

	// The activation page: in the language, this mode's fields and texts.
	if actLang != lang {
		t.Errorf("activation page in %q, want %q", actLang, lang)
	}
	for _, s := range m.pageHasFields {
		if !fields[s] {
			t.Errorf("activation page lacks %s", s)
		}
	}
	for _, s := range m.pageHasNot {
		if fields[s] {
			t.Errorf("activation page has %s, not part of this mode", s)
		}
	}
	for _, w := range m.pageHas[lang] {
		if !strings.Contains(actPage, w) {
			t.Errorf("activation page lacks %q:\n%s", w, actPage)
		}
	}
	if secret != "" {
		want := T(lang, "err_pin")
		if m.tan {
			want = T(lang, "err_tan")
		}
		if !strings.Contains(errText, want) || strings.Contains(errText, T(lang, "err_pin_tan")) {
			t.Errorf("wrong secret: error %q, want %q", errText, want)
		}
	}
	if loginLang != lang {
		t.Errorf("pages after activation in %q, chosen %q", loginLang, lang)
	}
	// Arrived 10:00 UTC: 11:00 in Berlin (the organisation's zone), 05:00
	// in New York (the owner's choice).
	if !strings.Contains(dateBefore, "11:00") || !strings.Contains(dateAfter, "05:00") || !strings.Contains(nowAfter, "EST") {
		t.Errorf("time zone: inbox %q, then %q after choosing New York (now %q)", dateBefore, dateAfter, nowAfter)
	}
	for _, f := range found {
		t.Errorf("axe-core: %s", f)
	}
}

// screenshot saves the page as NAME.png in $POSTHORN_SCREENSHOTS, when
// set (the README's pictures of each mode: see plugins/webmailbox/README.md);
// an empty name takes none.
func screenshot(name string) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		dir := os.Getenv("POSTHORN_SCREENSHOTS")
		if dir == "" || name == "" {
			return nil
		}
		var buf []byte
		if err := chromedp.FullScreenshot(&buf, 100).Do(ctx); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644)
	})
}

// submit clicks sel, waits for the next page to replace this one, then
// for want on it (acting on the old page's nodes would fail at random).
func submit(sel, want string) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		if err := chromedp.Evaluate(`window.__old = true`, nil).Do(ctx); err != nil {
			return err
		}
		if err := chromedp.Click(sel, chromedp.ByQuery, chromedp.NodeVisible).Do(ctx); err != nil {
			return fmt.Errorf("click %s: %w", sel, err)
		}
		for {
			var loaded bool
			if err := chromedp.Evaluate(`window.__old === undefined && document.readyState === "complete"`, &loaded).Do(ctx); err == nil && loaded {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("after clicking %s: %w", sel, ctx.Err())
			case <-time.After(25 * time.Millisecond):
			}
		}
		if err := chromedp.WaitVisible(want, chromedp.ByQuery).Do(ctx); err != nil {
			return fmt.Errorf("after clicking %s, waiting for %s: %w", sel, want, err)
		}
		return nil
	})
}

// axeSource reads axe-core (fetched from npm by .ci/run into a cache
// outside the repository, or at $POSTHORN_AXE); "" when it is missing.
func axeSource(t *testing.T) string {
	path := os.Getenv("POSTHORN_AXE")
	if path == "" {
		home, _ := os.UserHomeDir()
		path = filepath.Join(home, ".cache", "posthorn-axe", "node_modules", "axe-core", "axe.min.js")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("axe-core not found (%v): accessibility checks skipped; .ci/run fetches it with npm, or set POSTHORN_AXE", err)
		return ""
	}
	return string(b)
}

// runAxe injects axe-core and returns its serious and critical WCAG 2.1
// A/AA findings on the current page.
func runAxe(ctx context.Context, src string) ([]string, error) {
	if src == "" {
		return nil, nil
	}
	if err := chromedp.Evaluate(src, nil).Do(ctx); err != nil {
		return nil, fmt.Errorf("injecting axe-core: %w", err)
	}
	var res string
	err := chromedp.Evaluate(`axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}).then(r => JSON.stringify(
		r.violations.filter(v => v.impact === "serious" || v.impact === "critical").map(v => v.impact + " " + v.id + ": " + v.help + " at " + v.nodes.map(n => n.target.join(" ")).join(", "))))`,
		&res, func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }).Do(ctx)
	if err != nil {
		return nil, err
	}
	var vs []string
	return vs, json.Unmarshal([]byte(res), &vs)
}

// frameSizedToContent waits until the HTML part's frame has been sized to
// its content by frame.js: the test message's HTML is a few lines, far
// less than the frame's 32rem (512 px) without the script.
func frameSizedToContent() chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		var h float64
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for {
			if err := chromedp.Evaluate(`document.querySelector("iframe.html").getBoundingClientRect().height`, &h).Do(ctx); err != nil {
				return err
			}
			if h > 20 && h < 300 {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("the HTML frame is %.0f px high, not sized to its few lines of content: %w", h, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}
