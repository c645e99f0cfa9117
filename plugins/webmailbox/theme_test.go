package webmailbox

import (
	"html"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTheming (issue 14.7): the operator's name, logo, colour, support
// contact and links on every page; a colour white text cannot be read on
// is refused.
func TestTheming(t *testing.T) {
	logo := []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><rect width="40" height="40" fill="#0a5"/></svg>`)
	e, b := loggedIn(t, func(c map[string]any) {
		c["organization"] = "Stadtwerke Musterstadt"
		c["primary_color"] = "#0b5e3a"
		c["support_contact"] = "+49 30 1234-567"
		c["imprint_url"] = "https://example.org/imprint"
		c["privacy_url"] = "https://example.org/privacy"
		c["logo_file"] = "logo.svg"
	}, func(dir string) { os.WriteFile(filepath.Join(dir, "logo.svg"), logo, 0o600) })
	// Every notification carries the theming in its footer.
	e.divert(testMsg, "bob@partner.test")
	nm := e.host.eventsOf("webmailbox.new_message")
	text := renderNotice(t, nm[len(nm)-1])
	for _, want := range []string{"Stadtwerke Musterstadt", "Help: +49 30 1234-567", "Imprint: https://example.org/imprint", "Privacy: https://example.org/privacy"} {
		if !strings.Contains(text, want) {
			t.Errorf("notification lacks %q:\n%s", want, text)
		}
	}
	id := msgLinkRE.FindStringSubmatch(b.get("/box/inbox").body)[1]
	for _, p := range []string{"/box/inbox", "/box/msg/" + id, "/box/compose", "/box/settings", "/box/login"} {
		r := b.get(p)
		r.body = html.UnescapeString(r.body)
		for _, want := range []string{"Stadtwerke Musterstadt", `src="/box/logo"`, "+49 30 1234-567", `href="https://example.org/imprint"`, `href="https://example.org/privacy"`, "<h1>"} {
			if !strings.Contains(r.body, want) {
				t.Errorf("%s lacks %q", p, want)
			}
		}
	}
	if r := b.get("/box/style.css"); !strings.Contains(r.body, "--primary:#0b5e3a") {
		t.Errorf("style.css lacks the colour")
	}
	if r := b.get("/box/logo"); r.code != 200 || r.h.Get("Content-Type") != "image/svg+xml" || !strings.Contains(r.h.Get("Content-Security-Policy"), "sandbox") {
		t.Errorf("logo: %d %q %q", r.code, r.h.Get("Content-Type"), r.h.Get("Content-Security-Policy"))
	}
	// Errors next to their field, summarised in a live region.
	r := b.post("/box/settings", url.Values{"csrf": {b.csrf("/box/settings")}, "old": {"correct horse"}, "password": {"short"}, "password2": {"short"}})
	if !strings.Contains(r.body, `aria-invalid="true" aria-errormessage="pw-err"`) || !strings.Contains(r.body, `<p class="field-error" id="pw-err" aria-live="polite">`) ||
		!strings.Contains(r.body, `aria-live="polite"`) || strings.Index(r.body, "<h1>") > strings.Index(r.body, `class="error"`) {
		t.Errorf("field error: %s", r.body)
	}
	for _, bad := range []map[string]any{{"primary_color": "#ffcc00"}, {"primary_color": "green"}, {"imprint_url": "javascript:x"}, {"logo_file": "missing.png"}} {
		cfg := baseConfig()
		for k, v := range bad {
			cfg[k] = v
		}
		if _, err := (&Config{BaseURL: "https://x.example", AllowedRecipients: []string{"*@x.example"}, PrimaryColor: str(cfg["primary_color"]),
			ImprintURL: str(cfg["imprint_url"]), LogoFile: str(cfg["logo_file"])}).validate(t.TempDir()); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
