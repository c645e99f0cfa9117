package conf

// Config is the whole of posthorn.toml. Every field has a default (see
// default.toml); Load fills in defaults first and then applies the file, so a
// file only needs to say what differs.
type Config struct {
	// Hostname is the name this MTA gives itself in the SMTP greeting, in
	// EHLO and in Received headers.
	Hostname string `toml:"hostname"`
	// Postmaster gets double bounces: a bounce we made that could not be
	// delivered. Empty: postmaster@ the first [[domain]].
	Postmaster string `toml:"postmaster"`

	Log     Log      `toml:"log"`
	SMTP    SMTP     `toml:"smtp"`
	TLS     TLS      `toml:"tls"`
	Auth    Auth     `toml:"auth"`
	Queue   Queue    `toml:"queue"`
	Local   Local    `toml:"local"`
	Domains []Domain `toml:"domain"`
	Metrics Metrics  `toml:"metrics"`

	DNS         DNS         `toml:"dns"`
	Outbound    Outbound    `toml:"outbound"`
	TLSPolicies []TLSPolicy `toml:"tls_policy"`
	Transports  []Transport `toml:"transport"`
	Testing     Testing     `toml:"testing"`
	Control     Control     `toml:"control"`

	MTASTS      MTASTS      `toml:"mta_sts"`
	DANE        DANE        `toml:"dane"`
	TLSRPT      TLSRPT      `toml:"tls_rpt"`
	SecureAlias SecureAlias `toml:"secure_alias"`

	DKIM    DKIM    `toml:"dkim"`
	AuthRes AuthRes `toml:"authres"`

	Plugins    []Plugin   `toml:"plugin"`
	Encryption Encryption `toml:"encryption"`

	// MilterDefs are the [[milter]]s; Milters says which of them see
	// which mail.
	MilterDefs []Milter `toml:"milter"`
	Milters    Milters  `toml:"milters"`

	Directory   Directory   `toml:"directory"`
	Database    Database    `toml:"database"`
	Dovecot     Dovecot     `toml:"dovecot"`
	Admin       Admin       `toml:"admin"`
	SelfService SelfService `toml:"self_service"`
}

// Log configures structured logging (log/slog).
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// SMTP configures the three inbound listeners and their limits.
type SMTP struct {
	// MX is the port-25 style listener: STARTTLS offered, no AUTH needed,
	// relaying only for client networks.
	MX string `toml:"mx_address"`
	// Submission is the port-587 style listener: STARTTLS, AUTH required.
	Submission string `toml:"submission_address"`
	// Submissions is the port-465 style listener: implicit TLS, AUTH
	// required. Empty disables it.
	Submissions string `toml:"submissions_address"`

	// Listener addresses are HOST:PORT; "" disables a listener and port 0
	// picks a free port. At least one listener is set.

	MaxMessageSize   Size `toml:"max_message_size"`    // largest message accepted (SIZE), > 0
	MaxRecipients    int  `toml:"max_recipients"`      // RCPTs per transaction, >= 1
	MaxLineLength    int  `toml:"max_line_length"`     // longest DATA line in bytes; 0 = no limit, else >= 1000
	MaxSessionsPerIP int  `toml:"max_sessions_per_ip"` // concurrent sessions per client IP, >= 1
	MaxSessions      int  `toml:"max_sessions"`        // concurrent sessions per listener, >= 1
	// ReservedSessions of MaxSessions are kept for client_networks and for
	// addresses that authenticated within the last day; 0 <= it < MaxSessions.
	ReservedSessions int `toml:"reserved_sessions"`
	// MaxConnectionRatePerIP is the most new connections a minute from one
	// address (not counting client_networks); 0 = no limit.
	MaxConnectionRatePerIP int      `toml:"max_connection_rate_per_ip"`
	CommandTimeout         Duration `toml:"command_timeout"` // time allowed for each command, from the previous reply, > 0
	DataTimeout            Duration `toml:"data_timeout"`    // time allowed for the whole DATA/BDAT phase, > 0
	// ClientNetworks may relay without AUTH (CIDR list), like Postfix's
	// mynetworks. Empty means nobody relays without AUTH. Every entry has
	// been checked with net.ParseCIDR.
	ClientNetworks []string `toml:"client_networks"`
}

// TLS names the server certificate. When both files are empty, a
// self-signed certificate is made on first start and kept in
// SelfSignedDir.
type TLS struct {
	CertFile      string `toml:"cert_file"`
	KeyFile       string `toml:"key_file"`
	SelfSignedDir string `toml:"self_signed_dir"`
}

// Auth configures SMTP AUTH (PLAIN, LOGIN; only after TLS).
type Auth struct {
	// PasswordFile holds "user@domain:$argon2id$..." lines made by
	// `posthorn passwd`. Every user in it is also a local mailbox.
	PasswordFile string `toml:"password_file"`

	// MaxConcurrentChecks bounds the password hashes (argon2id, 19 MiB
	// each) computed at once, >= 1.
	MaxConcurrentChecks int `toml:"max_concurrent_checks"`
	// MaxFailuresPerIP failures from one address within FailureWindow
	// block it from AUTH for BlockTime, >= 1.
	MaxFailuresPerIP int `toml:"max_failures_per_ip"`
	// MaxFailuresPerAccount failures for one account within
	// FailureWindow make it refuse, until the window passes, addresses
	// that already failed for it; others still get a real check. >= 1.
	MaxFailuresPerAccount int      `toml:"max_failures_per_account"`
	FailureWindow         Duration `toml:"failure_window"` // > 0
	BlockTime             Duration `toml:"block_time"`     // > 0
}

// Queue configures the spool and the retry schedule.
type Queue struct {
	Dir            string   `toml:"dir"`             // spool directory, absolute after Load
	MinBackoff     Duration `toml:"min_backoff"`     // first retry delay, > 0, <= MaxBackoff
	MaxBackoff     Duration `toml:"max_backoff"`     // longest retry delay
	MaxLifetime    Duration `toml:"max_lifetime"`    // deferred mail bounces after this
	BounceLifetime Duration `toml:"bounce_lifetime"` // the same for our own bounces
	Workers        int      `toml:"workers"`         // concurrent deliveries, >= 1
	// MinFreeSpace: while the spool's file system has less free space,
	// MAIL FROM is answered 452 4.3.1 (Postfix's queue_minfree); 0 = off.
	MinFreeSpace Size `toml:"min_free_space"`
	// Maildrop is where `posthorn sendmail` leaves messages while the
	// daemon is down (mta/internal/maildrop); absolute after Load.
	Maildrop string `toml:"maildrop"`
}

// Local configures delivery to mailboxes of local domains.
type Local struct {
	// MaildirRoot holds one Maildir per mailbox at ROOT/DOMAIN/LOCALPART.
	MaildirRoot string `toml:"maildir_root"`
	// LMTP, when set, delivers local mail to an LMTP server instead of
	// Maildir: "tcp:HOST:PORT" or "unix:/path".
	LMTP string `toml:"lmtp"`
	// RecipientDelimiter separates an address extension (user+tag@);
	// empty disables extensions.
	RecipientDelimiter string `toml:"recipient_delimiter"`
}

// Domain is one local domain.
type Domain struct {
	// Name is lower-cased by Parse; names are unique.
	Name      string   `toml:"name"`
	Mailboxes []string `toml:"mailboxes"` // local parts
	// CatchAll, when set, is the local part that receives mail for
	// unknown local parts of this domain.
	CatchAll string `toml:"catch_all"`
	// Aliases maps a local part to one or more addresses (local or remote).
	// A target without "@" is a local part of this domain. Parse
	// lower-cases the keys.
	Aliases map[string][]string `toml:"aliases"`
	// LMTP overrides Local.LMTP for this domain.
	LMTP string `toml:"lmtp"`
}

// Metrics configures the Prometheus endpoint. Empty address disables it.
type Metrics struct {
	Address string `toml:"address"`
	// Pprof also serves Go's profiler (/debug/pprof/) on the metrics
	// listener: for measuring, never on an address others can reach.
	Pprof bool `toml:"pprof"`
}

// Control configures the local control socket used by `posthorn queue`.
type Control struct {
	Socket string `toml:"socket"`
}
