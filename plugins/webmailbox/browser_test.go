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

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/posthorn/posthorn/testbed/browsertest"
)

// TestPagesInBrowserAllModes drives Debian's Chromium through every page
// in each mode — question (English), no-reset with the sender's PIN
// (German), TAN letter (German) — and runs axe-core (WCAG 2.1 A/AA) on
// each: no serious or critical finding. The daemon's browser test covers
// the way through the MTA; this one the breadth of pages.
func TestPagesInBrowserAllModes(t *testing.T) {
	browsertest.Path(t)
	axeSrc := axeSource(t)
	modes := []struct {
		name   string
		change func(map[string]any)
		lang   string
	}{
		{"question", func(c map[string]any) { c["organization"] = "Example GmbH"; c["support_contact"] = "+49 30 1234-0" }, "en"},
		{"none+pin", func(c map[string]any) {
			c["reset_mode"] = "none"
			c["sender_pin"] = true
			c["primary_color"] = "#0b5e3a"
		}, "de"},
		{"tan", func(c map[string]any) { c["require_tan"] = true; c["imprint_url"] = "https://example.org/imprint" }, "de"},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m.change)
			e.divert(testMsg, "bob@partner.test")
			link := e.srv.URL + e.activationLink("bob@partner.test")
			secret := ""
			switch {
			case strings.Contains(m.name, "pin"):
				secret = e.host.eventsOf("webmailbox.pin")[0].Attributes["pin"]
			case m.name == "tan":
				tan, l, _, err := e.sv.IssueTAN(context.Background(), "bob@partner.test", time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				u, _ := url.Parse(l)
				secret, link = tan, e.srv.URL+u.Path+"?"+u.RawQuery
			}
			ctx := browsertest.Start(t, browsertest.Options{Lang: m.lang, IgnoreCertErrors: true})
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
			secretField := "#pin"
			if m.name == "tan" {
				secretField = "#tan"
			}
			activate := []chromedp.Action{
				chromedp.ActionFunc(func(ctx context.Context) error { return cdppage.SetBypassCSP(axeSrc != "").Do(ctx) }),
				chromedp.Navigate(link),
				chromedp.WaitVisible(`#pw`, chromedp.ByID),
				chromedp.Click(`input[name=language][value=`+m.lang+`]`, chromedp.ByQuery),
				check("activation"),
				chromedp.SendKeys(`#pw`, "correct horse", chromedp.ByID),
				chromedp.SendKeys(`#pw2`, "correct horse", chromedp.ByID),
			}
			if m.name == "none+pin" {
				activate = append(activate, chromedp.Click(`input[name=ack]`, chromedp.ByQuery))
			} else {
				activate = append(activate, chromedp.SendKeys(`#q`, "First pet?", chromedp.ByID), chromedp.SendKeys(`#a`, "Rex", chromedp.ByID))
			}
			if secret != "" {
				activate = append(activate,
					chromedp.SendKeys(secretField, "WRONG1", chromedp.ByQuery),
					submit(`form[action$="/activate"] button[type=submit]`, `.error`),
					check("activation with an error"),
					chromedp.SetValue(`#pw`, "correct horse", chromedp.ByID),
					chromedp.SetValue(`#pw2`, "correct horse", chromedp.ByID),
					chromedp.SetValue(secretField, secret, chromedp.ByQuery))
				if m.name == "none+pin" {
					activate = append(activate, chromedp.Click(`input[name=ack]`, chromedp.ByQuery))
				} else {
					activate = append(activate, chromedp.SetValue(`#a`, "Rex", chromedp.ByID))
				}
			}
			var loginLang string
			steps := append(activate,
				submit(`form[action$="/activate"] button[type=submit]`, `form[action$="/login"]`),
				chromedp.AttributeValue(`html`, "lang", &loginLang, nil, chromedp.ByQuery),
				check("login"),
				chromedp.SetValue(`#addr`, "bob@partner.test", chromedp.ByID),
				chromedp.SendKeys(`#pw`, "wrong password", chromedp.ByID),
				submit(`form[action$="/login"] button[type=submit]`, `.error`),
				check("login failed"),
				chromedp.SendKeys(`#pw`, "correct horse", chromedp.ByID),
				submit(`form[action$="/login"] button[type=submit]`, `table.list`),
				check("inbox"),
				submit(`table.list a`, `pre.body`),
				check("message"),
				submit(`a[href$="/delete"]`, `form[action$="/delete"]`),
				check("delete question"),
				submit(`form[action$="/delete"] a`, `pre.body`),
				submit(`a[href*="compose?reply="]`, `#body`),
				check("compose"),
				chromedp.SetValue(`#to`, "mallory@evil.example", chromedp.ByID),
				submit(`form[action$="/send"] button[type=submit]`, `.error`),
				check("compose refused"),
				chromedp.Navigate(e.srv.URL+"/box/settings"),
				chromedp.WaitVisible(`h1`, chromedp.ByQuery),
				check("settings"),
				chromedp.Navigate(e.srv.URL+"/box/keys"),
				chromedp.WaitVisible(`h1`, chromedp.ByQuery),
				check("keys"),
				chromedp.Navigate(e.srv.URL+"/box/sent"),
				chromedp.WaitVisible(`h1`, chromedp.ByQuery),
				check("sent"),
				submit(`form[action$="/logout"] button`, `form[action$="/login"]`),
				chromedp.Navigate(e.srv.URL+"/box/reset"),
				chromedp.WaitVisible(`h1`, chromedp.ByQuery),
				check("reset"),
				chromedp.Navigate(e.srv.URL+"/box/msg/999"),
				chromedp.WaitVisible(`h1`, chromedp.ByQuery),
				check("not logged in"),
			)
			if err := chromedp.Run(ctx, steps...); err != nil {
				t.Fatalf("browser: %v", err)
			}
			if loginLang != m.lang {
				t.Errorf("pages after activation in %q, chosen %q", loginLang, m.lang)
			}
			for _, f := range found {
				t.Errorf("axe-core: %s", f)
			}
		})
	}
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
