// Package selfservice is the users' own settings page: a user logs in with
// their mail address and mail password (checked as SMTP AUTH checks it: the
// directory or Dovecot) and switches their secure alias on or off and picks
// its level (encrypt, dane-only, verify), with a plain-language warning
// for the two strict levels. German and English; plain HTML forms, no
// JavaScript; the look of the web mailbox. The change goes to the user
// directory, so it applies to the next mail on every node.
//
// Sessions live in memory (a node restart logs users out); cookies are
// Secure, HttpOnly and SameSite=Strict, and every form carries the
// session's CSRF token.
package selfservice

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/mta/internal/directory"
)

//go:embed style.css
var styleCSS []byte

// Authenticator checks a user's mail password (the SMTP server's).
type Authenticator interface {
	Authenticate(ctx context.Context, user, password string) (bool, error)
}

// Config is what the page needs.
type Config struct {
	Dir  *directory.Directory
	Auth Authenticator
	// Subdomain is the secure-alias subdomain ("secure"); DefaultLevel
	// the site's level for users who pick none.
	Subdomain    string
	DefaultLevel string
	// Guard, when set, checks passwords instead of Auth, counting
	// failures per client address and account as SMTP AUTH does
	// (throttled: refused without a check).
	Guard func(ctx context.Context, ip net.IP, user, password string) (ok, throttled bool, err error)
	// FailDelay slows down password guessing (default 1 s).
	FailDelay time.Duration
	Logger    *slog.Logger
}

// Server is the running page.
type Server struct {
	cfg Config
	mux *http.ServeMux
	srv *http.Server
	ln  net.Listener
	st  *sessions
}

// sessions are the logged-in users, by cookie.
type sessions struct {
	mu   sync.Mutex
	sess map[string]*session
}

// ShareSessions makes s use the logged-in sessions of old, so that a
// page rebuilt for a new config (a reload) keeps its users logged in.
// Call it before s serves.
func (s *Server) ShareSessions(old *Server) {
	s.st = old.st
}

type session struct {
	user, csrf string
	expires    time.Time
}

const (
	cookieName = "posthorn_self"
	sessionTTL = 30 * time.Minute
)

// New builds the handler.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.FailDelay == 0 {
		cfg.FailDelay = time.Second
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), st: &sessions{sess: map[string]*session{}}}
	s.mux.HandleFunc("GET /{$}", s.index)
	s.mux.HandleFunc("POST /login", s.login)
	s.mux.HandleFunc("GET /settings", s.settings)
	s.mux.HandleFunc("POST /settings", s.save)
	s.mux.HandleFunc("POST /logout", s.logout)
	s.mux.HandleFunc("GET /style.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Write(styleCSS)
	})
	return s
}

// Listen binds addr with TLS.
func Listen(addr string, tlsConf *tls.Config, cfg Config) (*Server, error) {
	s := New(cfg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s.ln = tls.NewListener(ln, tlsConf)
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug)}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve answers until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// ServeHTTP implements http.Handler, with the headers every page gets.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// lang picks German or English: ?lang=, then the cookie, then the browser.
func lang(w http.ResponseWriter, r *http.Request) string {
	if l := r.URL.Query().Get("lang"); l == "de" || l == "en" {
		http.SetCookie(w, &http.Cookie{Name: "lang", Value: l, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: 365 * 86400})
		return l
	}
	if c, err := r.Cookie("lang"); err == nil && (c.Value == "de" || c.Value == "en") {
		return c.Value
	}
	for _, part := range strings.Split(r.Header.Get("Accept-Language"), ",") {
		tag := strings.ToLower(strings.TrimSpace(strings.SplitN(part, ";", 2)[0]))
		if strings.HasPrefix(tag, "de") {
			return "de"
		}
		if strings.HasPrefix(tag, "en") {
			return "en"
		}
	}
	return "en"
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Server) current(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	se := s.st.sess[c.Value]
	if se == nil {
		return nil
	}
	if time.Now().After(se.expires) {
		delete(s.st.sess, c.Value)
		return nil
	}
	se.expires = time.Now().Add(sessionTTL)
	return se
}

// page is what the template sees.
type page struct {
	Lang, Other string
	tx          map[string]string
	Error       string
	Notice      string
	User        string
	Alias       string
	On          bool
	Level       string
	Default     string
	CSRF        string
	ReadOnly    bool
	NoMailbox   bool
	LoggedIn    bool
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, p page) {
	p.Lang = lang(w, r)
	p.Other = "de"
	if p.Lang == "de" {
		p.Other = "en"
	}
	p.tx = texts[p.Lang]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := pages.Execute(w, p); err != nil {
		s.cfg.Logger.Error("self-service page", "err", err)
	}
}

// T is the text of key in the page's language.
func (p page) T(k string) string {
	if v, ok := p.tx[k]; ok {
		return v
	}
	return k
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	lang(w, r) // a ?lang= choice is kept in a cookie before redirecting
	if s.current(r) != nil {
		http.Redirect(w, r, "/settings", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, page{})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	user := directory.Normalize(r.PostFormValue("address"))
	pw := r.PostFormValue("password")
	if user == "" || pw == "" || !strings.Contains(user, "@") {
		s.render(w, r, http.StatusBadRequest, page{Error: "bad_login"})
		return
	}
	var ok, throttled bool
	var err error
	if s.cfg.Guard != nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		ok, throttled, err = s.cfg.Guard(r.Context(), net.ParseIP(host), user, pw)
	} else {
		ok, err = s.cfg.Auth.Authenticate(r.Context(), user, pw)
	}
	if throttled {
		s.cfg.Logger.Warn("self-service login throttled", "user", user, "client", r.RemoteAddr)
		s.render(w, r, http.StatusTooManyRequests, page{Error: "throttled"})
		return
	}
	if err != nil {
		s.cfg.Logger.Warn("self-service login could not be checked", "user", user, "err", err)
		s.render(w, r, http.StatusServiceUnavailable, page{Error: "unavailable"})
		return
	}
	if !ok {
		s.cfg.Logger.Warn("self-service login failed", "user", user, "client", r.RemoteAddr)
		time.Sleep(s.cfg.FailDelay)
		s.render(w, r, http.StatusUnauthorized, page{Error: "bad_login"})
		return
	}
	tok := randomToken()
	s.st.mu.Lock()
	for k, se := range s.st.sess { // drop expired sessions now and then
		if time.Now().After(se.expires) {
			delete(s.st.sess, k)
		}
	}
	s.st.sess[tok] = &session{user: user, csrf: randomToken(), expires: time.Now().Add(sessionTTL)}
	s.st.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: tok, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	s.cfg.Logger.Info("self-service login", "user", user)
	http.Redirect(w, r, "/settings", http.StatusSeeOther)
}

// settingsPage fills the page for se's user.
func (s *Server) settingsPage(ctx context.Context, se *session) (page, error) {
	p := page{User: se.user, CSRF: se.csrf, LoggedIn: true, Default: s.cfg.DefaultLevel}
	local, dom := directory.Split(se.user)
	p.Alias = local + "@" + s.cfg.Subdomain + "." + dom
	_, p.ReadOnly = s.cfg.Dir.Writer()
	p.ReadOnly = !p.ReadOnly
	a, err := s.cfg.Dir.Address(ctx, se.user)
	switch {
	case errors.Is(err, directory.ErrNotFound) || err == nil && !a.Mailbox:
		p.NoMailbox = true
	case err != nil:
		return p, err
	default:
		p.On, p.Level = a.SecureAlias, a.SecureLevel
	}
	return p, nil
}

func (s *Server) settings(w http.ResponseWriter, r *http.Request) {
	se := s.current(r)
	if se == nil {
		s.render(w, r, http.StatusOK, page{Notice: "expired"})
		return
	}
	p, err := s.settingsPage(r.Context(), se)
	if err != nil {
		s.render(w, r, http.StatusServiceUnavailable, page{Error: "unavailable", LoggedIn: true, CSRF: se.csrf})
		return
	}
	if r.URL.Query().Get("saved") == "1" {
		p.Notice = "saved"
	}
	s.render(w, r, http.StatusOK, p)
}

func (s *Server) save(w http.ResponseWriter, r *http.Request) {
	se := s.current(r)
	if se == nil {
		s.render(w, r, http.StatusUnauthorized, page{Notice: "expired"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(se.csrf)) != 1 {
		p, _ := s.settingsPage(r.Context(), se)
		p.Error = "bad_request"
		s.render(w, r, http.StatusForbidden, p)
		return
	}
	on := r.PostFormValue("secure") == "on"
	level := r.PostFormValue("level")
	if level == "default" {
		level = ""
	}
	p, err := s.settingsPage(r.Context(), se)
	if err != nil {
		s.render(w, r, http.StatusServiceUnavailable, page{Error: "unavailable", LoggedIn: true, CSRF: se.csrf})
		return
	}
	if !directory.ValidSecureLevel(level) {
		p.Error = "bad_request"
		s.render(w, r, http.StatusBadRequest, p)
		return
	}
	wr, ok := s.cfg.Dir.Writer()
	if !ok || p.NoMailbox {
		p.Error = "read_only"
		if p.NoMailbox {
			p.Error = "no_mailbox"
		}
		s.render(w, r, http.StatusConflict, p)
		return
	}
	if err := wr.SetSecureAlias(r.Context(), se.user, on, level); err != nil {
		s.cfg.Logger.Warn("self-service: saving the secure alias", "user", se.user, "err", err)
		p.Error = "unavailable"
		s.render(w, r, http.StatusServiceUnavailable, p)
		return
	}
	s.cfg.Logger.Info("self-service: secure alias changed", "user", se.user, "on", on, "level", level)
	http.Redirect(w, r, "/settings?saved=1", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		s.st.mu.Lock()
		if se := s.st.sess[c.Value]; se != nil && subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(se.csrf)) == 1 {
			delete(s.st.sess, c.Value)
		}
		s.st.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

var pages = template.Must(template.New("page").Funcs(template.FuncMap{"printf": fmt.Sprintf}).Parse(`<!DOCTYPE html>
<html lang="{{.Lang}}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.T "title"}}</title><link rel="stylesheet" href="/style.css"></head>
<body>
<a class="skip" href="#main">{{.T "skip"}}</a>
<header>
<span class="brand">{{.T "title"}}</span>
<nav>
<a href="/?lang={{.Other}}" hreflang="{{.Other}}" lang="{{.Other}}">{{if eq .Other "de"}}Deutsch{{else}}English{{end}}</a>
{{if .LoggedIn}}<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{{.CSRF}}"><button type="submit">{{.T "logout"}}</button></form>{{end}}
</nav>
</header>
<main id="main">
{{with .Notice}}<p class="notice" role="status">{{$.T .}}</p>{{end}}
{{with .Error}}<p class="error" role="alert">{{$.T .}}</p>{{end}}
{{if .User}}
<h1>{{.T "secure_alias"}}</h1>
<p>{{.T "your_address"}}: <strong>{{.User}}</strong></p>
<p>{{.T "secure_alias"}}: <strong id="alias">{{.Alias}}</strong> — {{.T "current"}}: <strong id="state">{{if .On}}{{.T "state_on"}}{{else}}{{.T "state_off"}}{{end}}{{if and .On .Level}} ({{.Level}}){{end}}</strong></p>
<p>{{.T "sa_intro"}}</p>
{{if .ReadOnly}}<p class="warning">{{.T "read_only"}}</p>{{else if .NoMailbox}}<p class="warning">{{.T "no_mailbox"}}</p>{{else}}
<form method="post" action="/settings">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label><input type="checkbox" id="secure" name="secure" value="on"{{if .On}} checked{{end}}> {{.T "sa_on"}}</label>
<fieldset><legend>{{.T "level"}}</legend>
<label><input type="radio" id="level-default" name="level" value="default"{{if not .Level}} checked{{end}}> {{printf (.T "level_default") .Default}}</label>
<label><input type="radio" id="level-encrypt" name="level" value="encrypt"{{if eq .Level "encrypt"}} checked{{end}}> {{.T "level_encrypt"}}</label>
<label><input type="radio" id="level-dane-only" name="level" value="dane-only"{{if eq .Level "dane-only"}} checked{{end}}> {{.T "level_daneonly"}}</label>
<p class="warning" role="note">{{.T "warn_daneonly"}}</p>
<label><input type="radio" id="level-verify" name="level" value="verify"{{if eq .Level "verify"}} checked{{end}}> {{.T "level_verify"}}</label>
<p class="warning" role="note">{{.T "warn_verify"}}</p>
</fieldset>
<button type="submit">{{.T "save"}}</button>
</form>{{end}}
{{else}}
<h1>{{.T "login"}}</h1>
<p>{{.T "login_intro"}}</p>
<form method="post" action="/login">
<label for="address">{{.T "address"}}</label><input id="address" name="address" type="email" autocomplete="username" required>
<label for="password">{{.T "password"}}</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">{{.T "login"}}</button>
</form>
{{end}}
</main>
</body>
</html>
`))
