package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"

	"github.com/posthorn/posthorn/mta/internal/auth"
)

// passwdMain sets a user's password in the configured password file. The
// password is read from the first line of stdin (so it never shows in the
// process list or shell history).
func passwdMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: posthorn passwd [-c FILE] USER@DOMAIN   (password on stdin)")
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	fmt.Fprintf(stderr, "Password for %s (one line on stdin): ", fs.Arg(0))
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(stderr, "\nposthorn: no password given")
		return 1
	}
	fmt.Fprintln(stderr)
	if err := auth.SetPassword(cfg.Auth.PasswordFile, fs.Arg(0), trimNewline(line)); err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	fmt.Fprintf(stdout, "password set for %s in %s\n", fs.Arg(0), cfg.Auth.PasswordFile)
	return 0
}
