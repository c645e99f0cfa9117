package webmailbox

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

//go:embed templates/pages.html templates/style.css templates/frame.js
var assets embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{"size": func(n int) string { return humanSize(int64(n)) }}).ParseFS(assets, "templates/pages.html"))

const (
	sessionCookie = "__Host-wmb-session"
	csrfCookie    = "__Host-wmb-csrf"
	langCookie    = "__Host-wmb-lang"
	maxForm       = 1 << 20
	maxSessionAge = 12 * time.Hour
)

// page is what every template gets.
type page struct {
	Lang, P, CSRF, Title, Org, Notice, Error, ErrorExtra, Back string
	User                                                       string
	Unread                                                     int

	Address, Token, Question              string
	ResetAllowed, NeedPIN, NeedTAN        bool
	Folder, Used, Quota                   string
	Messages                              []StoredMessage
	Msg                                   *StoredMessage
	Text                                  string
	HasHTML, BadMessage, PrintView        bool
	Attachments                           []Attachment
	To, Subject, Body, Nonce, AllowedList string
	ReplyID, ForwardID                    string

	// Theming.
	Logo                      bool
	Support, Imprint, Privacy string

	loc *time.Location
	now time.Time
}

// Zone is the IANA name of the page's time zone.
func (p *page) Zone() string {
	if p.loc == nil {
		return "UTC"
	}
	return p.loc.String()
}

// Zones are the time zones to choose from, by region.
func (p *page) Zones() []ZoneGroup { return zoneGroups() }

// Now is the current time in the page's zone, with the zone's
// abbreviation: what the settings page shows next to the choice.
func (p *page) Now() string { return formatDate(p.now, p.Lang, p.loc, true) }

// fieldOf says which form field an error belongs to (its input's id).
var fieldOf = map[string]string{
	"err_pw_short": "pw", "err_pw_mismatch": "pw2", "err_question": "q", "err_pin": "pin", "err_pin_tan": "pin",
	"err_tan": "tan", "login_failed": "pw", "old_pw_wrong": "old", "reset_failed": "a", "err_recipient": "to",
	"err_unknown_recipient": "to", "err_no_recipient": "to", "err_zone": "zone",
}

// FieldErr is the error text to show next to the field with this id.
func (p *page) FieldErr(id string) string {
	if p.Error == "" || fieldOf[p.Error] != id {
		return ""
	}
	t := p.T(p.Error)
	if p.ErrorExtra != "" {
		t += " " + p.ErrorExtra
	}
	return t
}

// T translates a text key.
func (p *page) T(key string) string { return T(p.Lang, key) }

// throttled sets the "please wait" error when err is a *ThrottledError.
func (p *page) throttled(err error) bool {
	var te *ThrottledError
	if !errors.As(err, &te) {
		return false
	}
	p.Error, p.ErrorExtra = "err_wait", waitText(p.Lang, te.Wait)
	return true
}

// Date formats a time in the page's language and time zone.
func (p *page) Date(t time.Time) string { return formatDate(t, p.Lang, p.loc, false) }

// HeaderDate formats a message's Date header (or, without one, when it
// arrived) in the page's language and time zone.
func (p *page) HeaderDate(h string, received time.Time) string {
	return headerDate(h, received, p.Lang, p.loc)
}

// session is a logged-in request's state.
type session struct {
	idHash []byte
	mb     *Mailbox
	priv   *ecdh.PrivateKey
	csrf   string
}

// Handler returns the web interface. It serves paths below base_url's path.
func (sv *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /style.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Write(sv.s.theme.css)
	})
	mux.HandleFunc("GET /frame.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Write(frameJS)
	})
	mux.HandleFunc("GET /logo", func(w http.ResponseWriter, r *http.Request) {
		if sv.s.theme.logoData == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", sv.s.theme.logoType)
		w.Header().Set("Cache-Control", "public, max-age=3600")
		// An SVG logo is shown as an image, never as a document.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox")
		w.Write(sv.s.theme.logoData)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := sv.currentSession(r); ok {
			sv.redirect(w, r, "/inbox")
			return
		}
		sv.redirect(w, r, "/login")
	})
	mux.HandleFunc("GET /login", sv.loginForm)
	mux.HandleFunc("POST /login", sv.loginPost)
	mux.HandleFunc("GET /activate", sv.activateForm)
	mux.HandleFunc("POST /activate", sv.activatePost)
	mux.HandleFunc("GET /reset", sv.resetForm)
	mux.HandleFunc("POST /reset", sv.resetPost)
	mux.HandleFunc("POST /reset/link", sv.resetLinkPost)
	mux.HandleFunc("POST /lang", sv.langPost)
	mux.HandleFunc("POST /logout", sv.logoutPost)
	mux.HandleFunc("GET /inbox", sv.auth(sv.folderPage("inbox")))
	mux.HandleFunc("GET /sent", sv.auth(sv.folderPage("sent")))
	mux.HandleFunc("GET /msg/{id}", sv.auth(sv.messagePage(false)))
	mux.HandleFunc("GET /msg/{id}/print", sv.auth(sv.messagePage(true)))
	mux.HandleFunc("GET /msg/{id}/html", sv.auth(sv.messageHTML))
	mux.HandleFunc("GET /msg/{id}/att/{n}", sv.auth(sv.attachment))
	mux.HandleFunc("GET /msg/{id}/export/{fmt}", sv.auth(sv.export))
	mux.HandleFunc("GET /msg/{id}/delete", sv.auth(sv.deleteForm))
	mux.HandleFunc("POST /msg/{id}/delete", sv.auth(sv.deletePost))
	mux.HandleFunc("GET /compose", sv.auth(sv.composeForm))
	mux.HandleFunc("POST /send", sv.auth(sv.sendPost))
	mux.HandleFunc("GET /settings", sv.auth(sv.settingsForm))
	mux.HandleFunc("POST /settings", sv.auth(sv.settingsPost))
	mux.HandleFunc("POST /settings/zone", sv.auth(sv.zonePost))
	mux.HandleFunc("GET /keys", sv.auth(sv.keysForm))
	mux.HandleFunc("POST /keys", sv.auth(sv.keysPost))
	var h http.Handler = mux
	if sv.s.prefix != "" {
		h = http.StripPrefix(sv.s.prefix, mux)
	}
	return securityHeaders(h)
}

type authHandler func(w http.ResponseWriter, r *http.Request, se *session)

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

func (sv *Service) redirect(w http.ResponseWriter, r *http.Request, p string) {
	http.Redirect(w, r, sv.s.prefix+p, http.StatusSeeOther)
}

func (sv *Service) clientIP(r *http.Request) string {
	if h := sv.s.clientIPHeader; h != "" {
		if v := r.Header.Values(h); len(v) > 0 {
			parts := strings.Split(v[len(v)-1], ",")
			if ip := strings.TrimSpace(parts[len(parts)-1]); ip != "" {
				return ip
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (sv *Service) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// lang picks the language for a request without a session.
func (sv *Service) lang(r *http.Request) string {
	if c, err := r.Cookie(langCookie); err == nil && (c.Value == "de" || c.Value == "en") {
		return c.Value
	}
	return pickLang(r.Header.Get("Accept-Language"), sv.s.defaultLang)
}

// anonCSRF returns the double-submit token for forms before login,
// setting the cookie when missing.
func (sv *Service) anonCSRF(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	tok := newToken()
	sv.setCookie(w, csrfCookie, tok, 0)
	return tok
}

// sameOrigin rejects cross-site form posts by Origin / Sec-Fetch-Site.
func (sv *Service) sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, r.Host) && !strings.EqualFold(u.Host, sv.s.baseURL.Host) {
			return false
		}
	}
	return true
}

// checkCSRF verifies the form token against want.
func (sv *Service) checkCSRF(r *http.Request, want string) bool {
	got := r.PostFormValue("csrf")
	return sv.sameOrigin(r) && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (sv *Service) checkAnonCSRF(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	return err == nil && sv.checkCSRF(r, c.Value)
}

func (sv *Service) render(w http.ResponseWriter, status int, name string, p *page) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, p); err != nil {
		sv.log.Error("rendering page", "page", name, "error", err)
		http.Error(w, T(p.Lang, "err_internal"), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (sv *Service) newPage(w http.ResponseWriter, r *http.Request, se *session) *page {
	back := sv.s.prefix + r.URL.Path
	if r.Method == http.MethodGet && r.URL.RawQuery != "" {
		back += "?" + r.URL.RawQuery
	}
	th := sv.s.theme
	p := &page{P: sv.s.prefix, Org: sv.s.organization, Back: back, ResetAllowed: sv.s.resetAllowed, loc: sv.s.loc, now: sv.Now(),
		Logo: th.logoData != nil, Support: th.support, Imprint: th.imprint, Privacy: th.privacy}
	if se != nil {
		p.Lang, p.CSRF, p.User, p.loc = se.mb.Language, se.csrf, se.mb.Address, sv.locOf(se.mb)
		if ms, err := sv.store.ListMessages(r.Context(), se.mb.Address, "inbox"); err == nil {
			for _, m := range ms {
				if m.Unread {
					p.Unread++
				}
			}
		}
	} else {
		p.Lang, p.CSRF = sv.lang(r), sv.anonCSRF(w, r)
	}
	return p
}

func (sv *Service) fail(w http.ResponseWriter, r *http.Request, se *session, status int, key string) {
	p := sv.newPage(w, r, se)
	p.Error = key
	sv.render(w, status, "plain", p)
}

// --- sessions ---------------------------------------------------------

func (sv *Service) startSession(ctx context.Context, w http.ResponseWriter, mb *Mailbox, priv *ecdh.PrivateKey) error {
	id, key := randBytes(16), randBytes(32)
	now := sv.Now()
	se := &Session{IDHash: hashSecret(id), Mailbox: mb.Address, Wrapped: WrapWithKey(priv, key, adSess(mb.Address)),
		CSRF: newToken(), Created: now, LastSeen: now}
	if err := sv.store.PutSession(ctx, se); err != nil {
		return err
	}
	sv.setCookie(w, sessionCookie, base64.RawURLEncoding.EncodeToString(append(id, key...)), 0)
	return nil
}

// currentSession returns the request's live session.
func (sv *Service) currentSession(r *http.Request) (*session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil || len(raw) != 48 {
		return nil, false
	}
	ctx := r.Context()
	idh := hashSecret(raw[:16])
	s, err := sv.store.GetSession(ctx, idh)
	if err != nil {
		return nil, false
	}
	now := sv.Now()
	if now.Sub(s.LastSeen) > sv.s.sessionTimeout || now.Sub(s.Created) > maxSessionAge {
		sv.store.DeleteSession(ctx, idh)
		return nil, false
	}
	mb, err := sv.store.GetMailbox(ctx, s.Mailbox)
	if err != nil || mb.State != StateActive {
		return nil, false
	}
	priv, err := UnwrapWithKey(s.Wrapped, raw[16:], adSess(mb.Address))
	if err != nil {
		return nil, false
	}
	sv.store.TouchSession(ctx, idh, now)
	if now.Sub(mb.LastActive) > time.Hour {
		mb.LastActive = now
		sv.store.UpdateMailbox(ctx, mb)
	}
	return &session{idHash: idh, mb: mb, priv: priv, csrf: s.CSRF}, true
}

func (sv *Service) auth(h authHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		se, ok := sv.currentSession(r)
		if !ok {
			if r.Method == http.MethodGet {
				sv.redirect(w, r, "/login?expired=1")
				return
			}
			sv.fail(w, r, nil, http.StatusUnauthorized, "session_expired")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 12<<20)
			if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
				if err := r.ParseMultipartForm(maxForm); err != nil {
					sv.fail(w, r, se, http.StatusBadRequest, "err_csrf")
					return
				}
			}
			if !sv.checkCSRF(r, se.csrf) {
				sv.fail(w, r, se, http.StatusForbidden, "err_csrf")
				return
			}
		}
		h(w, r, se)
	}
}

// --- login, activation, reset -------------------------------------------

func (sv *Service) loginForm(w http.ResponseWriter, r *http.Request) {
	p := sv.newPage(w, r, nil)
	p.Title = p.T("login")
	switch {
	case r.URL.Query().Get("expired") != "":
		p.Notice = "session_expired"
	case r.URL.Query().Get("activated") != "":
		p.Notice = "activated"
	case r.URL.Query().Get("reset") != "":
		p.Notice = "reset_done"
	case r.URL.Query().Get("bye") != "":
		p.Notice = "logged_out"
	}
	sv.render(w, http.StatusOK, "login", p)
}

func (sv *Service) loginPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if !sv.checkAnonCSRF(r) {
		sv.fail(w, r, nil, http.StatusForbidden, "err_csrf")
		return
	}
	addr := r.PostFormValue("address")
	mb, priv, err := sv.Login(r.Context(), sv.clientIP(r), addr, r.PostFormValue("password"))
	if err != nil {
		if !errors.Is(err, ErrLoginFailed) && !errors.Is(err, ErrThrottled) {
			sv.log.Error("login", "error", err)
		}
		p := sv.newPage(w, r, nil)
		p.Title, p.Error, p.Address = p.T("login"), "login_failed", addr
		status := http.StatusUnauthorized
		if p.throttled(err) {
			status = http.StatusTooManyRequests
		}
		sv.render(w, status, "login", p)
		return
	}
	if err := sv.startSession(r.Context(), w, mb, priv); err != nil {
		sv.log.Error("starting a session", "error", err)
		sv.fail(w, r, nil, http.StatusInternalServerError, "err_internal")
		return
	}
	sv.redirect(w, r, "/inbox")
}

func (sv *Service) activateForm(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("t")
	mb, err := sv.ActivationTarget(r.Context(), tok)
	if err != nil || mb.State != StatePending {
		sv.fail(w, r, nil, http.StatusNotFound, "link_invalid")
		return
	}
	p := sv.activationPage(w, r, mb, tok)
	sv.render(w, http.StatusOK, "activate", p)
}

func (sv *Service) activationPage(w http.ResponseWriter, r *http.Request, mb *Mailbox, tok string) *page {
	p := sv.newPage(w, r, nil)
	p.Title, p.Address, p.Token = p.T("activate"), mb.Address, tok
	p.Back = sv.s.prefix + "/activate?t=" + url.QueryEscape(tok)
	p.ResetAllowed, p.NeedPIN, p.NeedTAN = mb.ResetAllow, mb.PINHash != nil, sv.s.requireTAN
	return p
}

func (sv *Service) activatePost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if !sv.checkAnonCSRF(r) {
		sv.fail(w, r, nil, http.StatusForbidden, "err_csrf")
		return
	}
	in := ActivationInput{Token: r.PostFormValue("t"), Language: r.PostFormValue("language"), Password: r.PostFormValue("password"),
		Password2: r.PostFormValue("password2"), Question: r.PostFormValue("question"), Answer: r.PostFormValue("answer"),
		PIN: r.PostFormValue("pin"), TAN: r.PostFormValue("tan"), Client: sv.clientIP(r)}
	mb, err := sv.ActivationTarget(r.Context(), in.Token)
	if err != nil || mb.State != StatePending {
		sv.fail(w, r, nil, http.StatusNotFound, "link_invalid")
		return
	}
	var fe *formError
	if !mb.ResetAllow && r.PostFormValue("ack") != "1" {
		fe = &formError{"err_ack"}
	} else {
		_, err = sv.Activate(r.Context(), in)
		var te *ThrottledError
		if errors.As(err, &fe) {
		} else if errors.As(err, &te) {
			fe = &formError{"err_wait"}
		} else if err != nil {
			if errors.Is(err, ErrNotFound) {
				sv.fail(w, r, nil, http.StatusNotFound, "link_invalid")
				return
			}
			sv.log.Error("activation", "mailbox", mb.Address, "error", err)
			sv.fail(w, r, nil, http.StatusInternalServerError, "err_internal")
			return
		}
	}
	if fe != nil {
		p := sv.activationPage(w, r, mb, in.Token)
		p.Error, p.Question = fe.Key, in.Question
		p.throttled(err)
		if in.Language == "de" || in.Language == "en" {
			p.Lang = in.Language
		}
		sv.render(w, http.StatusUnprocessableEntity, "activate", p)
		return
	}
	sv.setCookie(w, langCookie, in.Language, 365*24*3600)
	sv.log.Info("mailbox activated", "mailbox", mb.Address, "reset_allowed", mb.ResetAllow)
	sv.redirect(w, r, "/login?activated=1")
}

// resetForm is the first step, "send me a reset link", or with a link's
// token the second: the security question and a new password.
func (sv *Service) resetForm(w http.ResponseWriter, r *http.Request) {
	p := sv.newPage(w, r, nil)
	p.Title = p.T("reset")
	if !sv.s.resetAllowed {
		p.Error = "reset_none"
		sv.render(w, http.StatusNotFound, "plain", p)
		return
	}
	if tok := r.URL.Query().Get("t"); tok != "" {
		mb, err := sv.ResetTarget(r.Context(), tok)
		if err != nil {
			sv.fail(w, r, nil, http.StatusNotFound, "link_invalid")
			return
		}
		p.Token, p.Question, p.Address = tok, mb.Question, mb.Address
		p.Back = sv.s.prefix + "/reset?t=" + url.QueryEscape(tok)
	}
	sv.render(w, http.StatusOK, "reset", p)
}

// resetLinkPost sends a reset link (when the address has a mailbox) and
// answers the same either way.
func (sv *Service) resetLinkPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if !sv.checkAnonCSRF(r) || !sv.s.resetAllowed {
		sv.fail(w, r, nil, http.StatusForbidden, "err_csrf")
		return
	}
	sv.RequestReset(r.PostFormValue("address"), sv.clientIP(r))
	p := sv.newPage(w, r, nil)
	p.Title, p.Notice = p.T("reset"), "reset_link_sent"
	sv.render(w, http.StatusOK, "reset_sent", p)
}

func (sv *Service) resetPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if !sv.checkAnonCSRF(r) || !sv.s.resetAllowed {
		sv.fail(w, r, nil, http.StatusForbidden, "err_csrf")
		return
	}
	tok := r.PostFormValue("t")
	err := sv.ResetPassword(r.Context(), sv.clientIP(r), tok, r.PostFormValue("answer"), r.PostFormValue("password"), r.PostFormValue("password2"))
	if errors.Is(err, ErrNotFound) {
		sv.fail(w, r, nil, http.StatusNotFound, "link_invalid")
		return
	}
	if err != nil {
		p := sv.newPage(w, r, nil)
		p.Title, p.Token, p.Error = p.T("reset"), tok, "reset_failed"
		p.Back = sv.s.prefix + "/reset?t=" + url.QueryEscape(tok)
		status := http.StatusUnauthorized
		var fe *formError
		switch {
		case errors.As(err, &fe):
			p.Error, status = fe.Key, http.StatusUnprocessableEntity
		case p.throttled(err):
			status = http.StatusTooManyRequests
		case !errors.Is(err, ErrLoginFailed):
			sv.log.Error("password reset", "error", err)
			sv.fail(w, r, nil, http.StatusInternalServerError, "err_internal")
			return
		}
		if mb, err := sv.ResetTarget(r.Context(), tok); err == nil {
			p.Question, p.Address = mb.Question, mb.Address
		}
		sv.render(w, status, "reset", p)
		return
	}
	sv.redirect(w, r, "/login?reset=1")
}

func (sv *Service) langPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	lang := r.PostFormValue("lang")
	if lang != "de" && lang != "en" {
		lang = sv.s.defaultLang
	}
	back := r.PostFormValue("back")
	if !strings.HasPrefix(back, "/") || strings.HasPrefix(back, "//") || strings.Contains(back, "\\") {
		back = "/"
	}
	if se, ok := sv.currentSession(r); ok {
		if !sv.checkCSRF(r, se.csrf) {
			sv.fail(w, r, se, http.StatusForbidden, "err_csrf")
			return
		}
		se.mb.Language = lang
		if err := sv.store.UpdateMailbox(r.Context(), se.mb); err != nil {
			sv.fail(w, r, se, http.StatusInternalServerError, "err_internal")
			return
		}
	} else if !sv.checkAnonCSRF(r) {
		sv.fail(w, r, nil, http.StatusForbidden, "err_csrf")
		return
	}
	sv.setCookie(w, langCookie, lang, 365*24*3600)
	http.Redirect(w, r, back, http.StatusSeeOther)
}

func (sv *Service) logoutPost(w http.ResponseWriter, r *http.Request) {
	se, ok := sv.currentSession(r)
	if ok {
		if !sv.checkCSRF(r, se.csrf) {
			sv.fail(w, r, se, http.StatusForbidden, "err_csrf")
			return
		}
		sv.store.DeleteSession(r.Context(), se.idHash)
	}
	sv.setCookie(w, sessionCookie, "", -1)
	sv.redirect(w, r, "/login?bye=1")
}

// --- mailbox ------------------------------------------------------------

func humanSize(n int64) string {
	switch {
	case n >= 1000*1000:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1000:
		return fmt.Sprintf("%.0f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

func (sv *Service) folderPage(folder string) authHandler {
	return func(w http.ResponseWriter, r *http.Request, se *session) {
		ms, err := sv.List(r.Context(), se.mb.Address, se.priv, folder)
		if err != nil {
			sv.log.Error("listing", "error", err)
			sv.fail(w, r, se, http.StatusInternalServerError, "err_internal")
			return
		}
		p := sv.newPage(w, r, se)
		p.Title, p.Folder, p.Messages = p.T(folder), folder, ms
		switch r.URL.Query().Get("done") { // after a redirect: what just happened
		case "sent":
			p.Notice = "sent_ok"
		case "deleted":
			p.Notice = "deleted"
		}
		p.Used, p.Quota = humanSize(se.mb.UsedBytes), humanSize(sv.s.quota)
		sv.render(w, http.StatusOK, "folder", p)
	}
}

func (sv *Service) loadMessage(w http.ResponseWriter, r *http.Request, se *session) (*StoredMessage, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err == nil {
		var m *StoredMessage
		if m, err = sv.Get(r.Context(), se.mb.Address, se.priv, id); err == nil {
			return m, true
		}
	}
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, strconv.ErrSyntax) && !errors.Is(err, strconv.ErrRange) {
		sv.log.Error("loading a message", "error", err)
	}
	sv.fail(w, r, se, http.StatusNotFound, "err_not_found")
	return nil, false
}

func (sv *Service) messagePage(print bool) authHandler {
	return func(w http.ResponseWriter, r *http.Request, se *session) {
		m, ok := sv.loadMessage(w, r, se)
		if !ok {
			return
		}
		if m.Unread {
			sv.store.MarkRead(r.Context(), se.mb.Address, m.ID)
			m.Unread = false
		}
		parsed, perr := ParseMessage(m.Raw)
		p := sv.newPage(w, r, se)
		p.Title, p.Msg, p.PrintView = m.Meta.Subject, m, print
		p.Text, p.HasHTML, p.Attachments, p.BadMessage = parsed.Text, parsed.HTML != "", parsed.Attachments, perr != nil
		if p.Text == "" && parsed.HTML != "" {
			p.Text = htmlToText(parsed.HTML)
		}
		sv.render(w, http.StatusOK, "message", p)
	}
}

// frameJS is the page's half of sizing the HTML frame (templates/frame.js).
var frameJS, _ = assets.ReadFile("templates/frame.js")

// frameHeightJS runs inside the HTML frame and posts the content's height
// to the page whenever it changes (images loading, the window resized).
// The body's box plus its margins, not the document's scrollHeight,
// which is never less than the frame's current height.
const frameHeightJS = `(function(){var b=document.body;function s(){var c=getComputedStyle(b);parent.postMessage({posthornFrameHeight:b.getBoundingClientRect().height+parseFloat(c.marginTop)+parseFloat(c.marginBottom)},"*")}addEventListener("load",s);if(window.ResizeObserver){new ResizeObserver(s).observe(b)}s()})()`

func (sv *Service) messageHTML(w http.ResponseWriter, r *http.Request, se *session) {
	m, ok := sv.loadMessage(w, r, se)
	if !ok {
		return
	}
	parsed, _ := ParseMessage(m.Raw)
	h := w.Header()
	// Shown only inside our own sandboxed frame: no remote loads, no
	// forms, no navigation of the top page, an origin of its own (no
	// allow-same-origin). The one script allowed is ours (by nonce; the
	// sanitised mail has none): it tells the page its height, so that
	// frame.js can size the frame to the content.
	nonce := newToken()
	h.Set("Content-Security-Policy", "default-src 'none'; img-src data:; style-src 'nonce-"+nonce+"'; script-src 'nonce-"+nonce+"'; frame-ancestors 'self'; sandbox allow-scripts")
	h.Set("X-Frame-Options", "SAMEORIGIN")
	h.Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, "<!DOCTYPE html><html lang=\"%s\"><head><meta charset=\"utf-8\"><title>%s</title><style nonce=\"%s\">%s</style></head><body>%s<script nonce=\"%s\">%s</script></body></html>",
		se.mb.Language, template.HTMLEscapeString(T(se.mb.Language, "html_version")), nonce, frameCSS, SanitizeWith(parsed.HTML, parsed.inlineImages()), nonce, frameHeightJS)
}

func (sv *Service) attachment(w http.ResponseWriter, r *http.Request, se *session) {
	m, ok := sv.loadMessage(w, r, se)
	if !ok {
		return
	}
	parsed, _ := ParseMessage(m.Raw)
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 0 || n >= len(parsed.Attachments) {
		sv.fail(w, r, se, http.StatusNotFound, "err_not_found")
		return
	}
	a := parsed.Attachments[n]
	download(w, "application/octet-stream", a.Name, a.Data)
}

// frameCSS is the HTML mail's frame's own style: readable, sans-serif,
// images never wider than the frame.
const frameCSS = `body{margin:0;padding:.75rem;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111;overflow-wrap:anywhere}img{max-width:100%;height:auto}table{max-width:100%}`

// download sends data as a file; never rendered inline by the browser.
func download(w http.ResponseWriter, ctype, name string, data []byte) {
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
}

func fileBase(m *StoredMessage) string {
	s := safeName(m.Meta.Subject)
	s = strings.Map(func(r rune) rune {
		if strings.ContainsRune(`/\:*?"<>|`, r) {
			return '_'
		}
		return r
	}, s)
	if s == "" {
		s = "message"
	}
	if len(s) > 60 {
		s = strings.ToValidUTF8(s[:60], "")
	}
	return fmt.Sprintf("%s-%d", s, m.ID)
}

func (sv *Service) export(w http.ResponseWriter, r *http.Request, se *session) {
	m, ok := sv.loadMessage(w, r, se)
	if !ok {
		return
	}
	switch r.PathValue("fmt") {
	case "eml":
		download(w, "message/rfc822", fileBase(m)+".eml", m.Raw)
	case "pdf":
		b, err := ExportPDF(m.Raw, se.mb.Language, sv.locOf(se.mb), m.Received)
		if err != nil {
			sv.log.Error("pdf export", "error", err)
			sv.fail(w, r, se, http.StatusInternalServerError, "err_internal")
			return
		}
		download(w, "application/pdf", fileBase(m)+".pdf", b)
	case "msg":
		b, err := ExportMSG(m.Raw)
		if err != nil {
			sv.log.Error("msg export", "error", err)
			sv.fail(w, r, se, http.StatusInternalServerError, "err_internal")
			return
		}
		download(w, "application/vnd.ms-outlook", fileBase(m)+".msg", b)
	default:
		sv.fail(w, r, se, http.StatusNotFound, "err_not_found")
	}
}

// deleteForm asks before deleting (no JavaScript: a page of its own).
func (sv *Service) deleteForm(w http.ResponseWriter, r *http.Request, se *session) {
	m, ok := sv.loadMessage(w, r, se)
	if !ok {
		return
	}
	p := sv.newPage(w, r, se)
	p.Title, p.Msg = p.T("delete_title"), m
	sv.render(w, http.StatusOK, "delete", p)
}

func (sv *Service) deletePost(w http.ResponseWriter, r *http.Request, se *session) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	var m *Message
	if err == nil {
		m, err = sv.store.GetMessage(r.Context(), se.mb.Address, id)
	}
	if err == nil {
		err = sv.store.DeleteMessage(r.Context(), se.mb.Address, id)
	}
	if err != nil {
		sv.fail(w, r, se, http.StatusNotFound, "err_not_found")
		return
	}
	folder := "/inbox"
	if m.Folder == "sent" {
		folder = "/sent"
	}
	sv.redirect(w, r, folder+"?done=deleted")
}

// --- compose and send -----------------------------------------------------

func (sv *Service) allowedList() string {
	var out []string
	for _, a := range sv.s.allowed {
		if strings.HasPrefix(a, "@") {
			a = "*" + a
		}
		out = append(out, a)
	}
	return strings.Join(out, ", ")
}

func (sv *Service) composeForm(w http.ResponseWriter, r *http.Request, se *session) {
	p := sv.newPage(w, r, se)
	p.Title, p.Nonce, p.AllowedList = p.T("compose"), newToken(), sv.allowedList()
	q := r.URL.Query()
	if id := q.Get("reply"); id != "" {
		r.SetPathValue("id", id)
		m, ok := sv.loadMessage(w, r, se)
		if !ok {
			return
		}
		parsed, _ := ParseMessage(m.Raw)
		p.ReplyID = id
		if m.Folder == "sent" { // following up on one's own message
			if l, err := parsed.Header.AddressList("To"); err == nil {
				var tos []string
				for _, a := range l {
					tos = append(tos, a.Address)
				}
				p.To = strings.Join(tos, ", ")
			}
		} else if a, err := mail.ParseAddress(firstNonEmpty(parsed.Header.Get("Reply-To"), parsed.Header.Get("From"))); err == nil {
			p.To = a.Address
		}
		p.Subject = m.Meta.Subject
		if !strings.HasPrefix(strings.ToLower(p.Subject), "re:") {
			p.Subject = "Re: " + p.Subject
		}
		text := parsed.Text
		if text == "" {
			text = htmlToText(parsed.HTML)
		}
		p.Body = "\n\n" + m.Meta.From + " " + p.T("wrote") + ":\n> " + strings.ReplaceAll(strings.TrimRight(text, "\r\n"), "\n", "\n> ")
	} else if id := q.Get("forward"); id != "" {
		r.SetPathValue("id", id)
		m, ok := sv.loadMessage(w, r, se)
		if !ok {
			return
		}
		p.ForwardID, p.Subject = id, "Fwd: "+m.Meta.Subject
	}
	sv.render(w, http.StatusOK, "compose", p)
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func (sv *Service) sendPost(w http.ResponseWriter, r *http.Request, se *session) {
	to, subject, body := r.PostFormValue("to"), r.PostFormValue("subject"), r.PostFormValue("body")
	rerender := func(status int, key, extra string) {
		p := sv.newPage(w, r, se)
		p.Title, p.Nonce, p.AllowedList = p.T("compose"), r.PostFormValue("nonce"), sv.allowedList()
		p.To, p.Subject, p.Body, p.ReplyID, p.ForwardID = to, subject, body, r.PostFormValue("reply"), r.PostFormValue("forward")
		p.Error, p.ErrorExtra = key, extra
		sv.render(w, status, "compose", p)
	}
	addrs, err := mail.ParseAddressList(to)
	if err != nil || len(addrs) == 0 {
		rerender(http.StatusUnprocessableEntity, "err_no_recipient", "")
		return
	}
	var rcpts []string
	for _, a := range addrs {
		if !sv.s.allowedRecipient(a.Address) {
			sv.log.Warn("reply to a recipient not allowed refused", "mailbox", se.mb.Address, "to", a.Address)
			rerender(http.StatusForbidden, "err_recipient", sv.allowedList())
			return
		}
		rcpts = append(rcpts, a.Address)
	}
	nonce := r.PostFormValue("nonce")
	if len(nonce) < 32 {
		nonce = newToken()
	}
	var orig *StoredMessage
	for _, k := range []string{"reply", "forward"} {
		if id := r.PostFormValue(k); id != "" {
			n, err := strconv.ParseInt(id, 10, 64)
			if err == nil {
				orig, err = sv.Get(r.Context(), se.mb.Address, se.priv, n)
			}
			if err != nil {
				rerender(http.StatusNotFound, "err_not_found", "")
				return
			}
		}
	}
	raw := buildMessage(se.mb.Address, addrs, subject, body, sv.Now(), nonce, sv.s.baseURL.Hostname(), orig, r.PostFormValue("forward") != "")
	env := &sdk.Envelope{MailFrom: se.mb.Address}
	for _, a := range rcpts {
		env.Recipients = append(env.Recipients, sdk.Recipient{Address: a})
	}
	qid, err := sv.host.Submit(r.Context(), "webmailbox-send:"+nonce, env, bytes.NewReader(raw))
	if errors.Is(err, sdk.ErrUnknownRecipient) {
		// A typo in an allowed domain ("sendr@org"): say so, keep the draft.
		var bad []string
		for _, a := range rcpts {
			if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(a)) {
				bad = append(bad, a)
			}
		}
		if len(bad) == 0 {
			bad = rcpts
		}
		sv.log.Info("reply to an address that does not exist refused", "mailbox", se.mb.Address, "to", strings.Join(bad, ","))
		rerender(http.StatusUnprocessableEntity, "err_unknown_recipient", strings.Join(bad, ", "))
		return
	}
	if err != nil {
		sv.log.Error("submitting a reply", "mailbox", se.mb.Address, "error", err)
		rerender(http.StatusBadGateway, "err_send", "")
		return
	}
	if err := sv.storeSent(r.Context(), se.mb, raw); err != nil {
		sv.log.Error("keeping a sent copy", "error", err)
	}
	sv.log.Info("message sent from the web mailbox", "mailbox", se.mb.Address, "queue_id", qid, "rcpts", len(rcpts))
	sv.redirect(w, r, "/inbox?done=sent")
}

// buildMessage writes a text/plain reply, or a multipart/mixed forward
// with the original attached as message/rfc822.
func buildMessage(from string, to []*mail.Address, subject, body string, now time.Time, nonce, host string, orig *StoredMessage, forward bool) []byte {
	var b bytes.Buffer
	hdr := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	hdr("From", (&mail.Address{Address: from}).String())
	var tos []string
	for _, a := range to {
		tos = append(tos, (&mail.Address{Address: a.Address}).String())
	}
	hdr("To", strings.Join(tos, ", "))
	hdr("Subject", mime.QEncoding.Encode("utf-8", strings.NewReplacer("\r", "", "\n", " ").Replace(subject)))
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", fmt.Sprintf("<%x@%s>", hashSecret([]byte(nonce))[:12], host))
	if orig != nil && !forward {
		if p, err := ParseMessage(orig.Raw); err == nil {
			if id := p.Header.Get("Message-Id"); id != "" && !strings.ContainsAny(id, "\r\n") {
				hdr("In-Reply-To", id)
				hdr("References", id)
			}
		}
	}
	hdr("MIME-Version", "1.0")
	text := strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n")
	writeQP := func() {
		qw := quotedprintable.NewWriter(&b)
		qw.Write([]byte(text))
		qw.Close()
		b.WriteString("\r\n")
	}
	if orig == nil || !forward {
		hdr("Content-Type", "text/plain; charset=utf-8")
		hdr("Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		writeQP()
		return b.Bytes()
	}
	boundary := fmt.Sprintf("=_wmb_%x", randBytes(12))
	hdr("Content-Type", mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": boundary}))
	b.WriteString("\r\n--" + boundary + "\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	writeQP()
	b.WriteString("--" + boundary + "\r\n")
	b.WriteString("Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"forwarded.eml\"\r\n\r\n")
	b.Write(orig.Raw)
	if !bytes.HasSuffix(orig.Raw, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.Bytes()
}

func (sv *Service) settingsForm(w http.ResponseWriter, r *http.Request, se *session) {
	p := sv.newPage(w, r, se)
	p.Title, p.ResetAllowed, p.Question = p.T("settings"), se.mb.ResetAllow, se.mb.Question
	switch {
	case r.URL.Query().Get("done") == "zone":
		p.Notice = "tz_saved"
	case !se.mb.ResetAllow:
		p.Notice = "pw_fixed"
	}
	sv.render(w, http.StatusOK, "settings", p)
}

// zonePost stores the time zone the owner chose; dates on every page,
// in exports and in notification mails follow it.
func (sv *Service) zonePost(w http.ResponseWriter, r *http.Request, se *session) {
	z := r.PostFormValue("zone")
	if !validZone(z) {
		p := sv.newPage(w, r, se)
		p.Title, p.ResetAllowed, p.Question, p.Error = p.T("settings"), se.mb.ResetAllow, se.mb.Question, "err_zone"
		sv.render(w, http.StatusUnprocessableEntity, "settings", p)
		return
	}
	se.mb.TimeZone = z
	if err := sv.store.UpdateMailbox(r.Context(), se.mb); err != nil {
		sv.log.Error("saving the time zone", "mailbox", se.mb.Address, "error", err)
		sv.fail(w, r, se, http.StatusInternalServerError, "err_internal")
		return
	}
	sv.log.Info("time zone chosen", "mailbox", se.mb.Address, "zone", sv.locOf(se.mb).String())
	sv.redirect(w, r, "/settings?done=zone")
}

func (sv *Service) settingsPost(w http.ResponseWriter, r *http.Request, se *session) {
	err := sv.ChangePassword(r.Context(), sv.clientIP(r), se.mb.Address, se.idHash, r.PostFormValue("old"), r.PostFormValue("password"),
		r.PostFormValue("password2"), r.PostFormValue("question"), r.PostFormValue("answer"))
	p := sv.newPage(w, r, se)
	p.Title, p.ResetAllowed, p.Question = p.T("settings"), se.mb.ResetAllow, se.mb.Question
	var fe *formError
	switch {
	case err == nil:
		p.Notice = "pw_changed"
		sv.render(w, http.StatusOK, "settings", p)
	case errors.As(err, &fe):
		p.Error = fe.Key
		sv.render(w, http.StatusUnprocessableEntity, "settings", p)
	case errors.Is(err, ErrLoginFailed):
		p.Error = "old_pw_wrong"
		sv.render(w, http.StatusUnauthorized, "settings", p)
	case p.throttled(err):
		sv.render(w, http.StatusTooManyRequests, "settings", p)
	default:
		sv.log.Error("changing a password", "error", err)
		sv.fail(w, r, se, http.StatusInternalServerError, "err_internal")
	}
}
