package webmailbox

import (
	"bytes"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestTANLetterAndActivation(t *testing.T) {
	e := newEnv(t, func(c map[string]any) { c["require_tan"] = true })
	e.divert(testMsg, "bob@partner.test")
	b := e.browser()
	// Without a TAN the activation link alone is not enough.
	if r := b.activate("bob@partner.test", "correct horse", url.Values{"question": {"q?"}, "answer": {"abc"}, "tan": {"AAAA-BBBB-CCCC"}}); r.code != 422 {
		t.Fatalf("activation without an issued TAN: %d", r.code)
	}
	letter := filepath.Join(t.TempDir(), "letter.pdf")
	var stdout bytes.Buffer
	err := TANCommand([]string{"issue", "-data", e.dir, "-base-url", "https://mail.example.org/box", "-o", letter,
		"-org", "Example GmbH", "-contact", "Support: +49 30 1234-0", "-postal", "Bob Partner|Hauptstraße 1|10115 Berlin", "Bob@Partner.test"}, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	pdf, err := os.ReadFile(letter)
	if err != nil || !bytes.HasPrefix(pdf, []byte("%PDF-")) {
		t.Fatalf("letter: %v", err)
	}
	bin, err := exec.LookPath("pdftotext")
	if err != nil {
		t.Skip("pdftotext not installed: cannot read the TAN from the letter")
	}
	out, err := exec.Command(bin, "-enc", "UTF-8", letter, "-").Output()
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	tan := regexp.MustCompile(`[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}`).FindString(text)
	link := regexp.MustCompile(`https://mail\.example\.org/box/activate\?t=[A-Za-z0-9_-]+`).FindString(text)
	if tan == "" || link == "" || !strings.Contains(text, "Hauptstraße 1") {
		t.Fatalf("letter text lacks TAN, link or address:\n%s", text)
	}
	// Letterhead and date line; the code to type is short and has no
	// confusable characters.
	if !regexp.MustCompile(`\n\d{1,2}\. (Januar|Februar|März|April|Mai|Juni|Juli|August|September|Oktober|November|Dezember) 20\d\d\n`).MatchString(text) {
		t.Errorf("letter has no date line:\n%s", text)
	}
	for _, want := range []string{"Example GmbH", "Support: +49 30 1234-0", "Ihr Code:"} {
		if !strings.Contains(text, want) {
			t.Errorf("letter lacks %q:\n%s", want, text)
		}
	}
	if code := strings.ReplaceAll(tan, "-", ""); len(code) > 12 || strings.ContainsAny(code, "0O1I") {
		t.Errorf("code to type %q: longer than 12 or confusable", code)
	}
	// The QR code decodes to the link.
	if zbar, err := exec.LookPath("zbarimg"); err != nil {
		t.Log("zbarimg not installed (Debian zbar-tools; .ci/run installs it): QR code not decoded")
	} else if ppm, err := exec.LookPath("pdftoppm"); err != nil {
		t.Log("pdftoppm not installed: QR code not decoded")
	} else {
		png := filepath.Join(t.TempDir(), "letter")
		if out, err := exec.Command(ppm, "-png", "-r", "150", "-singlefile", letter, png).CombinedOutput(); err != nil {
			t.Fatalf("pdftoppm: %v %s", err, out)
		}
		out, err := exec.Command(zbar, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", png+".png").Output()
		if err != nil {
			t.Fatalf("zbarimg found no QR code: %v", err)
		}
		if got := strings.TrimSpace(string(out)); got != link {
			t.Errorf("QR code = %q, want %q", got, link)
		}
	}
	u, _ := url.Parse(link)
	r := b.get(u.Path + "?" + u.RawQuery)
	if r.code != 200 || !strings.Contains(r.body, `name="tan"`) {
		t.Fatalf("activation page from the letter %s: %d\n%s", link, r.code, text)
	}
	form := url.Values{"csrf": {csrfRE.FindStringSubmatch(r.body)[1]}, "t": {u.Query().Get("t")}, "language": {"de"},
		"password": {"correct horse"}, "password2": {"correct horse"}, "question": {"q?"}, "answer": {"abc"}}
	form.Set("tan", "ZZZZ-ZZZZ-ZZZZ")
	if r := b.post("/box/activate", form); r.code != 422 {
		t.Fatalf("wrong TAN: %d", r.code)
	}
	form.Set("tan", strings.ToLower(strings.ReplaceAll(tan, "-", " ")))
	if r := b.post("/box/activate", form); r.code != 303 {
		t.Fatalf("activation with the TAN: %d %s", r.code, r.body)
	}
	if r := b.login("bob@partner.test", "correct horse"); r.code != 303 {
		t.Fatalf("login: %d", r.code)
	}
	// A second TAN for an activated mailbox is refused.
	if err := TANCommand([]string{"issue", "-data", e.dir, "-base-url", "https://mail.example.org/box", "-o", letter, "bob@partner.test"}, &stdout); err == nil {
		t.Error("TAN issued for an activated mailbox")
	}
	if err := TANCommand([]string{"issue", "-data", e.dir, "not an address"}, &stdout); err == nil {
		t.Error("bad arguments accepted")
	}
}
