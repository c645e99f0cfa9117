package webmailbox

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestParseMessageBrokenInput(t *testing.T) {
	for name, raw := range map[string]string{
		"no header end":      "Subject: x",
		"multipart no bound": "Content-Type: multipart/mixed\r\n\r\nx",
		"unterminated":       "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\nhello",
		"deep":               "Content-Type: multipart/mixed; boundary=a\r\n\r\n" + strings.Repeat("--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n", 40),
	} {
		p, err := ParseMessage([]byte(raw))
		if p == nil {
			t.Errorf("%s: nil result", name)
		}
		if err != nil && !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: error %v does not wrap ErrBadMessage", name, err)
		}
	}
	if _, err := ParseMessage([]byte("Content-Type: multipart/mixed\r\n\r\nx")); err == nil || !strings.Contains(err.Error(), "without boundary") {
		t.Errorf("missing boundary: %v", err)
	}
	// What was readable is kept.
	p, _ := ParseMessage([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\nhello\r\n--a\r\nbroken"))
	if !strings.Contains(p.Text, "hello") {
		t.Errorf("text lost: %q", p.Text)
	}
}

func TestParseMessageCharsetsAndNames(t *testing.T) {
	raw := "Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe aus K=F6ln\r\n" +
		"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"../../etc/passwd\"\r\n\r\nx\r\n" +
		"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''Bericht%20M%C3%A4rz.pdf\r\n\r\ny\r\n--b--\r\n"
	p, err := ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if p.Text != "Grüße aus Köln\r\n" && p.Text != "Grüße aus Köln" {
		t.Errorf("text = %q", p.Text)
	}
	if len(p.Attachments) != 2 || p.Attachments[0].Name != "passwd" || p.Attachments[1].Name != "Bericht März.pdf" {
		t.Errorf("attachments = %+v", p.Attachments)
	}
	if m := metaOf([]byte(raw)); m.Subject != "Grüße" {
		t.Errorf("subject = %q", m.Subject)
	}
}

func TestSanitize(t *testing.T) {
	in := `<div onclick="x()" style="background:url(https://t/x)"><b>bold</b><script>alert(1)</script>` +
		`<a href="javascript:alert(1)">js</a><a href="https://ok.example/">ok</a><img src="https://t/p.gif" alt="p">` +
		`<img src="data:image/png;base64,AAAA"><form action="https://evil"><input name=x></form><style>*{}</style>text &lt;kept&gt;</div>`
	out := Sanitize(in)
	for _, bad := range []string{"onclick", "style", "script", "alert", "javascript", "https://t/", "<form", "<input"} {
		if strings.Contains(out, bad) {
			t.Errorf("%q survived: %s", bad, out)
		}
	}
	for _, good := range []string{"<b>bold</b>", `href="https://ok.example/"`, `src="data:image/png;base64,AAAA"`, "text &lt;kept&gt;", `alt="p"`} {
		if !strings.Contains(out, good) {
			t.Errorf("%q missing: %s", good, out)
		}
	}
	if rel := regexp.MustCompile(`rel="([^"]*)"`).FindStringSubmatch(out); rel == nil || !strings.Contains(rel[1], "noopener") ||
		!strings.Contains(rel[1], "noreferrer") || !strings.Contains(rel[1], "nofollow") {
		t.Errorf("links lack rel=noopener noreferrer nofollow: %s", out)
	}
	if got := htmlToText("<p>Hello <b>Bob</b></p><script>x</script><p>Bye</p>"); got != "Hello Bob\n\nBye" {
		t.Errorf("htmlToText = %q", got)
	}
}

// TestTextsComplete checks that every text has both languages and every
// key the templates use exists.
func TestTextsComplete(t *testing.T) {
	for k, v := range texts {
		if v[0] == "" || v[1] == "" {
			t.Errorf("text %q lacks a language", k)
		}
	}
	b, err := os.ReadFile("templates/pages.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\.T "([a-z_0-9]+)"`).FindAllStringSubmatch(string(b), -1) {
		if _, ok := texts[m[1]]; !ok {
			t.Errorf("template uses unknown text %q", m[1])
		}
	}
	for _, src := range []string{"web.go", "service.go", "keys.go"} {
		b, _ := os.ReadFile(src)
		for _, m := range regexp.MustCompile(`(?:formError\{|Error = |Notice = |fail\([^"\n]*)"([a-z_]+)"`).FindAllStringSubmatch(string(b), -1) {
			if _, ok := texts[m[1]]; !ok {
				t.Errorf("%s uses unknown text %q", src, m[1])
			}
		}
	}
}

func TestInlineImages(t *testing.T) {
	raw := "Content-Type: multipart/related; boundary=r\r\n\r\n" +
		"--r\r\nContent-Type: text/html\r\n\r\n<p>Logo <img src=\"cid:logo@x\"> and <img src=\"cid:missing\"></p>\r\n" +
		"--r\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--r--\r\n"
	p, err := ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	out := SanitizeWith(p.HTML, p.inlineImages())
	if !strings.Contains(out, `src="data:image/png;base64,iVBORw0KGgo="`) || strings.Contains(out, "cid:") {
		t.Errorf("inline image: %s", out)
	}
}
