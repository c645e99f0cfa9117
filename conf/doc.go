// Package conf is the configuration of Posthorn: the posthorn.toml schema,
// the built-in defaults, loading, and validation that reports every problem
// as FILE:LINE: KEY: message.
//
// # Schema
//
// A config file is TOML. Its top level has one key and a table per part of
// the daemon; [Config] and the types it holds are the schema, and the
// built-in default (printed by `posthorn config default`, returned by
// [DefaultTOML]) sets and explains every key:
//
//	hostname = "mx.example.net"   # name in greeting, EHLO, Received:
//	[smtp]     listeners (mx_address, submission_address,
//	           submissions_address), client_networks, message and session
//	           limits, timeouts
//	[tls]      cert_file, key_file, or a self-signed certificate kept in
//	           self_signed_dir
//	[auth]     password_file for SMTP AUTH
//	[queue]    spool dir, retry schedule (min_backoff, max_backoff),
//	           max_lifetime, bounce_lifetime, workers
//	[local]    maildir_root, lmtp ("tcp:HOST:PORT" or "unix:/path"),
//	           recipient_delimiter
//	[[domain]] one table per local domain: name, mailboxes, catch_all,
//	           lmtp, and a [domain.aliases] table of local part = [targets]
//	[directory] where users live: kind "static" (the [[domain]] tables
//	           and password file), "sqlite" (path) or "postgres"; lookup
//	           cache_size and cache_ttl
//	[database] the PostgreSQL shared by nodes and plugins: dsn, max_conns,
//	           tls, ca_file
//	[dovecot]  auth_socket (SMTP AUTH by Dovecot), userdb_socket
//	           (recipients known to Dovecot), service, timeout
//	[admin]    address of the HTTPS admin API, [[admin.token]] name,
//	           sha256, scopes
//	[self_service] address of the users' secure-alias settings page
//	[control]  socket for `posthorn queue` and `posthorn sendmail`
//	[metrics]  address of the Prometheus endpoint
//	[log]      level (debug, info, warn, error), format (text, json)
//	[[dkim.key]] one table per DKIM signing key: domain, selector, file
//	[authres]  SPF/DKIM/DMARC checks on the MX listener: enabled,
//	           dmarc_enforce (refuse DMARC p=reject failures), timeout
//
// Durations ([Duration]) are strings in Go syntax plus a "d" unit of 24
// hours: "90s", "5m", "4000s", "5d", "1d12h". Sizes ([Size]) are a TOML
// integer of bytes or a string with a unit: "512KB", "50MB", "1GB" are
// powers of 1000, "10KiB", "50MiB", "1GiB" powers of 1024.
//
// # Defaults
//
// The embedded default.toml runs on one machine with no setup: listeners
// on 127.0.0.1 ports 2525 (MX), 2587 (submission) and 2465 (submissions),
// metrics on 127.0.0.1:9425, everything else under ./var, and one local
// domain, example.test, with a postmaster mailbox.
//
// # Loading
//
// [Load] reads a file and [Parse] takes its contents. Both start from the
// default and apply the file over it, so a file only says what differs:
//
//   - tables are merged key by key: a file with just "[queue] workers = 4"
//     keeps every other default;
//   - arrays replace the default's array: client_networks = ["10.0.0.0/8"]
//     is the whole list, and a file with any [[domain]] replaces the
//     default example.test rather than adding to it; the aliases table of a
//     domain likewise belongs to that domain alone.
//
// Relative paths (queue.dir, local.maildir_root, tls.cert_file,
// tls.key_file, tls.self_signed_dir, auth.password_file, control.socket,
// directory.path, database.ca_file, the "unix:" dovecot sockets,
// and the path of a "unix:" LMTP destination in local.lmtp or a domain's
// lmtp) are made absolute relative to the directory of the config file,
// whether they were written in the file or inherited from the default.
// [Parse] uses the directory of its filename argument if that names an
// existing file and the current directory otherwise; parsing the default
// alone ([Parse]([DefaultFile], [DefaultTOML]())) resolves against the
// current directory. Empty strings stay empty: an empty path or listener
// address turns that feature off.
//
// Parse normalises a little: domain names are lower-cased, alias names are
// lower-cased (the router looks them up that way), a trailing dot is
// dropped from hostname. Parse reads no other file: it does not check that
// certificate or password files exist; the daemon does that when it
// starts.
//
// # Validation and errors
//
// Every problem is collected, not just the first: TOML syntax errors,
// unknown keys (with a "did you mean" for likely typos), values of the
// wrong type, and invalid values (listen addresses, CIDR networks,
// durations, sizes, LMTP destinations, domain names, local parts, alias
// targets, limits below 1, min_backoff above max_backoff, duplicate
// domains, ...). Load and Parse then return a nil *Config and an [Errors],
// a list of [*Error] in line order whose Error method gives one line per
// problem:
//
//	posthorn.toml:12: smtp.max_recipients: must be at least 1
//	posthorn.toml:20: domain[1].name: duplicate domain "example.org" (first at line 16)
//	posthorn.toml:31: domain[1].aliases.sales[0]: invalid alias target "a@@b": neither a local part nor an address
//
// Keys are written as TOML dotted paths; elements of arrays and of arrays
// of tables carry a 0-based index ("domain[1].name",
// "smtp.client_networks[2]"); key segments that are not bare TOML keys are
// quoted (`domain[0].aliases."info desk"`). The line is that of the key
// itself, or, for a problem with a key the file does not set (a [[domain]]
// without a name), of the nearest enclosing table; a syntax error has the
// line the TOML parser points at and, where known, the last key parsed.
// Since the TOML decoder does not record positions, the package keeps its
// own index of where each key and table header is written.
//
// Reading a file that does not exist gives the error from [os.ReadFile]
// (test it with errors.Is(err, fs.ErrNotExist)), not an Errors.
package conf
