// Command demo shows posthorn's outbound TLS levels against the testbed's
// fake internet: one destination domain per level, each served by a
// remote MTA with a fitting TLS behaviour, one message to each, and one
// message that bounces. It prints what arrived where, and over what.
//
//	go run ./testbed/cmd/demo      (or: make demo)
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/server"
	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

type dest struct {
	level  string
	domain string
	mode   remotemta.Mode
	mta    *remotemta.MTA
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "phdemo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dns, err := dnsserver.Start()
	if err != nil {
		return err
	}
	defer dns.Close()
	root, err := ca.New("Demo CA")
	if err != nil {
		return err
	}
	caFile, err := root.WriteCAFile(dir)
	if err != nil {
		return err
	}
	dests := []*dest{
		{level: "none", domain: "none.demo", mode: remotemta.STARTTLSValid},
		{level: "may", domain: "may.demo", mode: remotemta.NoSTARTTLS},
		{level: "encrypt", domain: "encrypt.demo", mode: remotemta.STARTTLSSelfSigned},
		{level: "dane", domain: "dane.demo", mode: remotemta.STARTTLSSelfSigned},
		{level: "dane-only", domain: "daneonly.demo", mode: remotemta.STARTTLSSelfSigned},
		{level: "fingerprint", domain: "fingerprint.demo", mode: remotemta.STARTTLSSelfSigned},
		{level: "verify", domain: "verify.demo", mode: remotemta.STARTTLSValid},
		{level: "secure", domain: "secure.demo", mode: remotemta.STARTTLSValid},
		{level: "verify", domain: "refused.demo", mode: remotemta.STARTTLSWrongName},
	}
	var policy, portMap strings.Builder
	for _, d := range dests {
		host := "mx." + d.domain
		d.mta, err = remotemta.Start(remotemta.Config{Mode: d.mode, Hostname: host, CA: root})
		if err != nil {
			return err
		}
		defer d.mta.Close()
		mode := dnsserver.Insecure
		if strings.HasPrefix(d.level, "dane") {
			// DNSSEC-signed (the testbed resolver sets AD) with a
			// DANE-EE TLSA record for the MX's key.
			mode = dnsserver.Secure
		}
		z := dns.Zone(d.domain, mode).MX(d.domain+".", 10, host+".").A(host+".", "127.0.0.1")
		if mode == dnsserver.Secure {
			z.TLSA("_25._tcp."+host+".", 3, 1, 1, dnsserver.TLSAData(d.mta.Certificate().Leaf, 1, 1))
		}
		fmt.Fprintf(&policy, "[[tls_policy]]\ndomain = %q\nlevel = %q\n", d.domain, d.level)
		if d.level == "fingerprint" {
			fp := sha256.Sum256(d.mta.Certificate().Leaf.RawSubjectPublicKeyInfo)
			fmt.Fprintf(&policy, "fingerprints = [%q]\n", hex.EncodeToString(fp[:]))
		}
		fmt.Fprintf(&portMap, "%q = %d, ", host, d.mta.Port())
	}
	d := dests[0]
	d.mta.SetRcptReply("nobody@none.demo", remotemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user here"})

	cfgText := fmt.Sprintf(`
hostname = "gateway.example.test"
[smtp]
mx_address = "127.0.0.1:0"
submission_address = ""
submissions_address = ""
[tls]
self_signed_dir = "tls"
[queue]
dir = "spool"
min_backoff = "1m"
[local]
maildir_root = "mail"
[metrics]
address = ""
[control]
socket = ""
[dns]
resolver = %q
[outbound]
ca_file = %q
connect_timeout = "3s"
[testing]
port_map = { %s }
[[domain]]
name = "example.test"
mailboxes = ["postmaster", "alice"]
%s`, dns.Addr(), caFile, strings.TrimSuffix(portMap.String(), ", "), policy.String())
	cfgPath := filepath.Join(dir, "posthorn.toml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	cfg, err := conf.Load(cfgPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("DEMO_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	dmn, err := server.Start(cfg, log)
	if err != nil {
		return err
	}
	defer dmn.Shutdown(context.Background())

	fmt.Println("Posthorn demo: the testbed's DNS and remote MTAs on 127.0.0.1, posthorn at", dmn.MXAddr())
	fmt.Println()
	c, err := smtp.Dial(dmn.MXAddr())
	if err != nil {
		return err
	}
	defer c.Close()
	rcpts := []string{}
	for _, d := range dests {
		rcpts = append(rcpts, "user@"+d.domain)
	}
	rcpts = append(rcpts, "nobody@none.demo")
	for _, r := range rcpts {
		msg := fmt.Sprintf("From: alice@example.test\r\nTo: %s\r\nSubject: demo\r\nMessage-ID: <%s.demo@example.test>\r\n\r\nHello.\r\n", r, strings.ReplaceAll(r, "@", "."))
		if err := c.SendMail("alice@example.test", []string{r}, strings.NewReader(msg)); err != nil {
			return fmt.Errorf("submitting to %s: %w", r, err)
		}
	}
	// Wait for the deliveries and the bounce.
	deadline := time.Now().Add(20 * time.Second)
	bounceDir := filepath.Join(cfg.Local.MaildirRoot, "example.test", "alice", "new")
	for time.Now().Before(deadline) {
		done := 0
		for _, d := range dests {
			done += len(d.mta.Messages())
		}
		ents, _ := os.ReadDir(bounceDir)
		if done >= len(dests)-1 && len(ents) >= 1 && len(dmn.Queued()) >= 1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "level\tdestination\tremote server\tresult\tconnection")
	for _, d := range dests {
		res, conn := "not delivered", ""
		for _, m := range d.mta.Messages() {
			if len(m.Rcpts) > 0 && m.Rcpts[0].Addr == "user@"+d.domain {
				res = "delivered"
				conn = "plaintext"
				if m.TLS {
					conn = fmt.Sprintf("TLS, SNI %s", m.ServerName)
				}
				if strings.HasPrefix(d.level, "dane") {
					conn += ", authenticated by TLSA 3 1 1"
				}
			}
		}
		if res != "delivered" {
			for _, env := range dmn.Queued() {
				for _, r := range env.Recipients {
					if r.Addr == "user@"+d.domain {
						res, conn = "deferred "+r.Status, r.Diagnostic
					}
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.level, d.domain, d.mode, res, conn)
	}
	tw.Flush()
	fmt.Println()
	fmt.Println("$ posthorn tls explain dane.demo --probe")
	if err := server.Explain(os.Stdout, cfg, "dane.demo", "", false, true); err != nil {
		fmt.Println(err)
	}
	ents, _ := os.ReadDir(bounceDir)
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	fmt.Println()
	if len(ents) == 0 {
		return fmt.Errorf("no bounce arrived for nobody@none.demo")
	}
	b, _ := os.ReadFile(filepath.Join(bounceDir, ents[0].Name()))
	fmt.Println("Bounce for nobody@none.demo, delivered to alice@example.test:")
	shown := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"Subject:", "Action:", "Status:", "Remote-MTA:", "Diagnostic-Code:"} {
			if strings.HasPrefix(l, k) && !shown[k] {
				shown[k] = true
				fmt.Println("  " + l)
			}
		}
	}
	return nil
}
