package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/posthorn/posthorn/conf"
)

// manMain is `posthorn man posthorn.8|posthorn.toml.5`: the man pages,
// made from the same text as --help and `config default` (make man
// writes them to docs/man; a test keeps the committed ones current).
func manMain(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: posthorn man posthorn.8|posthorn.toml.5")
		return 2
	}
	switch args[0] {
	case "posthorn.8":
		io.WriteString(stdout, manPosthorn())
	case "posthorn.toml.5":
		io.WriteString(stdout, manConfig())
	default:
		fmt.Fprintf(stderr, "posthorn: no man page %q\n", args[0])
		return 2
	}
	return 0
}

// roff escapes text for a man page line.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return strings.ReplaceAll(s, "-", `\-`)
}

func manPosthorn() string {
	var b strings.Builder
	b.WriteString(".TH POSTHORN 8 \"\" \"Posthorn\" \"System Manager's Manual\"\n")
	b.WriteString(".SH NAME\nposthorn \\- mail transfer agent: daemon, queue tools, sendmail\n")
	b.WriteString(".SH SYNOPSIS\n.B posthorn\n.I command\n[\\fIoptions\\fR]\n")
	b.WriteString(".SH DESCRIPTION\nOne binary runs the MTA (\\fBserve\\fR), checks and reloads its config, inspects the queue and injects mail like\n.BR sendmail (1).\nCalled through a link named \\fBsendmail\\fR it behaves as \\fBposthorn sendmail\\fR.\n")
	b.WriteString(".SH COMMANDS\n.nf\n")
	for _, l := range strings.Split(strings.TrimPrefix(usage, "usage: posthorn COMMAND [options]\n\ncommands:\n"), "\n") {
		b.WriteString(roff(l) + "\n")
	}
	b.WriteString(".fi\n.SH OPTIONS\n.nf\n")
	for _, l := range strings.Split(strings.TrimPrefix(globalHelp, "\nglobal options (before or after the command):\n"), "\n") {
		b.WriteString(roff(l) + "\n")
	}
	b.WriteString(".fi\n.SH SIGNALS\nSIGHUP reloads the configuration (as \\fBposthorn reload\\fR); SIGTERM and SIGINT stop the daemon.\n")
	b.WriteString(".SH FILES\n/etc/posthorn/posthorn.toml, /var/spool/posthorn, /var/lib/posthorn, /usr/lib/posthorn\n")
	b.WriteString(".SH SEE ALSO\n.BR posthorn.toml (5)\n")
	return b.String()
}

func manConfig() string {
	var b strings.Builder
	b.WriteString(".TH POSTHORN.TOML 5 \"\" \"Posthorn\" \"File Formats\"\n")
	b.WriteString(".SH NAME\nposthorn.toml \\- configuration of the Posthorn mail transfer agent\n")
	b.WriteString(".SH DESCRIPTION\nThe built-in default configuration, every setting with its default and its explanation, as \\fBposthorn config default\\fR prints it. A file only needs the lines that differ.\n")
	b.WriteString(".SH DEFAULTS\n.nf\n")
	for _, l := range strings.Split(strings.TrimRight(string(conf.DefaultTOML()), "\n"), "\n") {
		b.WriteString(roff(l) + "\n")
	}
	b.WriteString(".fi\n.SH SEE ALSO\n.BR posthorn (8)\n")
	return b.String()
}
