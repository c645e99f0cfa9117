// Package adminapi is Posthorn's admin HTTP API: JSON over HTTPS, bearer
// tokens with scopes, off unless [admin] address is set. It manages the
// user directory (domains, mailboxes, aliases, secure-alias opt-ins and
// levels), the queue (the same operations as the control socket), shows
// plugin status, and answers preflight questions ("what will happen to a
// mail from A to B?"). openapi.json in this package describes every route;
// a test keeps it and the handlers in step.
//
// Tokens are configured by their SHA-256 digest only; a request carries
// "Authorization: Bearer TOKEN". Errors are JSON: {"error": {"code":
// "...", "message": "..."}} with a 4xx status for the client's mistakes
// (400 bad input, 401 no or unknown token, 403 missing scope, 404, 409)
// and 503 when the directory cannot answer.
package adminapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/directory"
	"github.com/posthorn/posthorn/queue"
)

// OpenAPI is the API's OpenAPI 3 document.
//
//go:embed openapi.json
var OpenAPI []byte

// Config is what the API serves.
type Config struct {
	Tokens []conf.AdminToken
	Dir    *directory.Directory
	// Queue answers queue requests as the control socket does.
	Queue interface {
		Do(control.Request) control.Response
	}
	// Plugins returns the plugins' status (JSON).
	Plugins func() (json.RawMessage, error)
	// Preflight explains what would happen to a mail from from to each
	// of to.
	Preflight func(ctx context.Context, from string, to []string) (any, error)
	Logger    *slog.Logger
}

// Server is a running admin API.
type Server struct {
	cfg    Config
	ops    *DirectoryOps
	mux    *http.ServeMux
	routes []route
	srv    *http.Server
	ln     net.Listener
}

// route is one endpoint: method, pattern (net/http syntax), scope.
type route struct {
	method, pattern, scope string
	h                      func(r *http.Request) (any, error)
}

// New builds the API's handler without listening (tests, other servers).
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, ops: &DirectoryOps{Dir: cfg.Dir}, mux: http.NewServeMux()}
	s.routes = []route{
		{"GET", "/v1/domains", "directory:read", s.listDomains},
		{"PUT", "/v1/domains/{domain}", "directory:write", s.putDomain},
		{"DELETE", "/v1/domains/{domain}", "directory:write", s.deleteDomain},
		{"GET", "/v1/domains/{domain}/addresses", "directory:read", s.listAddresses},
		{"GET", "/v1/addresses/{address}", "directory:read", s.showAddress},
		{"DELETE", "/v1/addresses/{address}", "directory:write", s.deleteAddress},
		{"PUT", "/v1/mailboxes/{address}", "directory:write", s.putMailbox},
		{"PUT", "/v1/aliases/{address}", "directory:write", s.putAlias},
		{"PUT", "/v1/addresses/{address}/secure-alias", "directory:write", s.putSecureAlias},
		{"DELETE", "/v1/addresses/{address}/secure-alias", "directory:write", s.deleteSecureAlias},
		{"GET", "/v1/queue", "queue:read", s.queueList},
		{"GET", "/v1/queue/summary", "queue:read", s.queueSummary},
		{"GET", "/v1/queue/{id}", "queue:read", s.queueShow},
		{"POST", "/v1/queue/{id}/{action}", "queue:write", s.queueAction},
		{"POST", "/v1/queue/flush", "queue:write", s.queueFlushAll},
		{"GET", "/v1/plugins", "plugins:read", s.plugins},
		{"GET", "/v1/preflight", "preflight", s.preflight},
	}
	for _, rt := range s.routes {
		s.mux.Handle(rt.method+" "+rt.pattern, s.wrap(rt))
	}
	s.mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(OpenAPI)
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &Error{Status: http.StatusNotFound, Code: "not_found", Message: "no such endpoint: see /v1/openapi.json"})
	})
	return s
}

// Listen binds addr with TLS; Serve runs the API.
func Listen(addr string, tlsConf *tls.Config, cfg Config) (*Server, error) {
	s := New(cfg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s.ln = tls.NewListener(ln, tlsConf)
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: 5 * time.Minute,
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

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// Routes lists "METHOD PATTERN" of every endpoint (for the OpenAPI test).
func (s *Server) Routes() []string {
	var out []string
	for _, rt := range s.routes {
		out = append(out, rt.method+" "+rt.pattern)
	}
	return out
}

// token returns the configured token the request's bearer token is.
func (s *Server) token(r *http.Request) (*conf.AdminToken, bool) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return nil, false
	}
	sum := sha256.Sum256([]byte(tok))
	got := hex.EncodeToString(sum[:])
	var found *conf.AdminToken
	for i := range s.cfg.Tokens {
		if subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Tokens[i].SHA256)) == 1 {
			found = &s.cfg.Tokens[i]
		}
	}
	return found, found != nil
}

func hasScope(t *conf.AdminToken, scope string) bool {
	for _, s := range t.Scopes {
		if s == "*" || s == scope {
			return true
		}
	}
	return false
}

func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := s.token(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="posthorn"`)
			writeError(w, &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "a valid bearer token is needed"})
			return
		}
		if !hasScope(tok, rt.scope) {
			writeError(w, &Error{Status: http.StatusForbidden, Code: "forbidden", Message: "the token lacks the scope " + rt.scope})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		out, err := rt.h(r)
		if err != nil {
			var ae *Error
			if !errors.As(err, &ae) {
				s.cfg.Logger.Error("admin API", "route", rt.pattern, "err", err)
				ae = &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
			}
			writeError(w, ae)
			return
		}
		s.cfg.Logger.Info("admin API", "token", tok.Name, "method", r.Method, "path", r.URL.Path)
		status := http.StatusOK
		if out == nil {
			status = http.StatusNoContent
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if out != nil {
			json.NewEncoder(w).Encode(out)
		}
	})
}

func writeError(w http.ResponseWriter, e *Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(map[string]*Error{"error": e})
}

// decode reads a JSON body into v, refusing unknown fields.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return badRequest("bad JSON body: %v", err)
	}
	return nil
}

func (s *Server) listDomains(r *http.Request) (any, error) {
	return map[string]any{"domains": s.ops.Domains()}, nil
}

func (s *Server) putDomain(r *http.Request) (any, error) {
	var body struct {
		CatchAll string `json:"catch_all"`
		LMTP     string `json:"lmtp"`
	}
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	return s.ops.PutDomain(r.Context(), r.PathValue("domain"), body.CatchAll, body.LMTP)
}

func (s *Server) deleteDomain(r *http.Request) (any, error) {
	return nil, s.ops.DeleteDomain(r.Context(), r.PathValue("domain"))
}

func (s *Server) listAddresses(r *http.Request) (any, error) {
	limit := 0
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return nil, badRequest("limit is a number from 1 to 1000")
		}
		limit = n
	}
	list, err := s.ops.List(r.Context(), r.PathValue("domain"), r.URL.Query().Get("after"), limit)
	if err != nil {
		return nil, err
	}
	return map[string]any{"addresses": list}, nil
}

func (s *Server) showAddress(r *http.Request) (any, error) {
	return s.ops.Show(r.Context(), r.PathValue("address"))
}

func (s *Server) deleteAddress(r *http.Request) (any, error) {
	return nil, s.ops.DeleteAddress(r.Context(), r.PathValue("address"))
}

func (s *Server) putMailbox(r *http.Request) (any, error) {
	var body struct {
		Password string `json:"password"`
		Hash     string `json:"password_hash"`
	}
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	return s.ops.PutMailbox(r.Context(), r.PathValue("address"), body.Password, body.Hash)
}

func (s *Server) putAlias(r *http.Request) (any, error) {
	var body struct {
		Targets []string `json:"targets"`
	}
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	return s.ops.PutAlias(r.Context(), r.PathValue("address"), body.Targets)
}

func (s *Server) putSecureAlias(r *http.Request) (any, error) {
	var body struct {
		Enabled *bool  `json:"enabled"`
		Level   string `json:"level"`
	}
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	if body.Enabled == nil {
		return nil, badRequest("enabled (true or false) is required")
	}
	return s.ops.SetSecureAlias(r.Context(), r.PathValue("address"), *body.Enabled, body.Level)
}

func (s *Server) deleteSecureAlias(r *http.Request) (any, error) {
	return s.ops.SetSecureAlias(r.Context(), r.PathValue("address"), false, "")
}

// queueDo runs a control-socket request and maps its error.
func (s *Server) queueDo(req control.Request) (*control.Response, error) {
	if s.cfg.Queue == nil {
		return nil, &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "no queue"}
	}
	resp := s.cfg.Queue.Do(req)
	if resp.Error != "" {
		status, code := http.StatusBadRequest, "bad_request"
		if strings.Contains(resp.Error, "no such message") {
			status, code = http.StatusNotFound, "not_found"
		}
		return nil, &Error{Status: status, Code: code, Message: resp.Error}
	}
	return &resp, nil
}

func (s *Server) queueList(r *http.Request) (any, error) {
	resp, err := s.queueDo(control.Request{Cmd: "list"})
	if err != nil {
		return nil, err
	}
	msgs := resp.Messages
	if msgs == nil {
		msgs = []*queue.Envelope{}
	}
	return map[string]any{"messages": msgs}, nil
}

func (s *Server) queueSummary(r *http.Request) (any, error) {
	resp, err := s.queueDo(control.Request{Cmd: "summary"})
	if err != nil {
		return nil, err
	}
	return resp.Summary, nil
}

func (s *Server) queueShow(r *http.Request) (any, error) {
	resp, err := s.queueDo(control.Request{Cmd: "show", ID: r.PathValue("id"), Body: r.URL.Query().Get("body") == "true"})
	if err != nil {
		return nil, err
	}
	return map[string]any{"message": resp.Message, "text": resp.Headers}, nil
}

func (s *Server) queueAction(r *http.Request) (any, error) {
	action := r.PathValue("action")
	switch action {
	case "hold", "release", "requeue", "delete", "flush":
	default:
		return nil, badRequest("unknown action %q (hold, release, requeue, delete, flush)", action)
	}
	resp, err := s.queueDo(control.Request{Cmd: action, ID: r.PathValue("id")})
	if err != nil {
		return nil, err
	}
	return map[string]int{"done": resp.Done}, nil
}

func (s *Server) queueFlushAll(r *http.Request) (any, error) {
	resp, err := s.queueDo(control.Request{Cmd: "flush"})
	if err != nil {
		return nil, err
	}
	return map[string]int{"done": resp.Done}, nil
}

func (s *Server) plugins(r *http.Request) (any, error) {
	if s.cfg.Plugins == nil {
		return map[string]any{"plugins": []any{}}, nil
	}
	raw, err := s.cfg.Plugins()
	if err != nil {
		return nil, err
	}
	return map[string]json.RawMessage{"plugins": raw}, nil
}

func (s *Server) preflight(r *http.Request) (any, error) {
	q := r.URL.Query()
	from := q.Get("from")
	to := q["to"]
	if len(to) == 0 {
		return nil, badRequest("to (one or more recipient addresses) is required")
	}
	if from != "" {
		if _, err := checkAddress(from); err != nil {
			return nil, err
		}
	}
	for _, t := range to {
		if _, err := checkAddress(t); err != nil {
			return nil, err
		}
	}
	if len(to) > 100 {
		return nil, badRequest("at most 100 recipients")
	}
	if s.cfg.Preflight == nil {
		return nil, &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "preflight is not available"}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	return s.cfg.Preflight(ctx, from, to)
}
