// Command testbed starts a small fake internet on 127.0.0.1 for demos: a
// DNS server with a few zones, a CA, remote MTAs with different TLS
// behaviours and an MTA-STS policy server, prints where everything is, and
// runs until interrupted.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	"github.com/posthorn/posthorn/testbed/mtasts"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

func main() {
	dir := flag.String("dir", "", "directory for the CA file (default: a new temporary directory)")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "testbed:", err)
		os.Exit(1)
	}
}

type site struct {
	domain string
	zone   dnsserver.Mode
	mode   remotemta.Mode
}

func run(dir string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "posthorn-testbed-")
		if err != nil {
			return err
		}
		dir = d
	}
	root, err := ca.New("Posthorn Testbed Root")
	if err != nil {
		return err
	}
	caFile, err := root.WriteCAFile(dir)
	if err != nil {
		return err
	}
	dns, err := dnsserver.Start()
	if err != nil {
		return err
	}
	defer dns.Close()
	sts, err := mtasts.Start(root)
	if err != nil {
		return err
	}
	defer sts.Close()

	sites := []site{
		{"example.test", dnsserver.Secure, remotemta.STARTTLSValid},
		{"plain.test", dnsserver.Insecure, remotemta.NoSTARTTLS},
		{"selfsigned.test", dnsserver.Insecure, remotemta.STARTTLSSelfSigned},
		{"wrongname.test", dnsserver.Secure, remotemta.STARTTLSWrongName},
		{"broken.test", dnsserver.Insecure, remotemta.STARTTLSBroken},
		{"smtps.test", dnsserver.Insecure, remotemta.ImplicitTLS},
	}
	fmt.Printf("DNS server:      %s (UDP and TCP)\n", dns.Addr())
	fmt.Printf("MTA-STS server:  %s (HTTPS for any mta-sts.* host)\n", sts.Addr())
	fmt.Printf("CA file:         %s\n\n", caFile)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "domain\tMX host\tremote MTA\tTLS mode\tDNS")
	for _, s := range sites {
		mx := "mx." + s.domain
		m, err := remotemta.Start(remotemta.Config{Mode: s.mode, Hostname: mx, CA: root,
			SMTPUTF8: true, DSN: true, REQUIRETLS: true, CHUNKING: true})
		if err != nil {
			return err
		}
		defer m.Close()
		z := dns.Zone(s.domain, s.zone).MX("@", 10, "mx").A("mx", "127.0.0.1")
		if s.mode == remotemta.STARTTLSValid {
			cert := m.Certificate().Leaf
			z.TLSA("_25._tcp.mx", 3, 1, 1, dnsserver.TLSAData(cert, 1, 1))
			z.TXT("_mta-sts", "v=STSv1; id=1").A("mta-sts", "127.0.0.1")
			sts.SetPolicy(s.domain, mtasts.Policy("enforce", 86400, mx))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.domain, mx, m.Addr(), s.mode, s.zone)
	}
	dns.Zone("nullmx.test", dnsserver.Secure).NullMX("@")
	dns.Zone("bogus.test", dnsserver.Bogus).MX("@", 10, "mx").A("mx", "127.0.0.1")
	fmt.Fprintf(tw, "nullmx.test\t(null MX)\t\t\t%s\n", dnsserver.Secure)
	fmt.Fprintf(tw, "bogus.test\t(SERVFAIL)\t\t\t%s\n", dnsserver.Bogus)
	tw.Flush()
	fmt.Println("\nMX hosts resolve to 127.0.0.1; the remote MTAs listen on the ports above, not 25.")
	fmt.Println("Query with e.g.: dig +adflag -p", dns.Port(), "@127.0.0.1 example.test MX")
	fmt.Println("Interrupt to stop.")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return nil
}
