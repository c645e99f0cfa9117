package conf

import (
	"bytes"
	_ "embed"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

//go:embed default.toml
var defaultTOML []byte

// DefaultTOML returns the built-in default configuration, a commented
// posthorn.toml that runs on one machine with no setup. The caller may
// modify the returned slice.
func DefaultTOML() []byte { return append([]byte(nil), defaultTOML...) }

// DefaultFile is the name used for the built-in default in error messages.
const DefaultFile = "(default)"

// Load reads and parses the config file at path; see Parse. Relative paths
// in the config are made absolute relative to the directory holding path.
// A file that cannot be read gives the *fs.PathError from os.ReadFile;
// a file with problems gives Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	base, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	return parse(path, data, base)
}

// Parse parses a config file's contents over the built-in defaults and
// validates the result. filename is used in error messages and to resolve
// relative paths: if it names an existing file, they are relative to that
// file's directory, otherwise to the current directory. Parse does not look
// at any other file (it does not check that certificates exist).
//
// On any problem Parse returns a nil *Config and an Errors listing all of
// them.
func Parse(filename string, data []byte) (*Config, error) {
	base := ""
	if fi, err := os.Stat(filename); err == nil && fi.Mode().IsRegular() {
		base, _ = filepath.Abs(filepath.Dir(filename))
	}
	if base == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		base = wd
	}
	return parse(filename, data, base)
}

// ParseIn is Parse with relative paths resolved against base (the data
// directory: posthorn -d DIR or $POSTHORN_HOME).
func ParseIn(filename string, data []byte, base string) (*Config, error) {
	return parse(filename, data, base)
}

func parse(filename string, data []byte, base string) (*Config, error) {
	cfg, err := defaults()
	if err != nil {
		return nil, err
	}
	raw, errs := parseTOML(filename, data)
	if errs != nil {
		return nil, errs
	}
	// The embedded default runs the plugins that `make build` makes, names
	// one as the method for mail the subject tag marks, and routes a demo
	// partner domain into a local directory; an operator's file gets the
	// plugins, methods and transports it lists, none otherwise.
	if !bytes.Equal(data, defaultTOML) {
		cfg.Plugins = nil
		cfg.Encryption.Methods = nil
		cfg.Transports = nil // the default's demo route for partner.example
	}
	d := &decoder{file: filename, pos: buildPosIndex(string(data))}
	d.decode("", raw, reflect.ValueOf(cfg).Elem())
	v := &validator{file: filename, pos: d.pos}
	v.config(cfg)
	errs = d.errs
	for _, e := range v.errs {
		if !d.failed(e.Key) {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		errs.sort()
		return nil, errs
	}
	cfg.resolvePaths(base)
	return cfg, nil
}

// parseTOML parses TOML text into a generic document.
func parseTOML(filename string, data []byte) (map[string]any, Errors) {
	raw := map[string]any{}
	if _, err := toml.Decode(string(data), &raw); err != nil {
		e := &Error{File: filename, Msg: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			e.Line = pe.Position.Line
			if st := pe.Position.Start; st > 0 && st <= len(data) {
				// The parser's line is off by one when the error is at a
				// newline; count ourselves.
				e.Line = 1 + bytes.Count(data[:st], []byte("\n"))
			}
			e.Key = pe.LastKey
			e.Msg = "syntax error: " + pe.Message
		}
		e.Msg = strings.ReplaceAll(e.Msg, "\n", " ")
		return nil, Errors{e}
	}
	return raw, nil
}

// defaults decodes the embedded default.toml (its paths stay relative).
func defaults() (*Config, error) {
	raw, errs := parseTOML(DefaultFile, defaultTOML)
	if errs != nil {
		return nil, errs
	}
	cfg := &Config{}
	d := &decoder{file: DefaultFile}
	d.decode("", raw, reflect.ValueOf(cfg).Elem())
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return cfg, nil
}

// resolvePaths makes relative file-system paths absolute relative to base.
// Empty strings stay empty: they mean "off".
func (c *Config) resolvePaths(base string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	lmtp := func(p *string) {
		if rest, ok := strings.CutPrefix(*p, "unix:"); ok && rest != "" && !filepath.IsAbs(rest) {
			*p = "unix:" + filepath.Join(base, rest)
		}
	}
	abs(&c.Queue.Dir)
	abs(&c.Queue.Maildrop)
	abs(&c.Local.MaildirRoot)
	abs(&c.TLS.CertFile)
	abs(&c.TLS.KeyFile)
	abs(&c.TLS.SelfSignedDir)
	abs(&c.Auth.PasswordFile)
	abs(&c.Control.Socket)
	abs(&c.Directory.Path)
	abs(&c.Database.CAFile)
	lmtp(&c.Dovecot.AuthSocket)
	lmtp(&c.Dovecot.UserdbSocket)
	lmtp(&c.Local.LMTP)
	for i := range c.Domains {
		lmtp(&c.Domains[i].LMTP)
	}
	abs(&c.Outbound.CAFile)
	abs(&c.MTASTS.CacheDir)
	abs(&c.TLSRPT.StateDir)
	for i := range c.Plugins {
		abs(&c.Plugins[i].Path)
		abs(&c.Plugins[i].DataDir)
	}
	c.pluginDataDirs()
	for i := range c.MilterDefs {
		lmtp(&c.MilterDefs[i].Address)
	}
	for i := range c.DKIM.Keys {
		abs(&c.DKIM.Keys[i].File)
	}
	for i := range c.Transports {
		abs(&c.Transports[i].AuthPasswordFile)
		switch c.Transports[i].Kind {
		case "lmtp":
			lmtp(&c.Transports[i].Host)
		case "maildir":
			abs(&c.Transports[i].Host)
		}
	}
}

// IsLocalDomain reports whether d (compared case-insensitively, a trailing
// dot ignored) is one of the configured domains.
func (c *Config) IsLocalDomain(d string) bool { return c.Domain(d) != nil }

// Domain returns the configured domain named name (case-insensitive, a
// trailing dot ignored), or nil.
func (c *Config) Domain(name string) *Domain {
	name = strings.TrimSuffix(name, ".")
	for i := range c.Domains {
		if strings.EqualFold(c.Domains[i].Name, name) {
			return &c.Domains[i]
		}
	}
	return nil
}
