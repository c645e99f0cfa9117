package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/tlsrpt"
	"github.com/posthorn/posthorn/testbed/dnsserver"
)

// TestTLSReportCommand: `posthorn tls report --dry-run` prints the day's
// reports (valid RFC 8460 JSON) without a daemon; without --dry-run the
// running daemon sends them at once, here to a mailto: rua that is a
// local mailbox.
func TestTLSReportCommand(t *testing.T) {
	dns, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	dns.Zone("dest.test", dnsserver.Insecure).TXT("_smtp._tls.dest.test.", "v=TLSRPTv1; rua=mailto:bob@example.test")
	in := newInstance(t, fmt.Sprintf("[dns]\nresolver = %q\n[tls_rpt]\nenabled = true\nstate_dir = \"rpt\"\n", dns.Addr()))
	day := time.Now().UTC()
	rec, err := tlsrpt.New(tlsrpt.Options{Dir: filepath.Join(in.dir, "rpt"), Submitter: "mx.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	rec.Record(tlsrpt.Attempt{Time: day, Domain: "dest.test", PolicyType: tlsrpt.PolicySTS, PolicyString: []string{"version: STSv1", "mode: enforce"},
		MXHost: []string{"mx.dest.test"}, Result: tlsrpt.CertificateHostMismatch, SendingMTAIP: "127.0.0.1", ReceivingIP: "127.0.0.1",
		ReceivingMXHostname: "mx.dest.test"})
	rec.Record(tlsrpt.Attempt{Time: day, Domain: "dest.test", PolicyType: tlsrpt.PolicySTS, PolicyString: []string{"version: STSv1", "mode: enforce"},
		MXHost: []string{"mx.dest.test"}, Success: true})
	rec.Close()

	out, err := in.cli("tls", "report", "--day", day.Format("2006-01-02"), "--dry-run")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := tlsrpt.ValidateReport([]byte(out)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var rep tlsrpt.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Policies) != 1 || rep.Policies[0].Summary.TotalFailure != 1 ||
		rep.Policies[0].Summary.TotalSuccessful != 1 {
		t.Fatalf("%v %s", err, out)
	}
	if out, err := in.cli("tls", "report", "--day", "yesterday"); err == nil || !strings.Contains(out, "YYYY-MM-DD") {
		t.Errorf("bad day accepted: %s", out)
	}

	in.start()
	out, err = in.cli("tls", "report", "--day", day.Format("2006-01-02"))
	if err != nil || !strings.Contains(out, "sent to 1 domain(s): dest.test") {
		t.Fatalf("%v: %s\n%s", err, out, in.logText())
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ents, _ := os.ReadDir(filepath.Join(in.dir, "mail", "example.test", "bob", "new"))
		if len(ents) > 0 {
			b, _ := os.ReadFile(filepath.Join(in.dir, "mail", "example.test", "bob", "new", ents[0].Name()))
			if !strings.Contains(string(b), "application/tlsrpt+gzip") {
				t.Fatalf("not a TLS report:\n%s", b)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no report arrived:\n%s", in.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
