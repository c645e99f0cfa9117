package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/posthorn/posthorn/mta/internal/auth"
	"github.com/posthorn/posthorn/mta/internal/directory"
)

// Error is an operation's failure with the HTTP status it means; the API
// sends it as {"error": {"code": ..., "message": ...}}.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

func badRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf(format, args...)}
}

// DirectoryOps are the directory operations of the admin API and of
// `posthorn directory` (over the control socket): one implementation for
// both.
type DirectoryOps struct {
	Dir *directory.Directory
}

// Op is one directory operation with its arguments, as the control socket
// carries it.
type Op struct {
	Op       string   `json:"op"`
	Domain   string   `json:"domain,omitempty"`
	Address  string   `json:"address,omitempty"`
	CatchAll string   `json:"catch_all,omitempty"`
	LMTP     string   `json:"lmtp,omitempty"`
	Password string   `json:"password,omitempty"`
	Hash     string   `json:"password_hash,omitempty"`
	Targets  []string `json:"targets,omitempty"`
	Enabled  bool     `json:"enabled,omitempty"`
	Level    string   `json:"level,omitempty"`
	After    string   `json:"after,omitempty"`
	Limit    int      `json:"limit,omitempty"`
}

// Do runs one operation (the control socket's "directory" command).
func (o *DirectoryOps) Do(ctx context.Context, op Op) (any, error) {
	switch op.Op {
	case "domains":
		return o.Domains(), nil
	case "put-domain":
		return o.PutDomain(ctx, op.Domain, op.CatchAll, op.LMTP)
	case "delete-domain":
		return nil, o.DeleteDomain(ctx, op.Domain)
	case "list":
		return o.List(ctx, op.Domain, op.After, op.Limit)
	case "show":
		return o.Show(ctx, op.Address)
	case "put-mailbox":
		return o.PutMailbox(ctx, op.Address, op.Password, op.Hash)
	case "put-alias":
		return o.PutAlias(ctx, op.Address, op.Targets)
	case "delete-address":
		return nil, o.DeleteAddress(ctx, op.Address)
	case "secure-alias":
		return o.SetSecureAlias(ctx, op.Address, op.Enabled, op.Level)
	}
	return nil, badRequest("unknown directory operation %q", op.Op)
}

func (o *DirectoryOps) writer() (directory.Writer, error) {
	w, ok := o.Dir.Writer()
	if !ok {
		return nil, &Error{Status: http.StatusConflict, Code: "read_only",
			Message: "the directory is the config file ([directory] kind = \"static\"): edit posthorn.toml, or use kind sqlite or postgres"}
	}
	return w, nil
}

// wrap turns directory errors into API errors.
func wrap(err error) error {
	var ae *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, directory.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: "not_found", Message: "no such domain or address"}
	case errors.Is(err, directory.ErrConflict):
		return &Error{Status: http.StatusConflict, Code: "conflict", Message: strings.TrimPrefix(err.Error(), "directory: conflict: ")}
	}
	return &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "the directory is unavailable, try again later"}
}

func checkDomain(d string) (string, error) {
	d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	if d == "" || len(d) > 253 || strings.ContainsAny(d, " @/\\\t\r\n") || !strings.Contains(d, ".") && d != "localhost" {
		return "", badRequest("%q is not a domain name", d)
	}
	return d, nil
}

func checkAddress(a string) (string, error) {
	a = directory.Normalize(a)
	local, dom := directory.Split(a)
	if local == "" || strings.ContainsAny(local, " \t\r\n<>\"") || len(a) > 320 {
		return "", badRequest("%q is not an address (local@domain)", a)
	}
	if _, err := checkDomain(dom); err != nil {
		return "", badRequest("%q is not an address (local@domain)", a)
	}
	return a, nil
}

// Domains lists the local domains.
func (o *DirectoryOps) Domains() []directory.Domain {
	ds := o.Dir.Domains()
	sortDomains(ds)
	return ds
}

// PutDomain creates or changes a domain.
func (o *DirectoryOps) PutDomain(ctx context.Context, name, catchAll, lmtp string) (*directory.Domain, error) {
	name, err := checkDomain(name)
	if err != nil {
		return nil, err
	}
	if catchAll != "" && strings.ContainsAny(catchAll, "@ \t\r\n") {
		return nil, badRequest("catch_all is a local part (without @), got %q", catchAll)
	}
	if lmtp != "" && !strings.HasPrefix(lmtp, "tcp:") && !strings.HasPrefix(lmtp, "unix:") {
		return nil, badRequest("lmtp is \"tcp:HOST:PORT\" or \"unix:/path\", got %q", lmtp)
	}
	w, err := o.writer()
	if err != nil {
		return nil, err
	}
	d := directory.Domain{Name: name, CatchAll: strings.ToLower(catchAll), LMTP: lmtp}
	if err := w.PutDomain(ctx, d); err != nil {
		return nil, wrap(err)
	}
	return &d, nil
}

// DeleteDomain removes a domain and its addresses.
func (o *DirectoryOps) DeleteDomain(ctx context.Context, name string) error {
	name, err := checkDomain(name)
	if err != nil {
		return err
	}
	w, err := o.writer()
	if err != nil {
		return err
	}
	return wrap(w.DeleteDomain(ctx, name))
}

// List pages through a domain's addresses.
func (o *DirectoryOps) List(ctx context.Context, domain, after string, limit int) ([]directory.Address, error) {
	domain, err := checkDomain(domain)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	w, err := o.writer()
	if err != nil {
		return nil, err
	}
	if _, ok := o.Dir.Domain(domain); !ok {
		return nil, wrap(directory.ErrNotFound)
	}
	out, err := w.ListAddresses(ctx, domain, after, limit)
	return out, wrap(err)
}

// Show looks one address up (as RCPT would, without delimiter and
// catch-all).
func (o *DirectoryOps) Show(ctx context.Context, addr string) (*directory.Address, error) {
	addr, err := checkAddress(addr)
	if err != nil {
		return nil, err
	}
	a, err := o.Dir.Address(ctx, addr)
	return a, wrap(err)
}

// PutMailbox creates a mailbox or sets its password (password is hashed
// here with argon2id; hash is an argon2id PHC string made elsewhere).
func (o *DirectoryOps) PutMailbox(ctx context.Context, addr, password, hash string) (*directory.Address, error) {
	addr, err := checkAddress(addr)
	if err != nil {
		return nil, err
	}
	switch {
	case password != "" && hash != "":
		return nil, badRequest("give password or password_hash, not both")
	case password != "":
		if len(password) < 8 {
			return nil, badRequest("the password must have at least 8 characters")
		}
		if hash, err = auth.Hash(password); err != nil {
			return nil, err
		}
	case hash != "":
		if _, err := auth.Verify(hash, ""); err != nil {
			return nil, badRequest("password_hash is not an argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$key)")
		}
	}
	w, err := o.writer()
	if err != nil {
		return nil, err
	}
	if err := w.PutMailbox(ctx, addr, hash); err != nil {
		return nil, wrap(err)
	}
	return o.Show(ctx, addr)
}

// PutAlias creates or changes an alias.
func (o *DirectoryOps) PutAlias(ctx context.Context, addr string, targets []string) (*directory.Address, error) {
	addr, err := checkAddress(addr)
	if err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, badRequest("an alias needs at least one target")
	}
	for i, t := range targets {
		t = strings.TrimSpace(t)
		if t == "" || strings.ContainsAny(t, " \t\r\n<>") {
			return nil, badRequest("target %d (%q) is neither a local part nor an address", i, t)
		}
		if strings.Contains(t, "@") {
			if _, err := checkAddress(t); err != nil {
				return nil, badRequest("target %d (%q) is neither a local part nor an address", i, t)
			}
		}
		targets[i] = t
	}
	w, err := o.writer()
	if err != nil {
		return nil, err
	}
	if err := w.PutAlias(ctx, addr, targets); err != nil {
		return nil, wrap(err)
	}
	return o.Show(ctx, addr)
}

// DeleteAddress removes a mailbox or alias.
func (o *DirectoryOps) DeleteAddress(ctx context.Context, addr string) error {
	addr, err := checkAddress(addr)
	if err != nil {
		return err
	}
	w, err := o.writer()
	if err != nil {
		return err
	}
	return wrap(w.DeleteAddress(ctx, addr))
}

// SetSecureAlias switches a mailbox's secure alias and sets its level
// ("" = the site's default).
func (o *DirectoryOps) SetSecureAlias(ctx context.Context, addr string, on bool, level string) (*directory.Address, error) {
	addr, err := checkAddress(addr)
	if err != nil {
		return nil, err
	}
	if !directory.ValidSecureLevel(level) {
		return nil, badRequest("level %q is not one of %s (or empty for the default)", level, strings.Join(directory.SecureLevels, ", "))
	}
	w, err := o.writer()
	if err != nil {
		return nil, err
	}
	if err := w.SetSecureAlias(ctx, addr, on, level); err != nil {
		return nil, wrap(err)
	}
	return o.Show(ctx, addr)
}
