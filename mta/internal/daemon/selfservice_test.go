package daemon_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/browsertest"
)

// TestSelfServiceInBrowser: a user logs in to the self-service page in
// Chromium (German first, then English), switches their secure alias on at
// level dane-only, and the next RCPT to the alias is accepted; switched
// off again, it is refused. No JavaScript on the page is needed (the
// forms are plain HTML; the test's only script is chromedp's own).
func TestSelfServiceInBrowser(t *testing.T) {
	browsertest.Path(t)
	e := startEnvConfig(t, func(s string) string {
		return s + `
[directory]
kind = "sqlite"
path = "directory.db"
[self_service]
address = "127.0.0.1:0"
`
	})
	for _, args := range []string{
		`{"op":"put-domain","domain":"example.org"}`,
		`{"op":"put-mailbox","address":"carol@example.org","password":"carol's password"}`,
	} {
		if _, err := control.Call(e.cfg.Control.Socket, control.Request{Cmd: "directory", Args: json.RawMessage(args)}); err != nil {
			t.Fatal(err)
		}
	}
	rcpt := func(addr string) error {
		c := e.dialTLS(smtpd.MX)
		if err := c.Mail("someone@remote.example", nil); err != nil {
			t.Fatal(err)
		}
		return c.Rcpt(addr, nil)
	}
	if err := rcpt("carol@secure.example.org"); codeOf(err) != 550 {
		t.Fatalf("secure alias before the opt-in: want 550, got %v", err)
	}

	ctx := browsertest.Start(t, browsertest.Options{IgnoreCertErrors: true})
	base := "https://" + e.d.SelfServiceAddr()
	var loginDE, wrong, settingsDE, saved, state, warnings string
	err := chromedp.Run(ctx,
		chromedp.Navigate(base+"/?lang=de"),
		chromedp.WaitVisible(`#address`, chromedp.ByID),
		chromedp.Text(`main`, &loginDE, chromedp.ByQuery),
		chromedp.SendKeys(`#address`, "carol@example.org", chromedp.ByID),
		chromedp.SendKeys(`#password`, "not her password", chromedp.ByID),
		clickAndLoad(`form[action="/login"] button[type=submit]`, `.error`),
		chromedp.Text(`.error`, &wrong, chromedp.ByQuery),
		chromedp.SendKeys(`#address`, "carol@example.org", chromedp.ByID),
		chromedp.SendKeys(`#password`, "carol's password", chromedp.ByID),
		clickAndLoad(`form[action="/login"] button[type=submit]`, `#secure`),
		chromedp.Text(`main`, &settingsDE, chromedp.ByQuery),
		chromedp.Text(`main fieldset`, &warnings, chromedp.ByQuery),
		chromedp.Click(`#secure`, chromedp.ByID),
		chromedp.Click(`#level-dane-only`, chromedp.ByID),
		clickAndLoad(`form[action="/settings"] button[type=submit]`, `.notice`),
		chromedp.Text(`.notice`, &saved, chromedp.ByQuery),
		chromedp.Text(`#state`, &state, chromedp.ByID),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	for what, c := range map[string][2]string{
		"German login page":  {loginDE, "Melden Sie sich"},
		"wrong password":     {wrong, "Passwort falsch"},
		"settings":           {settingsDE, "carol@secure.example.org"},
		"dane-only warning":  {warnings, "Achtung: Viele E-Mail-Anbieter"},
		"verify warning":     {warnings, "Die meisten E-Mails"},
		"saved notice":       {saved, "Gespeichert"},
		"state after saving": {state, "an (dane-only)"},
	} {
		if !strings.Contains(c[0], c[1]) {
			t.Errorf("%s: %q does not contain %q", what, c[0], c[1])
		}
	}
	if err := rcpt("carol@secure.example.org"); err != nil {
		t.Errorf("secure alias after the opt-in in the browser: %v", err)
	}
	var shown string
	if err := chromedp.Run(ctx, chromedp.Text(`#state`, &shown, chromedp.ByID)); err != nil || !strings.Contains(shown, "dane-only") {
		t.Errorf("state shown: %q %v", shown, err)
	}

	// In English, switched off again.
	var settingsEN, stateOff string
	err = chromedp.Run(ctx,
		clickAndLoad(`a[hreflang="en"]`, `#secure`),
		chromedp.Text(`main`, &settingsEN, chromedp.ByQuery),
		chromedp.Click(`#secure`, chromedp.ByID),
		clickAndLoad(`form[action="/settings"] button[type=submit]`, `.notice`),
		chromedp.Text(`#state`, &stateOff, chromedp.ByID),
		clickAndLoad(`form[action="/logout"] button[type=submit]`, `#address`),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	if !strings.Contains(settingsEN, "Expert setting") || stateOff != "off" {
		t.Errorf("English page: %q, state %q", settingsEN, stateOff)
	}
	if err := rcpt("carol@secure.example.org"); codeOf(err) != 550 {
		t.Errorf("secure alias after the opt-out: want 550, got %v", err)
	}
}
