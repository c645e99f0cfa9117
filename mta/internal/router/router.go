// Package router decides where a recipient address goes: a local mailbox
// (Maildir or LMTP), an alias expansion, a catch-all, or a remote domain.
// Addresses follow RFC 5321 §2.3.11 (local-part@domain); local parts of local
// domains are compared case-insensitively, as Postfix does, and an optional
// recipient delimiter (user+tag@) selects the user's mailbox.
package router

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/directory"
	"github.com/posthorn/posthorn/queue"
)

// ErrNoSuchUser means a local domain has no mailbox, alias or catch-all for
// the address (550 5.1.1 at RCPT).
var ErrNoSuchUser = errors.New("no such user")

// ErrAliasLoop means alias expansion did not end.
var ErrAliasLoop = errors.New("alias loop")

// Kind says how a destination is delivered.
type Kind int

const (
	Local Kind = iota
	Remote
)

// Destination is one address after routing.
type Destination struct {
	Kind Kind
	// Addr is the address as it will be delivered (lower-cased domain).
	Addr string
	// Mailbox is the canonical local mailbox "user@domain" (no extension).
	Mailbox string
	// Maildir is the mailbox's directory, for Maildir delivery.
	Maildir string
	// LMTP is the LMTP target when the domain delivers over LMTP.
	LMTP string
}

// UserSource lists the users that exist beyond the config's mailboxes (the
// password file).
type UserSource interface {
	Exists(addr string) bool
}

// ErrUnavailable means the directory could not answer: a temporary
// failure (4xx at RCPT, a deferral in delivery), never a 5xx.
var ErrUnavailable = directory.ErrUnavailable

// Router resolves addresses against the directory of users.
type Router struct {
	cfg *conf.Config
	dir *directory.Directory
}

// New returns a router over the config's own tables (the static
// directory) and the password file users, which may be nil.
func New(cfg *conf.Config, users UserSource) *Router {
	var pf directory.PasswordFile
	if users != nil {
		pf = users
	}
	dir, err := directory.New(context.Background(), directory.NewStatic(cfg, pf),
		directory.Options{Delimiter: cfg.Local.RecipientDelimiter})
	if err != nil {
		panic(err) // the static backend cannot fail
	}
	return &Router{cfg: cfg, dir: dir}
}

// NewWithDirectory returns a router over dir.
func NewWithDirectory(cfg *conf.Config, dir *directory.Directory) *Router {
	return &Router{cfg: cfg, dir: dir}
}

// Directory is the directory the router looks users up in.
func (r *Router) Directory() *directory.Directory { return r.dir }

// Split returns the local part and the lower-cased domain of addr.
func Split(addr string) (local, domain string) { return directory.Split(addr) }

// IsLocal reports whether addr's domain is one of ours (a secure-alias
// subdomain of one of ours included).
func (r *Router) IsLocal(addr string) bool {
	_, d := Split(addr)
	_, ok := r.dir.Domain(d)
	return ok || r.secureParent(d) != ""
}

// secureParent returns the local domain d is the secure-alias subdomain
// of ("secure.example.org" -> "example.org"), or "".
func (r *Router) secureParent(d string) string {
	sub := strings.ToLower(r.cfg.SecureAlias.Subdomain) // no copy when already lower case
	if sub == "" || len(d) <= len(sub) || d[len(sub)] != '.' || d[:len(sub)] != sub {
		return "" // (not CutPrefix(d, sub+"."): a string built per recipient, issue 19)
	}
	parent := d[len(sub)+1:]
	if _, local := r.dir.Domain(parent); !local {
		return ""
	}
	return parent
}

// SecureAlias reports whether addr is a secure alias, user@SUB.DOMAIN of
// a local user who has one (mailbox.org's "secure alias"), and returns
// the user's own address and the TLS level they chose. When the directory
// cannot answer for an address of a secure-alias subdomain, it fails
// closed: the address counts as a secure alias with level TLSUnset, which
// outranks every level and never connects.
func (r *Router) SecureAlias(addr string) (base string, level conf.TLSLevel, ok bool) {
	base, level, ok, err := r.SecureAliasErr(addr)
	if err != nil {
		return base, conf.TLSUnset, true
	}
	return base, level, ok
}

// SecureAliasErr is SecureAlias with the directory's error, if any.
func (r *Router) SecureAliasErr(addr string) (base string, level conf.TLSLevel, ok bool, err error) {
	local, d := Split(addr)
	parent := r.secureParent(d)
	if parent == "" {
		return "", conf.TLSUnset, false, nil
	}
	base = strings.ToLower(r.base(local)) + "@" + parent
	dom, _ := r.dir.Domain(parent)
	mailbox, aliases, err := r.lookup(local, dom)
	if errors.Is(err, ErrNoSuchUser) || err == nil && (aliases != nil || mailbox == "") {
		return "", conf.TLSUnset, false, nil
	}
	if err != nil {
		return base, conf.TLSUnset, false, err
	}
	a, err := r.dir.Address(context.Background(), mailbox+"@"+parent)
	if errors.Is(err, directory.ErrNotFound) {
		return "", conf.TLSUnset, false, nil
	}
	if err != nil {
		return base, conf.TLSUnset, false, err
	}
	if !a.SecureAlias {
		return "", conf.TLSUnset, false, nil
	}
	if a.SecureLevel == "" {
		return base, r.cfg.SecureAlias.Level, true, nil
	}
	level, err = conf.ParseTLSLevel(a.SecureLevel)
	if err != nil {
		// A level the directory should never have stored: refuse
		// rather than guess (TLSUnset never connects).
		return base, conf.TLSUnset, true, nil
	}
	return base, level, true, nil
}

// LocalDomain reports whether domain is one of ours.
func (r *Router) LocalDomain(domain string) bool {
	_, ok := r.dir.Domain(domain)
	return ok
}

// base strips the address extension (user+tag -> user).
func (r *Router) base(local string) string {
	delim := r.dir.Delimiter()
	if delim == "" {
		return local
	}
	if i := strings.Index(local, delim); i > 0 {
		return local[:i]
	}
	return local
}

// lookup finds what a local address is: a mailbox (returns its local part),
// or alias targets. The exact local part is tried first, then the one
// without extension, then the domain's catch-all.
func (r *Router) lookup(local string, d directory.Domain) (mailbox string, aliases []string, err error) {
	l := strings.ToLower(local)
	cands := []string{l}
	if b := strings.ToLower(r.base(local)); b != l {
		cands = append(cands, b)
	}
	for _, cand := range cands {
		a, err := r.dir.Address(context.Background(), cand+"@"+d.Name)
		if errors.Is(err, directory.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		if !a.Mailbox {
			return "", a.Targets, nil
		}
		return cand, nil, nil
	}
	if d.CatchAll != "" {
		c := strings.ToLower(d.CatchAll)
		a, err := r.dir.Address(context.Background(), c+"@"+d.Name)
		switch {
		case err == nil && !a.Mailbox:
			return "", a.Targets, nil
		case err != nil && !errors.Is(err, directory.ErrNotFound):
			return "", nil, err
		}
		return c, nil, nil
	}
	return "", nil, ErrNoSuchUser
}

// Check reports whether addr may be accepted as a recipient: remote
// addresses always pass here (relay rules are the SMTP server's), local ones
// must exist.
func (r *Router) Check(addr string) error {
	local, dom := Split(addr)
	if r.secureParent(dom) != "" {
		_, _, ok, err := r.SecureAliasErr(addr)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNoSuchUser
		}
		return nil
	}
	d, ok := r.dir.Domain(dom)
	if !ok {
		return nil
	}
	_, _, err := r.lookup(local, d)
	return err
}

// Expand resolves addr through aliases to its final destinations, without
// duplicates.
func (r *Router) Expand(addr string) ([]Destination, error) {
	var out []Destination
	seen := map[string]bool{}
	if err := r.expand(addr, 0, seen, &out); err != nil {
		return nil, err
	}
	return out, nil
}

const maxAliasDepth = 20

func (r *Router) expand(addr string, depth int, seen map[string]bool, out *[]Destination) error {
	if depth > maxAliasDepth {
		return ErrAliasLoop
	}
	local, dom := Split(addr)
	if r.secureParent(dom) != "" {
		// A secure alias delivers to the user's own mailbox.
		_, _, ok, err := r.SecureAliasErr(addr)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s: %w", addr, ErrNoSuchUser)
		}
		local, dom = strings.ToLower(local), r.secureParent(dom)
	}
	d, ok := r.dir.Domain(dom)
	if !ok {
		key := local + "@" + dom
		if dom == "" {
			key = local
		}
		if !seen[strings.ToLower(key)] {
			seen[strings.ToLower(key)] = true
			*out = append(*out, Destination{Kind: Remote, Addr: key})
		}
		return nil
	}
	mailbox, aliases, err := r.lookup(local, d)
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	if aliases != nil {
		key := "alias:" + strings.ToLower(local) + "@" + dom
		if seen[key] {
			return nil // an alias reached twice: expanded once is enough
		}
		seen[key] = true
		for _, t := range aliases {
			if !strings.Contains(t, "@") {
				t = t + "@" + dom
			}
			if err := r.expand(t, depth+1, seen, out); err != nil {
				return err
			}
		}
		return nil
	}
	mb := mailbox + "@" + dom
	if seen[mb] {
		return nil
	}
	seen[mb] = true
	lmtp := d.LMTP
	if lmtp == "" {
		lmtp = r.cfg.Local.LMTP
	}
	*out = append(*out, Destination{
		Kind:    Local,
		Addr:    strings.ToLower(local) + "@" + dom,
		Mailbox: mb,
		Maildir: filepath.Join(r.cfg.Local.MaildirRoot, dom, mailbox),
		LMTP:    lmtp,
	})
	return nil
}

// Owns reports whether an authenticated user may use addr as envelope
// sender: their own address, an extension of it, or an alias that expands
// to them. An error means the directory could not answer.
func (r *Router) Owns(user, addr string) (bool, error) {
	user = strings.ToLower(user)
	if strings.EqualFold(addr, user) {
		return true, nil
	}
	local, dom := Split(addr)
	if strings.EqualFold(r.base(local)+"@"+dom, user) {
		return true, nil
	}
	if _, ok := r.dir.Domain(dom); !ok {
		return false, nil
	}
	dests, err := r.Expand(addr)
	if errors.Is(err, ErrUnavailable) {
		return false, err
	}
	if err != nil {
		return false, nil
	}
	for _, d := range dests {
		if d.Mailbox == user {
			return true, nil
		}
	}
	return false, nil
}

// ExpandRecipients expands every envelope recipient through aliases, drops
// duplicates, and keeps the address the client gave as ORCPT (RFC 3461)
// where expansion changed it. Each final address gets its own queue state.
func (r *Router) ExpandRecipients(rcpts []*queue.Recipient) ([]*queue.Recipient, error) {
	var out []*queue.Recipient
	seen := map[string]bool{}
	for _, rc := range rcpts {
		dests, err := r.Expand(rc.Addr)
		if err != nil {
			return nil, err
		}
		for _, d := range dests {
			key := strings.ToLower(d.Addr)
			if seen[key] {
				continue
			}
			seen[key] = true
			nr := *rc
			nr.Addr = d.Addr
			if nr.ORcpt == "" && !strings.EqualFold(d.Addr, rc.Addr) {
				nr.ORcpt = "rfc822;" + rc.Addr
			}
			out = append(out, &nr)
		}
	}
	return out, nil
}
