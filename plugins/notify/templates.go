package notify

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"
)

//go:embed templates/*.tmpl
var builtin embed.FS

// Languages with built-in templates.
var languages = []string{"en", "de"}

func hasLang(l string) bool {
	for _, x := range languages {
		if x == l {
			return true
		}
	}
	return false
}

// templates are the notification templates by event type and language.
type templates struct {
	m     map[string]map[string]*template.Template // type → lang → template
	files map[string]string                        // type.lang → where from
}

func (t *templates) has(typ string) bool { return len(t.m[typ]) > 0 }

func (t *templates) count() int { return len(t.files) }

// pick chooses the template for an event: the language hint's primary
// subtag ("de-AT" → "de"), else the default language, else English, else
// any.
func (t *templates) pick(typ, hint, def string) (*template.Template, string) {
	byLang := t.m[typ]
	lang := strings.ToLower(hint)
	if i := strings.IndexAny(lang, "-_"); i >= 0 {
		lang = lang[:i]
	}
	for _, l := range []string{lang, def, "en"} {
		if tm := byLang[l]; tm != nil {
			return tm, l
		}
	}
	langs := make([]string, 0, len(byLang))
	for l := range byLang {
		langs = append(langs, l)
	}
	sort.Strings(langs)
	if len(langs) == 0 {
		return nil, ""
	}
	return byLang[langs[0]], langs[0]
}

// loadTemplates parses the built-in templates, then those in dir (if
// any), which replace built-in ones of the same name.
func loadTemplates(dir string) (*templates, error) {
	t := &templates{m: map[string]map[string]*template.Template{}, files: map[string]string{}}
	sub, _ := fs.Sub(builtin, "templates")
	if err := t.loadFS(sub, "built-in"); err != nil {
		return nil, err
	}
	if dir != "" {
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("%s is not a directory", dir)
		}
		if err := t.loadFS(os.DirFS(dir), dir); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *templates) loadFS(fsys fs.FS, where string) error {
	names, err := fs.Glob(fsys, "*.tmpl")
	if err != nil {
		return err
	}
	for _, name := range names {
		base := strings.TrimSuffix(name, ".tmpl")
		i := strings.LastIndexByte(base, '.')
		if i <= 0 || len(base)-i-1 < 2 || len(base)-i-1 > 3 {
			return fmt.Errorf("%s: template names are TYPE.LANG.tmpl, like webmailbox.activation.de.tmpl", filepath.Join(where, name))
		}
		typ, lang := base[:i], strings.ToLower(base[i+1:])
		text, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		tm, err := template.New(name).Funcs(funcs(lang, nil)).Option("missingkey=error").Parse(string(text))
		if err != nil {
			return fmt.Errorf("%s: %v", filepath.Join(where, name), err)
		}
		if t.m[typ] == nil {
			t.m[typ] = map[string]*template.Template{}
		}
		t.m[typ][lang] = tm
		t.files[typ+"."+lang] = filepath.Join(where, name)
	}
	return nil
}

// funcs are the template functions, for one language, with dates in
// loc (nil: in the offset the time was written with).
func funcs(lang string, loc *time.Location) template.FuncMap {
	return template.FuncMap{
		// date formats an RFC 3339 time for people; other text is kept.
		"date": func(s string) string {
			tm, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return s
			}
			if loc != nil {
				tm = tm.In(loc)
			}
			if lang == "de" {
				return tm.Format("02.01.2006, 15:04 MST")
			}
			return tm.Format("2 January 2006, 15:04 MST")
		},
	}
}

// inZone returns tm with its dates in the time zone the event names in
// its attribute "time_zone" (an IANA name, e.g. the web mailbox owner's
// choice); tm itself when there is none or it is unknown.
func inZone(tm *template.Template, lang, zone string) *template.Template {
	if zone == "" {
		return tm
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return tm
	}
	c, err := tm.Clone()
	if err != nil {
		return tm
	}
	return c.Funcs(funcs(lang, loc))
}

// render executes a template and splits its output into the Subject and
// the body. The output starts with header lines ("Subject: ..."), then an
// empty line, then the body.
func render(tm *template.Template, data any) (subject, body string, err error) {
	var buf bytes.Buffer
	if err := tm.Execute(&buf, data); err != nil {
		return "", "", err
	}
	text := strings.ReplaceAll(buf.String(), "\r\n", "\n")
	head, body, ok := strings.Cut(strings.TrimLeft(text, "\n"), "\n\n")
	if !ok {
		return "", "", fmt.Errorf("template %s: no empty line after the Subject line", tm.Name())
	}
	for _, line := range strings.Split(head, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "Subject") {
			return "", "", fmt.Errorf("template %s: only a Subject line may come before the body, not %q", tm.Name(), line)
		}
		subject = strings.TrimSpace(value)
	}
	if subject == "" {
		return "", "", fmt.Errorf("template %s: empty Subject", tm.Name())
	}
	return subject, strings.Trim(body, "\n") + "\n", nil
}
