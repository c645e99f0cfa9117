package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"io"

	"github.com/posthorn/posthorn/mta/daemon"
	"github.com/posthorn/posthorn/mta/remote"
	"github.com/posthorn/posthorn/mta/tlsutil"
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
	printExplanation(stdout, ex)
	return 0
}

func printExplanation(w io.Writer, ex *remote.Explanation) {
	fmt.Fprintf(w, "destination:  %s\n", ex.Domain)
	fmt.Fprintf(w, "route:        %s\n", ex.Route)
	fmt.Fprintf(w, "policy:       %s  (from %s)\n", ex.Policy.Level, ex.Policy.Source)
	for _, x := range ex.Extra {
		fmt.Fprintf(w, "              %s\n", x)
	}
	if ex.DANEOn {
		trust := "yes"
		if !ex.TrustAD {
			trust = "no: DNSSEC answers are not trusted ([dns] trust_ad), so DANE never applies"
		}
		fmt.Fprintf(w, "DANE:         on; resolver's AD bit trusted: %s\n", trust)
	}
	if ex.MXError != "" {
		fmt.Fprintf(w, "MX:           %s\n", ex.MXError)
	} else if ex.Route == "mx" {
		fmt.Fprintf(w, "MX RRset:     DNSSEC-validated: %v\n", ex.MXSecure)
	}
	for _, h := range ex.Hosts {
		fmt.Fprintf(w, "host %s (preference %d)\n", h.Host, h.Pref)
		fmt.Fprintf(w, "  level:      %s  (from %s)\n", h.Policy.Level, h.Policy.Source)
		if h.DANE != "" {
			fmt.Fprintf(w, "  DANE:       %s\n", h.DANE)
		}
		if h.Error != "" {
			fmt.Fprintf(w, "  skipped:    %s\n", h.Error)
		}
		if h.Probe != "" {
			fmt.Fprintf(w, "  probe:      %s\n", h.Probe)
		}
	}
	if ex.PortMapOn {
		fmt.Fprintln(w, "note: testing.port_map is set; hosts are dialled on test ports")
	}
}
