package pgp

import (
	"context"
	"crypto/tls"
	"html/template"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/posthorn/posthorn/plugins/pgp/keystore"
	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
	"github.com/posthorn/posthorn/plugins/pgp/wkd"
	"github.com/posthorn/posthorn/sdk"
)

// Publisher serves the organisation's own public keys: WKD and a lookup
// page (GET /?email=ADDR, the armored key at /key?email=ADDR).
type Publisher struct {
	Keys    *Keys
	Domains []string
}

var _ wkd.Source = (*Publisher)(nil)

func (p *Publisher) WKDDomains(context.Context) ([]string, error) { return p.Domains, nil }

func (p *Publisher) WKDKeys(ctx context.Context, domain, hash string) ([][]byte, error) {
	ks, err := p.Keys.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, sk := range ks {
		if !sk.Own {
			continue
		}
		for _, a := range sk.Addresses {
			local, d, err := wkd.Split(a)
			if err != nil || d != domain || wkd.Hash(local) != hash {
				continue
			}
			for _, e := range entities([]keystore.Key{sk}) {
				if b, err := pgpmail.Binary(e); err == nil {
					out = append(out, b)
				}
			}
			break
		}
	}
	return out, nil
}

// published returns the armored public keys of own keys for addr.
func (p *Publisher) published(ctx context.Context, addr string) ([]keystore.Key, []string) {
	local, domain, err := wkd.Split(addr)
	if err != nil {
		return nil, nil
	}
	served := false
	for _, d := range p.Domains {
		served = served || strings.EqualFold(d, domain)
	}
	if !served {
		return nil, nil
	}
	ks, err := p.Keys.Store.ByAddress(ctx, local+"@"+domain)
	if err != nil {
		return nil, nil
	}
	var keys []keystore.Key
	var armored []string
	for _, sk := range ks {
		if !sk.Own {
			continue
		}
		for _, e := range entities([]keystore.Key{sk}) {
			if a, err := pgpmail.Armor(e, false); err == nil {
				keys = append(keys, sk)
				armored = append(armored, string(a))
			}
		}
	}
	return keys, armored
}

var lookupPage = template.Must(template.New("lookup").Parse(`<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>OpenPGP-Schlüssel / OpenPGP keys</title></head>
<body>
<h1>OpenPGP-Schlüssel suchen / Look up an OpenPGP key</h1>
<form method="get" action="/"><label>E-Mail: <input type="email" name="email" value="{{.Email}}" required></label>
<button type="submit">Suchen / Search</button></form>
{{if .Email}}{{if .Keys}}{{range $i, $k := .Keys}}
<h2>{{$k.Fingerprint}}</h2>
<p>{{range $k.Addresses}}{{.}} {{end}}{{if not $k.Expires.IsZero}} — gültig bis / valid until {{$k.Expires.Format "2006-01-02"}}{{end}}</p>
<p><a href="/key?email={{$.Email}}">Herunterladen / Download</a></p>
<pre>{{index $.Armored $i}}</pre>
{{end}}{{else}}<p>Kein Schlüssel für {{.Email}} / No key for {{.Email}}.</p>{{end}}{{end}}
</body></html>
`))

// Handler is the publishing site: WKD plus the lookup page.
func (p *Publisher) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		email := strings.TrimSpace(r.URL.Query().Get("email"))
		if len(email) > 320 {
			email = ""
		}
		data := struct {
			Email   string
			Keys    []keystore.Key
			Armored []string
		}{Email: email}
		if email != "" {
			data.Keys, data.Armored = p.published(r.Context(), email)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		lookupPage.Execute(w, data)
	})
	mux.HandleFunc("GET /key", func(w http.ResponseWriter, r *http.Request) {
		email := r.URL.Query().Get("email")
		_, armored := p.published(r.Context(), email)
		if len(armored) == 0 {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/pgp-keys")
		w.Header().Set("Content-Disposition", `attachment; filename="key.asc"`)
		for _, a := range armored {
			w.Write([]byte(a))
		}
	})
	return wkd.Handler(p, mux)
}

func (pl *Plugin) publishServer(cfg Config, dir string, keys *Keys) (*http.Server, error) {
	pc := cfg.Publish
	if pc.Listen == "" {
		return nil, &sdk.ConfigError{Key: "publish.listen", Message: "required (\"0.0.0.0:443\")"}
	}
	domains := pc.Domains
	if len(domains) == 0 {
		domains = cfg.InternalDomains
	}
	if len(domains) == 0 {
		return nil, &sdk.ConfigError{Key: "publish.domains", Message: "no domains to publish (set publish.domains or internal_domains)"}
	}
	pub := &Publisher{Keys: keys, Domains: domains}
	srv := &http.Server{Handler: pub.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	ln, err := net.Listen("tcp", pc.Listen)
	if err != nil {
		return nil, &sdk.ConfigError{Key: "publish.listen", Message: err.Error()}
	}
	if pc.CertFile != "" || pc.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(inDir(dir, pc.CertFile), inDir(dir, pc.KeyFile))
		if err != nil {
			ln.Close()
			return nil, &sdk.ConfigError{Key: "publish.cert_file", Message: err.Error()}
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			sdk.Logger().Error("publishing server stopped", "error", err)
		}
	}()
	return srv, nil
}
