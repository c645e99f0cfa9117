package webmailbox

import (
	"fmt"
	"net/mail"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

// Config is the plugin's [plugin.config] table.
type Config struct {
	// BaseURL is where recipients reach the web mailbox, as put into
	// links: "https://secure.example.org/mailbox". Required.
	BaseURL string `json:"base_url"`
	// Listen is the address the plugin's HTTP server listens on, usually
	// behind a TLS-terminating reverse proxy. Empty: no server (tests).
	Listen string `json:"listen"`
	// TLSCert and TLSKey make the server speak HTTPS itself.
	TLSCert string `json:"tls_cert"`
	TLSKey  string `json:"tls_key"`
	// Database is the SQLite file; relative to the data dir. Default
	// "webmailbox.db".
	Database string `json:"database"`
	// MasterKeyFile protects mailboxes before activation; relative to the
	// data dir; created (0600) if missing. Default "master.key".
	MasterKeyFile string `json:"master_key_file"`
	// ResetMode: "question" (a security question allows a new password) or
	// "none" (a forgotten password loses the mailbox). Default "question".
	ResetMode string `json:"reset_mode"`
	// AllowedRecipients: where replies and forwards may go: "*@example.org",
	// "@example.org" (the same) or a full address. Required.
	AllowedRecipients []string `json:"allowed_recipients"`
	// SenderPIN: a PIN is made for every new mailbox and sent to the sender
	// (event webmailbox.pin) to pass on out of band; activation needs it.
	SenderPIN bool `json:"sender_pin"`
	// RequireTAN: activation needs a TAN the operator issued with
	// "posthorn-webmailbox tan issue ADDR" (a postal letter).
	RequireTAN bool `json:"require_tan"`
	// QuotaBytes per mailbox; default 10 MB.
	QuotaBytes int64 `json:"quota_bytes"`
	// RetentionDays: messages older than this are deleted; default 90.
	RetentionDays int `json:"retention_days"`
	// InactivityDays: a mailbox unused this long is deleted; default 365;
	// a warning goes out InactivityWarningDays before (default 14).
	InactivityDays        int `json:"inactivity_days"`
	InactivityWarningDays int `json:"inactivity_warning_days"`
	// ReminderAfter: unread (or not activated) this long → reminders to the
	// recipient and the sender; default "72h"; "0s" disables reminders.
	ReminderAfter string `json:"reminder_after"`
	// LinkTTL: how long an activation link is valid; default "336h".
	LinkTTL string `json:"link_ttl"`
	// SessionTimeout: idle time after which a login ends; default "30m".
	SessionTimeout string `json:"session_timeout"`
	// MaxFailedLogins: failed attempts (passwords, reset answers, PINs,
	// TANs) one client may make for one account before it has to wait,
	// 30 s doubling up to Lockout; default 5, "15m". Other clients are not
	// affected (see throttle.go).
	MaxFailedLogins int    `json:"max_failed_logins"`
	Lockout         string `json:"lockout"`
	// DefaultLanguage "de" or "en"; default "de".
	DefaultLanguage string `json:"default_language"`
	// ClientIPHeader names the header a trusted reverse proxy puts the
	// client address in ("X-Forwarded-For": its last entry is used; or
	// "X-Real-IP"). Empty: the connection's address. Per-IP login limits
	// need it behind a proxy.
	ClientIPHeader string `json:"client_ip_header"`
	// TimeZone for dates on pages and in exports (IANA name); default
	// "Europe/Berlin".
	TimeZone string `json:"time_zone"`
	// Organization is shown on every page and in notification mails.
	Organization string `json:"organization"`
	// Theming: LogoFile (PNG, JPEG or SVG, at most 256 KiB; relative to
	// the data dir) beside the name on every page and on TAN letters;
	// PrimaryColor "#rrggbb" for the header and buttons (white text on it
	// must reach WCAG AA contrast, 4.5:1); SupportContact (a phone number
	// or address, shown in every page's footer and every notification);
	// ImprintURL and PrivacyURL (linked there too).
	LogoFile       string `json:"logo_file"`
	PrimaryColor   string `json:"primary_color"`
	SupportContact string `json:"support_contact"`
	ImprintURL     string `json:"imprint_url"`
	PrivacyURL     string `json:"privacy_url"`
	// KDF tunes argon2id (memory in KiB); defaults 2 passes, 64 MiB, 2 threads.
	KDF *KDFConfig `json:"kdf"`
}

// KDFConfig tunes argon2id.
type KDFConfig struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// settings is the validated configuration.
type settings struct {
	baseURL         *url.URL
	prefix          string // path of baseURL without trailing slash
	listen          string
	tlsCert, tlsKey string
	dbPath          string
	// shared is the host's database (nil: dbPath, an SQLite file).
	shared         *sdk.Database
	masterKeyPath  string
	resetAllowed   bool
	allowed        []string // lower-case "@domain" or full address
	senderPIN      bool
	requireTAN     bool
	quota          int64
	retention      time.Duration
	inactivity     time.Duration
	inactivityWarn time.Duration
	reminderAfter  time.Duration
	linkTTL        time.Duration
	sessionTimeout time.Duration
	maxFailed      int
	lockout        time.Duration
	defaultLang    string
	organization   string
	clientIPHeader string
	kdf            KDFParams
	loc            *time.Location
	theme          theme
}

func parseDur(key, v, def string) (time.Duration, error) {
	if v == "" {
		v = def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, &sdk.ConfigError{Key: key, Message: fmt.Sprintf("%q is not a duration like \"72h\" or \"30m\"", v)}
	}
	return d, nil
}

func (c *Config) validate(dataDir string) (*settings, error) {
	s := &settings{listen: c.Listen, tlsCert: c.TLSCert, tlsKey: c.TLSKey, senderPIN: c.SenderPIN,
		requireTAN: c.RequireTAN, organization: c.Organization, clientIPHeader: c.ClientIPHeader, kdf: DefaultKDF}
	if c.BaseURL == "" {
		return nil, &sdk.ConfigError{Key: "base_url", Message: "required: the URL recipients open, e.g. \"https://secure.example.org/mailbox\""}
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, &sdk.ConfigError{Key: "base_url", Message: fmt.Sprintf("%q is not an absolute http(s) URL without query", c.BaseURL)}
	}
	s.baseURL, s.prefix = u, strings.TrimRight(u.Path, "/")
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, &sdk.ConfigError{Key: "tls_cert", Message: "tls_cert and tls_key go together"}
	}
	rel := func(p, def string) string {
		if p == "" {
			p = def
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(dataDir, p)
		}
		return p
	}
	s.dbPath, s.masterKeyPath = rel(c.Database, "webmailbox.db"), rel(c.MasterKeyFile, "master.key")
	switch c.ResetMode {
	case "", "question":
		s.resetAllowed = true
	case "none":
	default:
		return nil, &sdk.ConfigError{Key: "reset_mode", Message: fmt.Sprintf("%q: want \"question\" or \"none\"", c.ResetMode)}
	}
	if len(c.AllowedRecipients) == 0 {
		return nil, &sdk.ConfigError{Key: "allowed_recipients", Message: "required: where replies may go, e.g. [\"*@example.org\"]"}
	}
	for _, a := range c.AllowedRecipients {
		a = strings.ToLower(strings.TrimSpace(a))
		a = strings.TrimPrefix(a, "*")
		if strings.HasPrefix(a, "@") {
			if len(a) < 2 || strings.ContainsAny(a[1:], "@ *") {
				return nil, &sdk.ConfigError{Key: "allowed_recipients", Message: fmt.Sprintf("%q: want \"*@domain\" or an address", a)}
			}
		} else if _, err := mail.ParseAddress(a); err != nil || strings.Contains(a, "*") {
			return nil, &sdk.ConfigError{Key: "allowed_recipients", Message: fmt.Sprintf("%q: want \"*@domain\" or an address", a)}
		}
		s.allowed = append(s.allowed, a)
	}
	s.quota = c.QuotaBytes
	if s.quota == 0 {
		s.quota = 10 * 1000 * 1000
	}
	if s.quota < 0 {
		return nil, &sdk.ConfigError{Key: "quota_bytes", Message: "must be positive"}
	}
	days := func(key string, v, def int) (time.Duration, error) {
		if v == 0 {
			v = def
		}
		if v < 0 {
			return 0, &sdk.ConfigError{Key: key, Message: "must be positive"}
		}
		return time.Duration(v) * 24 * time.Hour, nil
	}
	if s.retention, err = days("retention_days", c.RetentionDays, 90); err != nil {
		return nil, err
	}
	if s.inactivity, err = days("inactivity_days", c.InactivityDays, 365); err != nil {
		return nil, err
	}
	if s.inactivityWarn, err = days("inactivity_warning_days", c.InactivityWarningDays, 14); err != nil {
		return nil, err
	}
	if s.reminderAfter, err = parseDur("reminder_after", c.ReminderAfter, "72h"); err != nil {
		return nil, err
	}
	if s.linkTTL, err = parseDur("link_ttl", c.LinkTTL, "336h"); err != nil {
		return nil, err
	}
	if s.sessionTimeout, err = parseDur("session_timeout", c.SessionTimeout, "30m"); err != nil {
		return nil, err
	}
	if s.lockout, err = parseDur("lockout", c.Lockout, "15m"); err != nil {
		return nil, err
	}
	if s.linkTTL == 0 || s.sessionTimeout == 0 {
		return nil, &sdk.ConfigError{Key: "link_ttl", Message: "link_ttl and session_timeout must be more than 0"}
	}
	s.maxFailed = c.MaxFailedLogins
	if s.maxFailed == 0 {
		s.maxFailed = 5
	}
	if s.maxFailed < 0 {
		return nil, &sdk.ConfigError{Key: "max_failed_logins", Message: "must be positive"}
	}
	switch c.DefaultLanguage {
	case "":
		s.defaultLang = "de"
	case "de", "en":
		s.defaultLang = c.DefaultLanguage
	default:
		return nil, &sdk.ConfigError{Key: "default_language", Message: fmt.Sprintf("%q: want \"de\" or \"en\"", c.DefaultLanguage)}
	}
	if s.theme, err = c.theme(dataDir); err != nil {
		return nil, err
	}
	tz := c.TimeZone
	if tz == "" {
		tz = "Europe/Berlin"
	}
	if s.loc, err = time.LoadLocation(tz); err != nil {
		return nil, &sdk.ConfigError{Key: "time_zone", Message: fmt.Sprintf("%q is not a time zone like \"Europe/Berlin\"", tz)}
	}
	if c.KDF != nil {
		s.kdf = KDFParams{Time: c.KDF.Time, MemoryK: c.KDF.MemoryKiB, Threads: c.KDF.Threads}
		if !s.kdf.valid() {
			return nil, &sdk.ConfigError{Key: "kdf", Message: "want time 1-20, memory_kib 1024-4194304, threads ≥ 1"}
		}
	}
	return s, nil
}

// allowedRecipient reports whether replies may go to addr.
func (s *settings) allowedRecipient(addr string) bool {
	addr = strings.ToLower(addr)
	for _, a := range s.allowed {
		if strings.HasPrefix(a, "@") {
			if strings.HasSuffix(addr, a) && strings.Count(addr, "@") == 1 {
				return true
			}
		} else if addr == a {
			return true
		}
	}
	return false
}
