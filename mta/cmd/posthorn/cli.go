package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/pluginhost"
	"github.com/posthorn/posthorn/sdk"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = ""

// globalArgs takes out the options every command understands, wherever
// they stand (before or after the command word): -c FILE (also --config,
// -c=FILE), -d DIR (also --data-dir) and -h/--help. -c becomes
// $POSTHORN_CONFIG and -d $POSTHORN_HOME for the command.
func globalArgs(cmd string, args []string) (rest []string, help bool, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, val, hasVal := strings.Cut(a, "=")
		switch name {
		case "-h", "-help", "--help":
			help = true
			continue
		case "-c", "--config", "-config", "-d", "--data-dir", "-data-dir":
			if cmd == "sendmail" {
				break // sendmail's own flags
			}
			if !hasVal {
				if i+1 >= len(args) {
					return nil, false, fmt.Errorf("%s needs a value", name)
				}
				i++
				val = args[i]
			}
			if strings.Contains(name, "c") && !strings.Contains(name, "data") {
				os.Setenv("POSTHORN_CONFIG", val)
			} else {
				os.Setenv("POSTHORN_HOME", val)
			}
			continue
		}
		rest = append(rest, a)
	}
	return rest, help, nil
}

// commandHelp prints the usage lines of one command (from the same text
// as `posthorn help` and the man page).
func commandHelp(w io.Writer, cmd string) {
	fmt.Fprintf(w, "usage:\n")
	found := false
	lines := strings.Split(usage, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "  "+cmd+" ") || l == "  "+cmd {
			found = true
			fmt.Fprintln(w, "  posthorn "+strings.TrimSpace(l))
			for j := i + 1; j < len(lines) && strings.HasPrefix(lines[j], "      "); j++ {
				fmt.Fprintln(w, "  "+lines[j])
			}
		}
	}
	if !found {
		fmt.Fprint(w, usage)
	}
	fmt.Fprint(w, globalHelp)
}

const globalHelp = `
global options (before or after the command):
  -c FILE, --config FILE   config file (default: $POSTHORN_CONFIG, else the embedded default)
  -d DIR, --data-dir DIR   data directory: relative paths of the embedded default resolve
                           against it (default: $POSTHORN_HOME, else the current directory)
  -h, --help               this help
`

// versionMain is `posthorn version`.
func versionMain(stdout io.Writer) int {
	v, commit, dirty := version, "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	if commit == "" {
		commit = "unknown"
	} else if dirty {
		commit += "-dirty"
	}
	fmt.Fprintf(stdout, "posthorn %s\ncommit %s\nplugin protocol %d.%d (posthorn.plugin.v%d)\n", v, commit,
		sdk.ProtocolVersion, sdk.ProtocolMinor, sdk.ProtocolVersion)
	return 0
}

// dataDir is where relative paths of the embedded default resolve.
func dataDir() string { return os.Getenv("POSTHORN_HOME") }

// checkFiles verifies what a config names on disk, without starting
// anything: certificate and key (readable, matching), password file,
// DKIM keys, CA file, smarthost password files, plugin binaries
// (present, executable, matching a pinned sha256). Each problem is one
// line naming the key.
func checkFiles(cfg *conf.Config) []string {
	var probs []string
	bad := func(key, format string, args ...any) {
		probs = append(probs, key+": "+fmt.Sprintf(format, args...))
	}
	readable := func(key, path string) bool {
		if path == "" {
			return false
		}
		f, err := os.Open(path)
		if err != nil {
			bad(key, "%v", unwrapPath(err))
			return false
		}
		f.Close()
		return true
	}
	if cfg.TLS.CertFile != "" || cfg.TLS.KeyFile != "" {
		c, k := readable("tls.cert_file", cfg.TLS.CertFile), readable("tls.key_file", cfg.TLS.KeyFile)
		if c && k {
			if _, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
				bad("tls.cert_file", "certificate and tls.key_file do not go together: %v", err)
			}
		}
	}
	if p := cfg.Auth.PasswordFile; p != "" {
		if _, err := os.Stat(p); err == nil {
			readable("auth.password_file", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			bad("auth.password_file", "%v", err)
		}
	}
	for i, k := range cfg.DKIM.Keys {
		readable(fmt.Sprintf("dkim.key[%d].file", i), k.File)
	}
	if cfg.Outbound.CAFile != "" {
		readable("outbound.ca_file", cfg.Outbound.CAFile)
	}
	for i, t := range cfg.Transports {
		if t.AuthPasswordFile != "" {
			readable(fmt.Sprintf("transport[%d].auth_password_file", i), t.AuthPasswordFile)
		}
	}
	for i, p := range cfg.Plugins {
		key := fmt.Sprintf("plugin[%d].path", i)
		st, err := os.Stat(p.Path)
		if err != nil {
			bad(key, "plugin %s: %v", p.Name, unwrapPath(err))
			continue
		}
		if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			bad(key, "plugin %s: %s is not an executable file", p.Name, p.Path)
			continue
		}
		if _, err := pluginhost.VerifyBinary(p); err != nil {
			bad(fmt.Sprintf("plugin[%d].sha256", i), "%v", err)
		}
	}
	return probs
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %v", pe.Path, pe.Err)
	}
	return err
}

// defaultBase is the directory relative paths of the embedded default
// resolve against: -d / $POSTHORN_HOME, else the current directory.
func defaultBase() (string, error) {
	if d := dataDir(); d != "" {
		return filepath.Abs(d)
	}
	return os.Getwd()
}
