package directory

import (
	"context"
	"slices"
	"strings"

	"github.com/posthorn/posthorn/conf"
)

// PasswordFile is the password file of the static backend: every user in
// it is a mailbox too.
type PasswordFile interface {
	Exists(addr string) bool
}

// hasher is a PasswordFile that also gives out hashes.
type hasher interface {
	Hash(addr string) (string, bool)
}

// Static is the backend of small sites: the config's [[domain]] tables,
// [secure_alias] users and levels, and the password file. It is read-only
// and in memory (the password file is re-read when it changes), so it is
// not cached.
type Static struct {
	cfg   *conf.Config
	users PasswordFile
	doms  map[string]*conf.Domain
}

var _ Backend = (*Static)(nil)

// NewStatic returns the static backend of cfg; users may be nil.
func NewStatic(cfg *conf.Config, users PasswordFile) *Static {
	s := &Static{cfg: cfg, users: users, doms: map[string]*conf.Domain{}}
	for i := range cfg.Domains {
		d := &cfg.Domains[i]
		s.doms[strings.ToLower(d.Name)] = d
	}
	return s
}

// Domains implements Backend.
func (s *Static) Domains(context.Context) ([]Domain, error) {
	out := make([]Domain, 0, len(s.cfg.Domains))
	for _, d := range s.cfg.Domains {
		out = append(out, Domain{Name: strings.ToLower(d.Name), CatchAll: strings.ToLower(d.CatchAll), LMTP: d.LMTP})
	}
	return out, nil
}

// Address implements Backend: an alias of the domain wins over a mailbox
// of the same name, as it always has.
func (s *Static) Address(_ context.Context, addr string) (*Address, error) {
	addr = Normalize(addr)
	local, dom := Split(addr)
	d, ok := s.doms[dom]
	if !ok {
		return nil, ErrNotFound
	}
	if t, ok := d.Aliases[local]; ok {
		return &Address{Addr: addr, Targets: slices.Clone(t)}, nil
	}
	box := slices.ContainsFunc(d.Mailboxes, func(m string) bool { return strings.EqualFold(m, local) })
	if !box && (s.users == nil || !s.users.Exists(addr)) {
		return nil, ErrNotFound
	}
	a := &Address{Addr: addr, Mailbox: true}
	if h, ok := s.users.(hasher); ok {
		a.PasswordHash, _ = h.Hash(addr)
	}
	if level, ok := s.cfg.SecureAlias.UserLevel(addr); ok {
		a.SecureAlias, a.SecureLevel = true, levelString(level)
	}
	return a, nil
}

// Close implements Backend.
func (s *Static) Close() error { return nil }
