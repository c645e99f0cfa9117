package conf

import (
	"strings"
	"time"
)

// Milter is one [[milter]]: a mail filter (rspamd, ClamAV's clamav-milter,
// OpenDKIM...) spoken to over the Sendmail milter protocol, version 6, as
// Postfix does (mta/internal/milter).
type Milter struct {
	// Name identifies the milter in [milters] lists, logs and metrics:
	// 1-64 of A-Z a-z 0-9 . _ -, unique.
	Name string `toml:"name"`
	// Address is where the milter listens: "inet:HOST:PORT" (also
	// "tcp:HOST:PORT") or "unix:/path/to/socket", as in Postfix's
	// smtpd_milters.
	Address string `toml:"address"`
	// ConnectTimeout bounds connecting and the option negotiation;
	// CommandTimeout each SMTP command (connect, HELO, MAIL, RCPT, DATA);
	// ContentTimeout each packet of the message content and the wait for
	// the final verdict (a milter's "progress" packets restart it).
	// Defaults as in Postfix: 30s, 30s, 300s.
	ConnectTimeout Duration `toml:"connect_timeout"`
	CommandTimeout Duration `toml:"command_timeout"`
	ContentTimeout Duration `toml:"content_timeout"`
	// DefaultAction is what happens when the milter is down, times out or
	// speaks garbage: "tempfail" (451 4.7.1, the default, and every later
	// command of the SMTP session too, as Postfix does) or "accept" (carry
	// on without this milter for the rest of the session).
	DefaultAction string `toml:"default_action"`
	// RescanAfterPlugins shows the milter the message a second time after
	// the inbound plugins changed it (e.g. the S/MIME plugin decrypted it),
	// so a virus scanner sees the plaintext too. Off: the milter sees only
	// what the client sent.
	RescanAfterPlugins bool `toml:"rescan_after_plugins"`
}

// Milters says which [[milter]]s, in order, see the mail of each kind of
// submission, like Postfix's smtpd_milters and non_smtpd_milters.
type Milters struct {
	// MX is the list for the MX listener.
	MX []string `toml:"mx"`
	// Submission is the list for the submission and submissions
	// listeners (authenticated clients).
	Submission []string `toml:"submission"`
	// Local is the list for local submissions (posthorn sendmail, the
	// control socket).
	Local []string `toml:"local"`
}

// Milter timeouts when none are set (Postfix's defaults).
const (
	DefaultMilterConnectTimeout = 30 * time.Second
	DefaultMilterCommandTimeout = 30 * time.Second
	DefaultMilterContentTimeout = 300 * time.Second
)

// MilterAddress splits a milter address into a network for net.Dial
// ("tcp" or "unix") and the address; ok is false when it is malformed.
func MilterAddress(spec string) (network, addr string, ok bool) {
	for _, p := range []string{"inet:", "tcp:"} {
		if rest, found := strings.CutPrefix(spec, p); found {
			if checkHostPort(rest, false) != nil {
				return "", "", false
			}
			return "tcp", rest, true
		}
	}
	if rest, found := strings.CutPrefix(spec, "unix:"); found && rest != "" {
		return "unix", rest, true
	}
	return "", "", false
}

func (v *validator) milters(c *Config) {
	first := map[string]int{}
	for i := range c.MilterDefs {
		m := &c.MilterDefs[i]
		key := indexKey("milter", i)
		v.uniqueName("milter", i, m.Name, first)
		if m.Address == "" {
			v.errorf(key+".address", "must not be empty: \"inet:HOST:PORT\" or \"unix:/path/to/socket\"")
		} else if _, _, ok := MilterAddress(m.Address); !ok {
			v.errorf(key+".address", "invalid milter address %q: want \"inet:HOST:PORT\" or \"unix:/path/to/socket\"", m.Address)
		}
		for _, t := range []struct {
			name string
			d    *Duration
			def  time.Duration
		}{
			{"connect_timeout", &m.ConnectTimeout, DefaultMilterConnectTimeout},
			{"command_timeout", &m.CommandTimeout, DefaultMilterCommandTimeout},
			{"content_timeout", &m.ContentTimeout, DefaultMilterContentTimeout},
		} {
			if *t.d == 0 && !v.pos.has(key+"."+t.name) {
				*t.d = Duration(t.def)
			} else {
				v.positive(key+"."+t.name, *t.d)
			}
		}
		switch m.DefaultAction {
		case "":
			m.DefaultAction = "tempfail"
		case "tempfail", "accept":
		default:
			v.errorf(key+".default_action", "must be \"tempfail\" or \"accept\", not %q", m.DefaultAction)
		}
	}
	for _, l := range []struct {
		key   string
		names []string
	}{{"milters.mx", c.Milters.MX}, {"milters.submission", c.Milters.Submission}, {"milters.local", c.Milters.Local}} {
		seen := map[string]bool{}
		for j, n := range l.names {
			k := indexKey(l.key, j)
			if _, ok := first[n]; !ok {
				v.errorf(k, "no [[milter]] named %q", n)
			} else if seen[n] {
				v.errorf(k, "%q is listed twice", n)
			}
			seen[n] = true
		}
	}
}

// Milter returns the [[milter]] named name, or nil.
func (c *Config) Milter(name string) *Milter {
	for i := range c.MilterDefs {
		if c.MilterDefs[i].Name == name {
			return &c.MilterDefs[i]
		}
	}
	return nil
}
