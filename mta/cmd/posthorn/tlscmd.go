package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"io"

	"github.com/posthorn/posthorn/mta/internal/daemon"
	"github.com/posthorn/posthorn/mta/internal/tlsutil"
)

// tlsMain is `posthorn tls …`.
func tlsMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: posthorn tls tlsa [-c FILE] | posthorn tls explain [-c FILE] DOMAIN [--sender ADDR] [--probe]")
		return 2
	}
	switch args[0] {
	case "tlsa":
		return tlsaMain(args[1:], stdout, stderr)
	case "explain":
		return explainMain(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "posthorn: unknown tls command %q\n", args[0])
	return 2
}

// tlsaMain prints the DANE-EE TLSA record (3 1 1: SHA-256 of the public
// key, which survives certificate renewals that keep the key) for the
// configured server certificate, to publish at _25._tcp.HOSTNAME.
func tlsaMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tls tlsa", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	cert, err := tlsutil.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.SelfSignedDir, cfg.Hostname)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	fmt.Fprintf(stdout, "_25._tcp.%s. IN TLSA 3 1 1 %s\n", cfg.Hostname, hex.EncodeToString(sum[:]))
	return 0
}

// explainMain is `posthorn tls explain DOMAIN [--sender ADDR] [--probe]`.
func explainMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tls explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	sender := fs.String("sender", "", "envelope sender (secure aliases, REQUIRETLS)")
	probe := fs.Bool("probe", false, "connect to each MX host and report the TLS handshake")
	requireTLS := fs.Bool("requiretls", false, "explain for a message with REQUIRETLS (RFC 8689)")
	// Flags may follow the domain.
	var domain string
	rest := args
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		if domain != "" {
			fmt.Fprintln(stderr, "usage: posthorn tls explain [-c FILE] DOMAIN [--sender ADDR] [--requiretls] [--probe]")
			return 2
		}
		domain = fs.Arg(0)
		rest = fs.Args()[1:]
	}
	if domain == "" {
		fmt.Fprintln(stderr, "usage: posthorn tls explain [-c FILE] DOMAIN [--sender ADDR] [--probe]")
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	ex, err := daemon.Explain(cfg, domain, *sender, *requireTLS, *probe)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	ex.Print(stdout)
	return 0
}
