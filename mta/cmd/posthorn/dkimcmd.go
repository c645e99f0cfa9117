package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/posthorn/posthorn/mta/internal/dkim"
)

// dkimMain is `posthorn dkim keygen [-alg rsa|ed25519] [-out FILE] DOMAIN
// SELECTOR`: it writes a new private key (mode 0600, never overwriting)
// and prints the DNS TXT record to publish and the config lines to add.
func dkimMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "keygen" {
		fmt.Fprintln(stderr, "usage: posthorn dkim keygen [-alg rsa|ed25519] [-out FILE] DOMAIN SELECTOR")
		return 2
	}
	fs := flag.NewFlagSet("dkim keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	alg := fs.String("alg", "rsa", "key algorithm: rsa (2048 bits) or ed25519")
	out := fs.String("out", "", "key file to write (default SELECTOR._domainkey.DOMAIN.key)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, "usage: posthorn dkim keygen [-alg rsa|ed25519] [-out FILE] DOMAIN SELECTOR")
		return 2
	}
	domain, selector := strings.ToLower(fs.Arg(0)), fs.Arg(1)
	name := dkim.RecordName(selector, domain)
	if *out == "" {
		*out = name + ".key"
	}
	key, pemBytes, err := dkim.Generate(*alg)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	if _, err := f.Write(pemBytes); err != nil {
		f.Close()
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	rec, err := dkim.DNSRecord(key)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	var quoted []string
	for _, s := range dkim.TXTStrings(rec) {
		quoted = append(quoted, `"`+s+`"`)
	}
	fmt.Fprintf(stdout, "; key written to %s\n; publish this TXT record:\n%s. IN TXT ( %s )\n", *out, name, strings.Join(quoted, "\n\t"))
	fmt.Fprintf(stdout, "; and add to posthorn.toml:\n;   [[dkim.key]]\n;   domain = %q\n;   selector = %q\n;   file = %q\n", domain, selector, *out)
	return 0
}
