package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/daemon"
	"github.com/posthorn/posthorn/mta/internal/tlsutil"
)

// tlsMain is `posthorn tls …`.
func tlsMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: posthorn tls tlsa [-c FILE] | posthorn tls explain [-c FILE] DOMAIN [--sender ADDR] [--probe] | posthorn tls report [-c FILE] [--day DATE] [--dry-run]")
		return 2
	}
	switch args[0] {
	case "tlsa":
		return tlsaMain(args[1:], stdout, stderr)
	case "explain":
		return explainMain(args[1:], stdout, stderr)
	case "report":
		return reportMain(args[1:], stdout, stderr)
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

// reportMain is `posthorn tls report [--day DATE] [--dry-run]`: send the
// TLS reports (RFC 8460) of a day now, through the running daemon, or
// with --dry-run print them (the JSON, one report per recipient domain)
// without sending. DATE is a UTC day, YYYY-MM-DD; default yesterday.
func reportMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tls report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	day := fs.String("day", "", "UTC day YYYY-MM-DD (default: yesterday)")
	dry := fs.Bool("dry-run", false, "print the reports' JSON instead of sending them")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: posthorn tls report [-c FILE] [--day DATE] [--dry-run]")
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	d, err := daemon.ParseReportDay(*day, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 2
	}
	if *dry {
		reps, err := daemon.TLSReports(cfg, d)
		if err != nil {
			fmt.Fprintln(stderr, "posthorn:", err)
			return 1
		}
		if len(reps) == 0 {
			fmt.Fprintf(stderr, "posthorn: no TLS attempts recorded on %s\n", d.Format("2006-01-02"))
		}
		for _, r := range reps {
			js, err := r.JSON()
			if err != nil {
				fmt.Fprintln(stderr, "posthorn:", err)
				return 1
			}
			fmt.Fprintf(stdout, "%s\n", js)
		}
		return 0
	}
	resp, err := control.Call(cfg.Control.Socket, control.Request{Cmd: "tls-report", Day: d.Format("2006-01-02")})
	if err == nil && resp.Error != "" {
		err = errors.New(resp.Error)
	}
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	var sent []string
	json.Unmarshal(resp.Data, &sent)
	fmt.Fprintf(stdout, "TLS reports for %s sent to %d domain(s): %s\n", d.Format("2006-01-02"), len(sent), strings.Join(sent, " "))
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
