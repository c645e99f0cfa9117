package smime

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/posthorn/posthorn/sdk"
)

// The publication page: GET /smime/ (German or English by
// Accept-Language; /smime/de and /smime/en explicitly) lists the
// organisation's published certificates — the current one of every
// address and gateway domain and, publish_days ahead, its successor
// beside it — with subject, validity, SHA-256 fingerprint and PEM/DER
// downloads (/smime/cert/FINGERPRINT.pem|.der), and the staff's OpenPGP
// keys (publish_pgp_keys) with their fingerprints. Plain HTML with an
// inline style sheet: no JavaScript, nothing loaded from elsewhere, so
// an organisation can link to it or mirror it.

type pageCert struct {
	Subject   string
	Names     []string // addresses and domains it is published for
	NotBefore time.Time
	NotAfter  time.Time
	SHA256    string // colon-separated upper-case hex, as openssl prints it
	File      string // lower-case hex, the download name
	Successor bool
}

type pageKey struct {
	Fingerprint string
	UserIDs     []string
	Created     time.Time
}

type pageData struct {
	Lang   string
	T      map[string]string
	Name   string
	Certs  []pageCert
	Keys   []pageKey
	KeyErr string
	Now    time.Time
}

var pageText = map[string]map[string]string{
	"de": {
		"title": "Zertifikate und Schlüssel für verschlüsselte E-Mail", "certs": "S/MIME-Zertifikate",
		"subject": "Inhaber", "for": "Adressen", "valid": "Gültig", "from": "von", "to": "bis", "fp": "SHA-256-Fingerabdruck",
		"download": "Herunterladen", "current": "aktuell", "successor": "Nachfolger", "pgp": "OpenPGP-Schlüssel der Mitarbeitenden",
		"uid": "Benutzerkennung", "created": "Erzeugt", "none": "Keine veröffentlicht.", "other": "English",
		"hint": "Vergleichen Sie den Fingerabdruck vor der Verwendung, z. B. mit openssl x509 -noout -fingerprint -sha256 -in DATEI.",
	},
	"en": {
		"title": "Certificates and keys for encrypted e-mail", "certs": "S/MIME certificates",
		"subject": "Subject", "for": "Addresses", "valid": "Valid", "from": "from", "to": "to", "fp": "SHA-256 fingerprint",
		"download": "Download", "current": "current", "successor": "successor", "pgp": "Staff OpenPGP keys",
		"uid": "User ID", "created": "Created", "none": "None published.", "other": "Deutsch",
		"hint": "Compare the fingerprint before use, e.g. with openssl x509 -noout -fingerprint -sha256 -in FILE.",
	},
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"date": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"join": func(s []string) string { return strings.Join(s, ", ") },
}).Parse(`<!DOCTYPE html>
<html lang="{{.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{if .Name}}{{.Name}}: {{end}}{{.T.title}}</title>
<style>
body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:1.5em}
th,td{border:1px solid #bbb;padding:.4em;text-align:left;vertical-align:top}
code{font-size:.85em;word-break:break-all}
.succ{color:#555}
</style>
</head>
<body>
<p><a href="{{if eq .Lang "de"}}en{{else}}de{{end}}" hreflang="{{if eq .Lang "de"}}en{{else}}de{{end}}">{{.T.other}}</a></p>
<h1>{{if .Name}}{{.Name}}: {{end}}{{.T.title}}</h1>
<h2>{{.T.certs}}</h2>
{{if .Certs}}<table>
<tr><th>{{.T.subject}}</th><th>{{.T.for}}</th><th>{{.T.valid}}</th><th>{{.T.fp}}</th><th>{{.T.download}}</th></tr>
{{range .Certs}}<tr{{if .Successor}} class="succ"{{end}}>
<td>{{.Subject}}<br><em>{{if .Successor}}{{$.T.successor}}{{else}}{{$.T.current}}{{end}}</em></td>
<td>{{join .Names}}</td>
<td>{{$.T.from}} {{date .NotBefore}}<br>{{$.T.to}} {{date .NotAfter}}</td>
<td><code class="fp">{{.SHA256}}</code></td>
<td><a href="cert/{{.File}}.pem">PEM</a> · <a href="cert/{{.File}}.der">DER</a></td>
</tr>
{{end}}</table>
<p>{{.T.hint}}</p>
{{else}}<p>{{.T.none}}</p>{{end}}
<h2>{{.T.pgp}}</h2>
{{if .Keys}}<table>
<tr><th>{{.T.uid}}</th><th>{{.T.fp}}</th><th>{{.T.created}}</th></tr>
{{range .Keys}}<tr><td>{{join .UserIDs}}</td><td><code class="pgpfp">{{.Fingerprint}}</code></td><td>{{date .Created}}</td></tr>
{{end}}</table>
{{else}}<p>{{.T.none}}</p>{{end}}
</body>
</html>
`))

// opensslFingerprint formats a SHA-256 digest as openssl x509 -fingerprint
// prints it.
func opensslFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// pageCerts collects the published certificates of every address and
// gateway domain, one entry per certificate.
func (st *state) pageCerts(now time.Time) []pageCert {
	var names []string
	seen := map[string]bool{}
	for _, id := range st.ids.all {
		for _, n := range append(append([]string{}, id.Addresses...), id.Domains...) {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
		if len(id.Addresses) == 0 && len(id.Domains) == 0 {
			for _, a := range id.Cert.EmailAddresses {
				if a = strings.ToLower(a); !seen[a] {
					seen[a] = true
					names = append(names, a)
				}
			}
		}
	}
	sort.Strings(names)
	byFP := map[string]*pageCert{}
	var order []string
	for _, n := range names {
		for i, c := range st.published(n, now) {
			fp := Fingerprint(c)
			pc := byFP[fp]
			if pc == nil {
				pc = &pageCert{Subject: c.Subject.String(), NotBefore: c.NotBefore, NotAfter: c.NotAfter,
					SHA256: opensslFingerprint(c.Raw), File: fp, Successor: i > 0}
				byFP[fp] = pc
				order = append(order, fp)
			}
			pc.Names = append(pc.Names, n)
		}
	}
	out := make([]pageCert, 0, len(order))
	for _, fp := range order {
		out = append(out, *byFP[fp])
	}
	return out
}

// pageKeys reads the staff's OpenPGP keys.
func (st *state) pageKeys() ([]pageKey, error) {
	var out []pageKey
	for _, f := range st.cfg.PublishPGPKeys {
		data, err := os.ReadFile(resolve(st.dir, f))
		if err != nil {
			return out, err
		}
		el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
		if err != nil {
			return out, fmt.Errorf("%s: %w", f, err)
		}
		for _, e := range el {
			k := pageKey{Fingerprint: strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint)), Created: e.PrimaryKey.CreationTime}
			for name := range e.Identities {
				k.UserIDs = append(k.UserIDs, name)
			}
			sort.Strings(k.UserIDs)
			out = append(out, k)
		}
	}
	return out, nil
}

func (p *Plugin) publicationPage(st *state, mux *http.ServeMux) {
	page := func(w http.ResponseWriter, r *http.Request, lang string) {
		now := p.clock()
		d := pageData{Lang: lang, T: pageText[lang], Name: st.cfg.PublishName, Certs: st.pageCerts(now), Now: now}
		keys, err := st.pageKeys()
		d.Keys = keys
		if err != nil {
			sdk.Logger().Warn("publication page: PGP keys", "err", err)
		}
		var b bytes.Buffer
		if err := pageTmpl.Execute(&b, d); err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Language", lang)
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		w.Write(b.Bytes())
	}
	mux.HandleFunc("GET /smime/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Accept-Language")
		page(w, r, preferredLang(r.Header.Get("Accept-Language")))
	})
	mux.HandleFunc("GET /smime/de", func(w http.ResponseWriter, r *http.Request) { page(w, r, "de") })
	mux.HandleFunc("GET /smime/en", func(w http.ResponseWriter, r *http.Request) { page(w, r, "en") })
	mux.HandleFunc("GET /smime/cert/{file}", func(w http.ResponseWriter, r *http.Request) {
		file := r.PathValue("file")
		fp, ext, _ := strings.Cut(file, ".")
		for _, pc := range st.pageCerts(p.clock()) {
			if pc.File != strings.ToLower(fp) {
				continue
			}
			c := st.certByFingerprint(pc.File)
			if c == nil {
				break
			}
			switch ext {
			case "pem":
				w.Header().Set("Content-Type", "application/x-pem-file")
				w.Write(certPEMBytes(c))
			case "der":
				w.Header().Set("Content-Type", "application/pkix-cert")
				w.Write(c.Raw)
			default:
				http.NotFound(w, r)
			}
			return
		}
		http.NotFound(w, r)
	})
}

func (st *state) certByFingerprint(fp string) *x509.Certificate {
	for _, id := range st.ids.all {
		if Fingerprint(id.Cert) == fp {
			return id.Cert
		}
	}
	return nil
}

// preferredLang picks "de" or "en" from an Accept-Language header: the
// first of the two that the header lists (quality values respected),
// English when neither.
func preferredLang(h string) string {
	best, bestQ := "en", -1.0
	for _, part := range strings.Split(h, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			fmt.Sscanf(v, "%g", &q)
		}
		base, _, _ := strings.Cut(strings.ToLower(tag), "-")
		if (base == "de" || base == "en") && q > bestQ {
			best, bestQ = base, q
		}
	}
	return best
}
