package conf

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Plugin is one [[plugin]]: a plugin binary the MTA starts, supervises and
// restarts (mta/pluginhost).
type Plugin struct {
	// Name identifies the plugin in logs, in `posthorn plugin list`, in
	// [[encryption.rule]] methods and as the SourcePlugin of its events:
	// 1-64 of A-Z a-z 0-9 . _ -, unique.
	Name string `toml:"name"`
	// Path is the plugin binary, absolute after Load.
	Path string `toml:"path"`
	// SHA256 optionally pins the binary: its hex SHA-256 (64 digits,
	// colons allowed, lower-cased by Parse). A binary that does not match
	// is refused.
	SHA256 string `toml:"sha256"`
	// Timeout bounds every hook call; default 30s.
	Timeout Duration `toml:"timeout"`
	// OnFailure is what an inbound hook that fails, times out or whose
	// plugin is down does to the message: "tempfail" (451, the default) or
	// "accept" (as if the plugin had accepted it).
	OnFailure string `toml:"on_failure"`
	// LocalSubmissions says whether the plugin's inbound hook also sees
	// mail submitted locally (posthorn sendmail, the control socket):
	// "inspect" (the default) or "skip" — like Postfix's
	// non_smtpd_milters, which an operator leaves empty for a milter that
	// only makes sense for mail from the network.
	LocalSubmissions string `toml:"local_submissions"`
	// DataDir is a directory the plugin owns for its state. Default:
	// "plugins/NAME" beside the queue directory (with the default
	// queue.dir "var/spool": "var/plugins/NAME"). Absolute after Load.
	DataDir string `toml:"data_dir"`
	// Config is the plugin's own table, [plugin.config], handed to it as
	// a JSON object. The host does not look inside.
	Config PluginConfig `toml:"config"`
}

// PluginConfig is a plugin's own configuration table, kept as decoded
// TOML (strings, int64, float64, bool, time values, []any, map[string]any)
// so it can be passed to the plugin as JSON.
type PluginConfig map[string]any

// UnmarshalTOML takes the table as it is.
func (p *PluginConfig) UnmarshalTOML(v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("must be a table, not %s", tomlTypeName(v))
	}
	*p = PluginConfig(m)
	return nil
}

// Encryption is the encryption policy chain (mta/policychain): which mail
// is encrypted, how, and what happens when it cannot be.
type Encryption struct {
	// SubjectTag, found in a Subject (case-insensitive), makes encryption
	// required for the message; it is removed before sending. Empty: no
	// tag.
	SubjectTag string `toml:"subject_tag"`
	// TriggerHeader with the value "required" makes encryption required
	// too; the header is removed before sending. Empty: no header.
	TriggerHeader string `toml:"trigger_header"`
	// Methods are tried, in order, for a message made to require
	// encryption by the tag or header when the matching rule names no
	// methods (or no rule matches). Each is the name of a [[plugin]].
	Methods []string `toml:"methods"`
	// Rules are checked in order; the first that matches sender and
	// recipient decides.
	Rules []EncryptionRule `toml:"rule"`
}

// EncryptionRule is one [[encryption.rule]].
type EncryptionRule struct {
	// Senders and Recipients are address patterns, case-insensitive:
	// "alice@example.org" (exact), "*@example.org" (anyone at that
	// domain), "example.org" (the same), "*.example.org" (anyone at a
	// subdomain, not the domain itself), "*" (anyone; also the null
	// sender). An empty list matches anyone.
	Senders    []string `toml:"senders"`
	Recipients []string `toml:"recipients"`
	// Encrypt: "required" (no method can → the recipient bounces),
	// "opportunistic" (no method can → sent as is) or "never".
	Encrypt string `toml:"encrypt"`
	// Methods in order of preference; each the name of a [[plugin]]
	// with the outbound hook ("smime", "pgp", "webmailbox"). Empty:
	// encryption.methods.
	Methods []string `toml:"methods"`
	// Sign asks the method to sign as well.
	Sign bool `toml:"sign"`
}

// pluginNameRE is the SDK's rule for plugin names.
var pluginNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// DefaultPluginTimeout is a plugin's hook timeout when none is set.
const DefaultPluginTimeout = 30 * time.Second

// uniqueName checks the name of the i-th [[kind]] table: not empty, the
// SDK's rule for names, and not used by an earlier table (first maps the
// names seen so far to their index).
func (v *validator) uniqueName(kind string, i int, name string, first map[string]int) {
	key := indexKey(kind, i) + ".name"
	switch {
	case name == "":
		v.errorf(key, "must not be empty")
	case !pluginNameRE.MatchString(name):
		v.errorf(key, "invalid %s name %q: use 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)", kind, name)
	default:
		if j, dup := first[name]; dup {
			v.errorf(key, "duplicate %s %q (first at %s)", kind, name, v.where(indexKey(kind, j)+".name"))
		} else {
			first[name] = i
		}
	}
}

func (v *validator) plugins(c *Config) {
	first := map[string]int{}
	for i := range c.Plugins {
		p := &c.Plugins[i]
		key := indexKey("plugin", i)
		v.uniqueName("plugin", i, p.Name, first)
		if p.Path == "" {
			v.errorf(key+".path", "must not be empty: the plugin binary")
		}
		if p.SHA256 != "" {
			s := strings.ToLower(strings.ReplaceAll(p.SHA256, ":", ""))
			if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
				v.errorf(key+".sha256", "%q is not a SHA-256 digest (64 hex digits, as sha256sum prints)", p.SHA256)
			} else {
				p.SHA256 = s
			}
		}
		if p.Timeout == 0 {
			p.Timeout = Duration(DefaultPluginTimeout)
		} else {
			v.positive(key+".timeout", p.Timeout)
		}
		switch p.OnFailure {
		case "":
			p.OnFailure = "tempfail"
		case "tempfail", "accept":
		default:
			v.errorf(key+".on_failure", "must be \"tempfail\" or \"accept\", not %q", p.OnFailure)
		}
		switch p.LocalSubmissions {
		case "":
			p.LocalSubmissions = "inspect"
		case "inspect", "skip":
		default:
			v.errorf(key+".local_submissions", "must be \"inspect\" or \"skip\", not %q", p.LocalSubmissions)
		}
		if p.Config == nil {
			p.Config = PluginConfig{}
		}
	}

	e := &c.Encryption
	if e.TriggerHeader != "" {
		for i := 0; i < len(e.TriggerHeader); i++ {
			if ch := e.TriggerHeader[i]; ch <= ' ' || ch >= 0x7f || ch == ':' {
				v.errorf("encryption.trigger_header", "%q is not a header field name", e.TriggerHeader)
				break
			}
		}
	}
	if strings.ContainsAny(e.SubjectTag, "\r\n") {
		v.errorf("encryption.subject_tag", "must not contain a line break")
	}
	method := func(key, m string) {
		if _, ok := first[m]; !ok {
			v.errorf(key, "no [[plugin]] named %q", m)
		}
	}
	for j, m := range e.Methods {
		method(indexKey("encryption.methods", j), m)
	}
	for i := range e.Rules {
		r := &e.Rules[i]
		key := indexKey("encryption.rule", i)
		for j, s := range r.Senders {
			if err := checkAddressPattern(s); err != nil {
				v.errorf(indexKey(key+".senders", j), "%v", err)
			}
			r.Senders[j] = strings.ToLower(s)
		}
		for j, s := range r.Recipients {
			if err := checkAddressPattern(s); err != nil {
				v.errorf(indexKey(key+".recipients", j), "%v", err)
			}
			r.Recipients[j] = strings.ToLower(s)
		}
		switch r.Encrypt {
		case "required", "opportunistic":
			if len(r.Methods) == 0 && len(e.Methods) == 0 {
				v.errorf(key+".methods", "encrypt = %q needs methods (here or in encryption.methods)", r.Encrypt)
			}
		case "never":
		case "":
			v.errorf(key+".encrypt", "must be set: \"required\", \"opportunistic\" or \"never\"")
		default:
			v.errorf(key+".encrypt", "must be \"required\", \"opportunistic\" or \"never\", not %q", r.Encrypt)
		}
		seen := map[string]bool{}
		for j, m := range r.Methods {
			mk := indexKey(key+".methods", j)
			if seen[m] {
				v.errorf(mk, "%q is listed twice", m)
				continue
			}
			seen[m] = true
			method(mk, m)
		}
	}
}

// checkAddressPattern checks a sender or recipient pattern of an
// encryption rule.
func checkAddressPattern(p string) error {
	if p == "*" {
		return nil
	}
	local, domain, hasAt := strings.Cut(p, "@")
	if hasAt {
		if local == "" {
			return fmt.Errorf("invalid pattern %q: empty local part (write \"*@%s\" for everyone there)", p, domain)
		}
		if local != "*" {
			for i := 0; i < len(local); i++ {
				if c := local[i]; c <= ' ' || c >= 0x7f || c == '*' {
					return fmt.Errorf("invalid pattern %q: local part may only be \"*\" or a plain local part", p)
				}
			}
		}
	} else {
		domain = strings.TrimPrefix(p, "*.")
	}
	if err := checkDomainName(domain); err != nil {
		return fmt.Errorf("invalid pattern %q: want \"user@domain\", \"*@domain\", \"domain\", \"*.domain\" or \"*\"", p)
	}
	return nil
}

// pluginDataDirs fills in each plugin's default data directory, beside
// the (absolute) queue directory.
func (c *Config) pluginDataDirs() {
	for i := range c.Plugins {
		if p := &c.Plugins[i]; p.DataDir == "" {
			p.DataDir = filepath.Join(filepath.Dir(c.Queue.Dir), "plugins", p.Name)
		}
	}
}
