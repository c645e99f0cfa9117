// Package directory is where Posthorn's users live: local domains,
// mailboxes, aliases, catch-alls, the recipient delimiter, SMTP passwords
// (argon2id, PHC strings) and each user's secure-alias opt-in and level.
//
// A [Backend] stores them: [Static] reads the config's [[domain]] tables
// and the password file (small sites, as before); [SQL] keeps them in an
// embedded SQLite file or in the PostgreSQL database that every node
// shares. [Directory] sits in front of a backend: domains are held in
// memory (they are few), addresses are looked up on demand through a
// bounded LRU cache with a TTL. Changes made through this process
// invalidate the cache at once; PostgreSQL announces every other change
// by NOTIFY, which drops the entry on every node. When the backend
// cannot answer, a lookup returns an error that is not [ErrNotFound]: the
// SMTP server turns it into a 4xx reply (never 5xx), and a cached answer
// older than the TTL is still used while the backend is down.
//
// An optional [Userdb] (Dovecot's auth-userdb) is asked about addresses of
// local domains that the backend does not know: a yes makes them mailboxes.
package directory

import (
	"context"
	"errors"
	"strings"
)

// ErrNotFound means the backend has no entry for the address or domain.
var ErrNotFound = errors.New("directory: not found")

// ErrReadOnly is returned by writes to a backend that cannot change
// (the static config).
var ErrReadOnly = errors.New("directory: read-only backend (the config file)")

// ErrUnavailable wraps a backend failure (database down, timeout).
var ErrUnavailable = errors.New("directory unavailable")

// ErrConflict is returned when a write would make an address both a
// mailbox and an alias, or names a domain that does not exist.
var ErrConflict = errors.New("directory: conflict")

// Domain is one local domain.
type Domain struct {
	Name string `json:"name"`
	// CatchAll is the local part that receives mail for unknown local
	// parts; "" rejects them.
	CatchAll string `json:"catch_all"`
	// LMTP overrides the node's LMTP destination for this domain.
	LMTP string `json:"lmtp"`
}

// Address is what one address (lower-case local@domain) is: a mailbox
// or an alias.
type Address struct {
	Addr string `json:"address"`
	// Mailbox is true for a mailbox; otherwise Targets lists the alias's
	// targets (a target without "@" is a local part of the same domain).
	Mailbox bool     `json:"mailbox"`
	Targets []string `json:"targets,omitempty"`
	// PasswordHash is the argon2id PHC string for SMTP AUTH; "" = none.
	PasswordHash string `json:"-"`
	// SecureAlias is the user's opt-in to local@SUB.domain; SecureLevel
	// is their TLS level for it (encrypt, dane-only, verify), "" = the
	// site's default level.
	SecureAlias bool   `json:"secure_alias"`
	SecureLevel string `json:"secure_level,omitempty"`
}

// Backend stores the directory.
type Backend interface {
	// Domains lists every local domain.
	Domains(ctx context.Context) ([]Domain, error)
	// Address looks up a lower-cased address exactly (no delimiter, no
	// catch-all: the router applies those); ErrNotFound if absent.
	Address(ctx context.Context, addr string) (*Address, error)
	Close() error
}

// Writer is a backend that can be changed (the SQL backends).
type Writer interface {
	PutDomain(ctx context.Context, d Domain) error
	// DeleteDomain removes a domain with all its addresses.
	DeleteDomain(ctx context.Context, name string) error
	// PutMailbox creates a mailbox or, if it exists, keeps it; a
	// non-empty hash sets its password.
	PutMailbox(ctx context.Context, addr, passwordHash string) error
	PutAlias(ctx context.Context, addr string, targets []string) error
	// DeleteAddress removes a mailbox or an alias.
	DeleteAddress(ctx context.Context, addr string) error
	// SetSecureAlias sets a mailbox's opt-in and level ("" = default).
	SetSecureAlias(ctx context.Context, addr string, on bool, level string) error
	// ListAddresses lists a domain's addresses in order, after the
	// address given (for paging), at most limit.
	ListAddresses(ctx context.Context, domain, after string, limit int) ([]Address, error)
}

// Notifier is a backend that announces changes made elsewhere.
type Notifier interface {
	// Watch calls changed with the key of every change ("d:DOMAIN" or
	// "a:ADDRESS"; "" = anything may have changed) until ctx ends.
	Watch(ctx context.Context, changed func(key string)) error
}

// Userdb answers whether a mailbox exists (Dovecot's auth-userdb).
type Userdb interface {
	UserExists(ctx context.Context, addr string) (bool, error)
}

// Split returns the local part and the lower-cased domain of addr.
func Split(addr string) (local, domain string) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr, ""
	}
	return addr[:i], strings.ToLower(addr[i+1:])
}

// Normalize lower-cases an address.
func Normalize(addr string) string { return strings.ToLower(strings.TrimSpace(addr)) }
