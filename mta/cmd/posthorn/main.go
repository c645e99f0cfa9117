// Command posthorn is the one binary operators run: the daemon (serve),
// config tools (check, config default), users (passwd), the queue commands
// and sendmail-compatible injection. Called through a link named
// "sendmail", it behaves as `posthorn sendmail`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/posthorn/posthorn/conf"
)

const usage = `usage: posthorn COMMAND [options]

commands:
  serve [-c FILE]                 run the MTA (embedded default config without -c)
  check -c FILE                   validate a config file and the files it names
                                  (certificate and key match, plugin binaries
                                  executable and matching their sha256)
  reload [-c FILE]                the running daemon reads its config again
                                  (as on SIGHUP); a broken file is refused
  version                         version, commit and plugin protocol version
  config default                  print the embedded default config
  passwd [-c FILE] USER@DOMAIN    set a user's password (read from stdin)
  queue [-c FILE] list [--json]   list queued messages
  queue [-c FILE] show [--body] ID  envelope, recipient states and headers
                                  (--body: the whole message, like postcat)
  queue [-c FILE] summary [--json] recipients per state and domain, by age
  queue [-c FILE] flush [ID]      retry now (one message, or all)
  queue [-c FILE] hold|release|requeue|delete ID
  sendmail [flags] [RCPT...]      queue a message from stdin (-t -f -F -i -oi)
  dkim keygen [-alg rsa|ed25519] DOMAIN SELECTOR
                                  write a DKIM key; print the DNS TXT record
  plugin list [--json]            each plugin's state, version, hooks, restarts
  tls tlsa [-c FILE]              the TLSA record (3 1 1) of our certificate
  tls explain [-c FILE] DOMAIN [--sender ADDR] [--probe]
                                  which TLS level applies to DOMAIN, and why
  tls report [-c FILE] [--day DATE] [--dry-run]
                                  send a day's TLS reports (RFC 8460) now, or print them
  explain [-c FILE] --from ADDR --to ADDR...
                                  what will happen to a mail: route, TLS level
                                  and why, encryption method (preflight)
  directory [-c FILE] COMMAND     manage users (domains, mailboxes, aliases,
                                  secure aliases); posthorn directory help
  admin token NAME [SCOPE...]     make an admin API token and its config table
`

func main() {
	if filepath.Base(os.Args[0]) == "sendmail" {
		os.Exit(sendmailMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	rest, help, err := globalArgs(cmd, rest)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 2
	}
	if help && cmd != "help" {
		commandHelp(stdout, cmd)
		return 0
	}
	switch cmd {
	case "version", "--version":
		return versionMain(stdout)
	case "man":
		return manMain(rest, stdout, stderr)
	case "serve":
		return serveMain(rest, stderr)
	case "check":
		return checkMain(rest, stdout, stderr)
	case "config":
		if len(rest) == 1 && rest[0] == "default" {
			stdout.Write(conf.DefaultTOML())
			return 0
		}
		fmt.Fprintln(stderr, "usage: posthorn config default")
		return 2
	case "passwd":
		return passwdMain(rest, stdin, stdout, stderr)
	case "queue":
		return queueMain(rest, stdout, stderr)
	case "sendmail":
		return sendmailMain(rest, stdin, stdout, stderr)
	case "dkim":
		return dkimMain(rest, stdout, stderr)
	case "tls":
		return tlsMain(rest, stdout, stderr)
	case "plugin":
		return pluginMain(rest, stdout, stderr)
	case "directory":
		return directoryMain(rest, stdin, stdout, stderr)
	case "explain":
		return preflightMain(rest, stdout, stderr)
	case "admin":
		return adminMain(rest, stdout, stderr)
	case "reload":
		return reloadMain(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage+globalHelp)
		return 0
	}
	fmt.Fprintf(stderr, "posthorn: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// loadConfig loads FILE, or the embedded default when FILE is "".
func loadConfig(path string) (*conf.Config, error) {
	if path == "" {
		base, err := defaultBase()
		if err != nil {
			return nil, err
		}
		return conf.ParseIn(conf.DefaultFile, conf.DefaultTOML(), base)
	}
	return conf.Load(path)
}

func configFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("POSTHORN_CONFIG")
	return fs.String("c", def, "config file (default: $POSTHORN_CONFIG, else the embedded default)")
}

func checkMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", os.Getenv("POSTHORN_CONFIG"), "config file to check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" && fs.NArg() == 1 {
		*cfgPath = fs.Arg(0)
	}
	if *cfgPath == "" {
		fmt.Fprintln(stderr, "usage: posthorn check -c FILE")
		return 2
	}
	cfg, err := conf.Load(*cfgPath)
	if err != nil {
		printConfigErrors(stderr, err)
		return 1
	}
	if probs := checkFiles(cfg); len(probs) > 0 {
		for _, p := range probs {
			fmt.Fprintf(stderr, "%s: %s\n", *cfgPath, p)
		}
		fmt.Fprintf(stderr, "%d problem(s) with the files the config names\n", len(probs))
		return 1
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stdout, "%s: warning: %s\n", *cfgPath, w)
	}
	fmt.Fprintf(stdout, "%s: ok\n", *cfgPath)
	return 0
}

// printConfigErrors lists a config's errors, one a line.
func printConfigErrors(w io.Writer, err error) {
	var errs conf.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(w, e.Error())
		}
		fmt.Fprintf(w, "%d error(s)\n", len(errs))
		return
	}
	fmt.Fprintln(w, err)
}

func trimNewline(s string) string { return strings.TrimRight(s, "\r\n") }
