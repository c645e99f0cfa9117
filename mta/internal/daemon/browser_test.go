package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/posthorn/posthorn/testbed/browsertest"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// TestWebMailboxInBrowser drives Debian's Chromium (headless, through
// chromedp) the way a recipient would: the activation link from the
// notification, a password and a security question, logging in, the
// inbox, the message, and a reply that reaches the sender through our
// queue.
// With POSTHORN_SCREENSHOTS=DIR it also saves the pages as PNGs.
func TestWebMailboxInBrowser(t *testing.T) {
	browsertest.Path(t)
	wmb := pluginBinary(t, "webmailbox")
	notify := pluginBinary(t, "notify")
	web := freeLocalAddr(t)
	e, m := remoteEnv(t, remotemta.Config{}, fmt.Sprintf(`
[[plugin]]
name = "notify"
path = %q
[plugin.config]
from = "notices@example.test"

[[plugin]]
name = "webmailbox"
path = %q
timeout = "60s"
[plugin.config]
base_url = "http://%s"
listen = %q
allowed_recipients = ["*@example.test"]
reset_mode = "question"
kdf = { time = 1, memory_kib = 8192, threads = 1 }
organization = "Example Stadtwerke"
support_contact = "+49 30 1234-567"
imprint_url = "https://example.test/imprint"
privacy_url = "https://example.test/privacy"

[encryption]
methods = ["webmailbox"]
`, notify, wmb, web, web))
	e.waitPluginsRunning(2)
	// alice marks her mail [secure]: it must not leave in the clear.
	s := e.login()
	if err := send(s, testUser, []string{"friend@remote.test"}, "From: alice@example.test\r\nTo: friend@remote.test\r\nSubject: [secure] the contract\r\n\r\nConfidential terms.\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs, err := m.WaitMessages(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	note := strings.ReplaceAll(strings.ReplaceAll(string(msgs[0].Data), "=\r\n", ""), "=3D", "=")
	link := regexp.MustCompile(`http://` + regexp.QuoteMeta(web) + `/activate\?t=[A-Za-z0-9_-]+`).FindString(note)
	if link == "" {
		t.Fatalf("no activation link in the notification:\n%s", note)
	}

	ctx := browsertest.Start(t, browsertest.Options{})
	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			out := os.Getenv("POSTHORN_SCREENSHOTS")
			if out == "" {
				return nil
			}
			var buf []byte
			if err := chromedp.FullScreenshot(&buf, 100).Do(ctx); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(out, name+".png"), buf, 0o644)
		})
	}
	var inbox, body, sent, typo, draft string
	ax := newAxe(t)
	err = chromedp.Run(ctx,
		ax.bypassCSP(),
		chromedp.Navigate(link),
		chromedp.WaitVisible(`#pw`, chromedp.ByID),
		ax.check("activation"),
		shot("1-activate"),
		chromedp.SendKeys(`#pw`, "a long passphrase", chromedp.ByID),
		chromedp.SendKeys(`#pw2`, "a long passphrase", chromedp.ByID),
		chromedp.SendKeys(`#q`, "First pet?", chromedp.ByID),
		chromedp.SendKeys(`#a`, "Rex", chromedp.ByID),
		clickAndLoad(`form[action$="/activate"] button[type=submit]`, `form[action$="/login"]`),
		// Activated: now log in as a returning recipient would.
		chromedp.SetValue(`#addr`, "friend@remote.test", chromedp.ByID),
		chromedp.SendKeys(`#pw`, "a long passphrase", chromedp.ByID),
		ax.check("login"),
		shot("2-login"),
		clickAndLoad(`form[action$="/login"] button[type=submit]`, `table.list`),
		chromedp.Text(`table.list`, &inbox, chromedp.ByQuery),
		ax.check("inbox"),
		shot("3-inbox"),
		clickAndLoad(`table.list a`, `pre.body`),
		chromedp.Text(`pre.body`, &body, chromedp.ByQuery),
		ax.check("message"),
		shot("4-message"),
		clickAndLoad(`a[href*="compose?reply="]`, `#body`),
		chromedp.SendKeys(`#body`, "Agreed. Signed copy follows.\n", chromedp.ByID),
		ax.check("compose"),
		shot("5-reply"),
		// A typo in the address (the domain is allowed, the mailbox does
		// not exist): a clear message, the draft kept.
		chromedp.SetValue(`#to`, "alcie@example.test", chromedp.ByID),
		clickAndLoad(`form[action$="/send"] button[type=submit]`, `.error`),
		chromedp.Text(`.error`, &typo, chromedp.ByQuery),
		ax.check("compose with an error"),
		chromedp.Value(`#body`, &draft, chromedp.ByID),
		chromedp.SetValue(`#to`, "alice@example.test", chromedp.ByID),
		clickAndLoad(`form[action$="/send"] button[type=submit]`, `.notice`),
		chromedp.Text(`.notice`, &sent, chromedp.ByQuery),
		ax.check("inbox with a notice"),
		shot("6-sent"),
		// The same pages on a phone.
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
		chromedp.Reload(),
		chromedp.WaitVisible(`table.list`, chromedp.ByQuery),
		shot("phone-inbox"),
		clickAndLoad(`table.list a`, `pre.body`),
		ax.check("message on a phone"),
		shot("phone-message"),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	if !strings.Contains(inbox, "the contract") || strings.Contains(inbox, "[secure]") {
		t.Errorf("inbox: %q", inbox)
	}
	if !strings.Contains(body, "Confidential terms.") {
		t.Errorf("message body: %q", body)
	}
	ax.report()
	if !strings.Contains(typo, "alcie@example.test") || !strings.Contains(draft, "Agreed. Signed copy follows.") {
		t.Errorf("reply to a mistyped address: %q, draft %q", typo, draft)
	}
	if !strings.Contains(sent, "sent") && !strings.Contains(sent, "gesendet") {
		t.Errorf("no confirmation after sending: %q", sent)
	}
	// The reply reaches alice through Host.Submit and our queue.
	reply := e.waitMail("example.test", "alice", 1, 20*time.Second)[0]
	if !strings.Contains(reply, "Agreed. Signed copy follows.") || !strings.Contains(reply, "friend@remote.test") {
		t.Fatalf("reply:\n%s\n(page after sending: %q)", reply, sent)
	}
}

// clickAndLoad clicks the element sel, which must lead to a new page,
// waits until that page has replaced the old one and finished loading,
// and then until want is visible on it. Querying right after a click
// could otherwise find the old page's nodes, which vanish under the
// next action ("No node with given id found").
func clickAndLoad(sel, want string) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		if err := chromedp.Evaluate(`window.__posthornOldPage = true`, nil).Do(ctx); err != nil {
			return err
		}
		if err := chromedp.Click(sel, chromedp.ByQuery, chromedp.NodeVisible).Do(ctx); err != nil {
			return fmt.Errorf("click %s: %w", sel, err)
		}
		for {
			var loaded bool
			// Errors while the old document goes away are expected: ask again.
			err := chromedp.Evaluate(`window.__posthornOldPage === undefined && document.readyState === "complete"`, &loaded).Do(ctx)
			if err == nil && loaded {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for the page after clicking %s: %w", sel, ctx.Err())
			case <-time.After(25 * time.Millisecond):
			}
		}
		if err := chromedp.WaitVisible(want, chromedp.ByQuery).Do(ctx); err != nil {
			return fmt.Errorf("after clicking %s, waiting for %s: %w", sel, want, err)
		}
		return nil
	})
}

// axe runs axe-core (the npm package, fetched by .ci/run into a cache
// outside the repository) on pages and collects serious and critical
// WCAG 2.1 A/AA violations. Without the file the checks are skipped with
// a message.
type axe struct {
	t          *testing.T
	src        string
	violations []string
}

func newAxe(t *testing.T) *axe {
	path := os.Getenv("POSTHORN_AXE")
	if path == "" {
		home, _ := os.UserHomeDir()
		path = filepath.Join(home, ".cache", "posthorn-axe", "node_modules", "axe-core", "axe.min.js")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("axe-core not found (%v): accessibility checks skipped; .ci/run fetches it with npm, or set POSTHORN_AXE", err)
		return &axe{t: t}
	}
	return &axe{t: t, src: string(b)}
}

// bypassCSP lets the test inject axe into pages whose CSP forbids scripts.
func (a *axe) bypassCSP() chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		if a.src == "" {
			return nil
		}
		return page.SetBypassCSP(true).Do(ctx)
	})
}

func (a *axe) check(name string) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		if a.src == "" {
			return nil
		}
		if err := chromedp.Evaluate(a.src, nil).Do(ctx); err != nil {
			return fmt.Errorf("injecting axe-core: %w", err)
		}
		var res string
		err := chromedp.Evaluate(`axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}).then(r => JSON.stringify(
			r.violations.filter(v => v.impact === "serious" || v.impact === "critical").map(v => v.impact + " " + v.id + ": " + v.help + " at " + v.nodes.map(n => n.target.join(" ")).join(", "))))`,
			&res, func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }).Do(ctx)
		if err != nil {
			return fmt.Errorf("axe-core on %s: %w", name, err)
		}
		var vs []string
		if err := json.Unmarshal([]byte(res), &vs); err != nil {
			return fmt.Errorf("axe-core result on %s: %w", name, err)
		}
		for _, v := range vs {
			a.violations = append(a.violations, name+": "+v)
		}
		return nil
	})
}

func (a *axe) report() {
	for _, v := range a.violations {
		a.t.Errorf("axe-core: %s", v)
	}
}
