package conf

import (
	"net/url"
	"strings"
)

// Directory says where users live: domains, mailboxes, aliases,
// catch-alls, SMTP passwords and secure-alias opt-ins.
type Directory struct {
	// Kind: "static" (the [[domain]] tables and auth.password_file, as a
	// small site writes them), "sqlite" (an embedded database at Path) or
	// "postgres" (the [database] shared by every node).
	Kind string `toml:"kind"`
	// Path of the SQLite database (kind "sqlite").
	Path string `toml:"path"`
	// CacheSize bounds the lookups kept in memory (entries, >= 0; 0
	// turns the cache off).
	CacheSize int `toml:"cache_size"`
	// CacheTTL is how long a cached lookup is trusted without a change
	// notice; PostgreSQL announces changes at once (LISTEN/NOTIFY), so
	// this is only the backstop for missed notices and other writers.
	CacheTTL Duration `toml:"cache_ttl"`
}

// Database is the one PostgreSQL database that the MTA and its plugins
// share when several nodes serve the same users.
type Database struct {
	// DSN is a PostgreSQL connection URL or key=value string
	// ("postgres://posthorn:secret@db.example.net/posthorn"). Empty means
	// no shared database.
	DSN string `toml:"dsn"`
	// MaxConns caps the connection pool of this node (>= 1).
	MaxConns int `toml:"max_conns"`
	// TLS overrides the DSN's sslmode: "" (as in the DSN), "disable",
	// "require", "verify-ca" or "verify-full".
	TLS string `toml:"tls"`
	// CAFile is the PEM trust anchor for verify-ca / verify-full.
	CAFile string `toml:"ca_file"`
}

// Dovecot hands SMTP AUTH and recipient checks to a Dovecot auth
// service, as Postfix's smtpd_sasl_type = dovecot does.
type Dovecot struct {
	// AuthSocket is Dovecot's auth-client listener: "unix:/path" or
	// "tcp:HOST:PORT". When set, SMTP AUTH asks Dovecot instead of the
	// directory's passwords.
	AuthSocket string `toml:"auth_socket"`
	// UserdbSocket is Dovecot's auth-userdb listener. When set, a
	// recipient of a local domain that the directory does not know is
	// looked up there (USER) and accepted if Dovecot has the user.
	UserdbSocket string `toml:"userdb_socket"`
	// Service is the service name Dovecot sees ("smtp").
	Service string `toml:"service"`
	// Timeout bounds one request.
	Timeout Duration `toml:"timeout"`
}

// Admin is the HTTPS admin API (JSON, bearer tokens with scopes).
type Admin struct {
	// Address is HOST:PORT; empty turns the API off.
	Address string `toml:"address"`
	// Tokens that may call the API.
	Tokens []AdminToken `toml:"token"`
}

// AdminToken is one bearer token of the admin API. Only its SHA-256
// digest is in the config (`posthorn admin token` makes a token and its
// digest).
type AdminToken struct {
	Name string `toml:"name"`
	// SHA256 is the hex SHA-256 digest of the token.
	SHA256 string `toml:"sha256"`
	// Scopes: directory:read, directory:write, queue:read, queue:write,
	// plugins:read, preflight; "*" for all.
	Scopes []string `toml:"scopes"`
}

// AdminScopes are the scopes an admin token can carry.
var AdminScopes = []string{"directory:read", "directory:write", "queue:read", "queue:write", "plugins:read", "preflight"}

// SelfService is the users' own settings page (secure alias and level).
type SelfService struct {
	// Address is HOST:PORT of the HTTPS page; empty turns it off.
	Address string `toml:"address"`
}

func (v *validator) directory(c *Config) {
	d := &c.Directory
	switch d.Kind {
	case "static":
	case "sqlite":
		if d.Path == "" {
			v.errorf("directory.path", "kind \"sqlite\" needs the path of the database file")
		}
	case "postgres":
		if c.Database.DSN == "" {
			v.errorf("directory.kind", "kind \"postgres\" needs [database] dsn")
		}
	default:
		v.errorf("directory.kind", "unknown kind %q (use static, sqlite or postgres)", d.Kind)
	}
	v.atLeast("directory.cache_size", d.CacheSize, 0)
	v.positive("directory.cache_ttl", d.CacheTTL)

	db := &c.Database
	if db.DSN != "" {
		if strings.HasPrefix(db.DSN, "postgres://") || strings.HasPrefix(db.DSN, "postgresql://") {
			if _, err := url.Parse(db.DSN); err != nil {
				v.errorf("database.dsn", "not a valid URL (the error does not repeat the DSN: it may hold a password)")
			}
		} else if !strings.Contains(db.DSN, "=") {
			v.errorf("database.dsn", "want a postgres:// URL or key=value pairs")
		}
	}
	v.atLeast("database.max_conns", db.MaxConns, 1)
	switch db.TLS {
	case "", "disable", "require", "verify-ca", "verify-full":
	default:
		v.errorf("database.tls", "unknown mode %q (use disable, require, verify-ca or verify-full)", db.TLS)
	}
	if db.CAFile != "" && db.TLS != "verify-ca" && db.TLS != "verify-full" {
		v.errorf("database.ca_file", "only used with tls = \"verify-ca\" or \"verify-full\"")
	}

	dv := &c.Dovecot
	for key, s := range map[string]string{"dovecot.auth_socket": dv.AuthSocket, "dovecot.userdb_socket": dv.UserdbSocket} {
		if s != "" {
			v.lmtpLike(key, s)
		}
	}
	if dv.Service == "" {
		v.errorf("dovecot.service", "must not be empty")
	}
	v.positive("dovecot.timeout", dv.Timeout)

	v.listen("admin.address", c.Admin.Address)
	names := map[string]bool{}
	for i, t := range c.Admin.Tokens {
		key := indexKey("admin.token", i)
		if t.Name == "" {
			v.errorf(key+".name", "must not be empty")
		} else if names[t.Name] {
			v.errorf(key+".name", "duplicate token name %q", t.Name)
		}
		names[t.Name] = true
		if len(t.SHA256) != 64 || strings.Trim(strings.ToLower(t.SHA256), "0123456789abcdef") != "" {
			v.errorf(key+".sha256", "want the 64 hex digits of the token's SHA-256 digest (posthorn admin token)")
		}
		c.Admin.Tokens[i].SHA256 = strings.ToLower(t.SHA256)
		if len(t.Scopes) == 0 {
			v.errorf(key+".scopes", "must list at least one scope")
		}
		for j, s := range t.Scopes {
			if s != "*" && !contains(AdminScopes, s) {
				v.errorf(indexKey(key+".scopes", j), "unknown scope %q (use %s or \"*\")", s, strings.Join(AdminScopes, ", "))
			}
		}
	}
	if c.Admin.Address != "" && len(c.Admin.Tokens) == 0 {
		v.errorf("admin.address", "the admin API needs at least one [[admin.token]]")
	}
	v.listen("self_service.address", c.SelfService.Address)
}

// lmtpLike checks a "unix:/path" or "tcp:HOST:PORT" socket address.
func (v *validator) lmtpLike(key, spec string) {
	if rest, ok := strings.CutPrefix(spec, "tcp:"); ok {
		if err := checkHostPort(rest, false); err != nil {
			v.errorf(key, "invalid socket %q: %v", spec, err)
		}
		return
	}
	if rest, ok := strings.CutPrefix(spec, "unix:"); ok && rest != "" {
		return
	}
	v.errorf(key, "invalid socket %q: want \"tcp:HOST:PORT\" or \"unix:/path/to/socket\"", spec)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
