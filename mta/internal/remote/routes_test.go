package remote

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/mta/internal/tlsrpt"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	tbsts "github.com/posthorn/posthorn/testbed/mtasts"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// TestSmarthostStaticNames: a smarthost given as an IP literal (bare or
// in brackets) or as localhost is reached without any DNS lookup (the
// testbed DNS knows none of these names).
func TestSmarthostStaticNames(t *testing.T) {
	n := newNet(t)
	m, err := remotemta.Start(remotemta.Config{Mode: remotemta.STARTTLSValid, Hostname: "relay.example.test", CA: n.ca})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	for _, host := range []string{"127.0.0.1", "[127.0.0.1]", "localhost"} {
		t.Run(host, func(t *testing.T) {
			m.Reset()
			n.dns.ResetQueries()
			tr := n.transport(fmt.Sprintf("[[transport]]\ndomain = \"*\"\nkind = \"smarthost\"\nhost = \"%s:%d\"\n", host, m.Port()))
			out := deliver(t, tr, env1("x@far.test"), plainMsg)[0]
			if out.State != queue.Delivered || len(m.Messages()) != 1 {
				t.Fatalf("%+v", out)
			}
			for _, q := range n.dns.Queries() {
				if strings.Contains(q.Name, "127.0.0.1") || strings.Contains(q.Name, "localhost") {
					t.Errorf("DNS asked for %s", q.Name)
				}
			}
		})
	}
}

// TestStaticNameFromHostsFile: a smarthost name from /etc/hosts (here a
// test file) needs no DNS.
func TestStaticNameFromHostsFile(t *testing.T) {
	n := newNet(t)
	m, err := remotemta.Start(remotemta.Config{Mode: remotemta.STARTTLSValid, Hostname: "relay.hosts.test", CA: n.ca})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	hosts := filepath.Join(t.TempDir(), "hosts")
	writeFile(t, hosts, "# test\n127.0.0.1   relay.hosts.test relay\n")
	old := resolver.HostsFile
	resolver.HostsFile = hosts
	t.Cleanup(func() { resolver.HostsFile = old })
	tr := n.transport(fmt.Sprintf("[[transport]]\ndomain = \"*\"\nkind = \"smarthost\"\nhost = \"relay.hosts.test:%d\"\n", m.Port()))
	if out := deliver(t, tr, env1("x@far.test"), plainMsg)[0]; out.State != queue.Delivered {
		t.Fatalf("%+v", out)
	}
}

// TestAAAAFailureDoesNotFailDelivery: the MX host's AAAA lookup is
// REFUSED; its A record is enough, with IPv6 on or off.
func TestAAAAFailureDoesNotFailDelivery(t *testing.T) {
	for _, v6 := range []bool{true, false} {
		t.Run(fmt.Sprint("ipv6=", v6), func(t *testing.T) {
			n := newNet(t)
			m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{Mode: remotemta.STARTTLSValid})
			n.dns.Fail("mx.dest.test.", dns.RcodeRefused, dns.TypeAAAA)
			tr := n.transportWith(fmt.Sprintf("ipv6 = %v", v6), "")
			out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
			if out.State != queue.Delivered || len(m.Messages()) != 1 {
				t.Fatalf("%+v", out)
			}
		})
	}
}

// TestSourceAddress: outbound connections come from [outbound]
// source_address, or from the transport's own.
func TestSourceAddress(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skip("127.0.0.2 is not usable here:", err)
	}
	probe.Close()
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{Mode: remotemta.STARTTLSValid})
	tr := n.transportWith(`source_address = ["127.0.0.2", "::1"]`, "")
	if out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]; out.State != queue.Delivered {
		t.Fatalf("%+v", out)
	}
	if c := m.Connections(); len(c) != 1 || !strings.HasPrefix(c[0].Remote, "127.0.0.2:") {
		t.Fatalf("connections %+v", c)
	}
	m.Reset()
	tr2 := n.transportWith(`source_address = ["127.0.0.2"]`,
		"[[transport]]\ndomain = \"dest.test\"\nkind = \"mx\"\nsource_address = [\"127.0.0.3\"]\n")
	if out := deliver(t, tr2, env1("x@dest.test"), plainMsg)[0]; out.State != queue.Delivered {
		t.Fatalf("%+v", out)
	}
	if c := m.Connections(); len(c) != 1 || !strings.HasPrefix(c[0].Remote, "127.0.0.3:") {
		t.Fatalf("per-transport source: connections %+v", c)
	}
}

// TestTLSRPTDetails: what lands in the recipient domain's report: the
// sending MTA's address, dnssec-invalid for a bogus TLSA answer under the
// tlsa policy, sts-policy-fetch-error for an announced policy that cannot
// be fetched, and nothing for a failure only our own secure alias asked
// for.
func TestTLSRPTDetails(t *testing.T) {
	day := time.Now().UTC()
	t.Run("bogus TLSA", func(t *testing.T) {
		n, _ := daneNet(t, remotemta.Config{Mode: remotemta.STARTTLSValid}, leafTLSA)
		n.dns.Fail("_25._tcp.mx.dest.test.", dns.RcodeServerFailure, dns.TypeTLSA)
		tr := n.transport("")
		rpt := newRecorder(t, n)
		tr.SetEnforcement(nil, rpt, nil)
		if out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]; out.State != queue.Pending {
			t.Fatalf("%+v", out)
		}
		p := onePolicy(t, rpt, day, "dest.test")
		if p.Policy.PolicyType != tlsrpt.PolicyTLSA || p.Summary.TotalFailure != 1 || p.FailureDetails[0].ResultType != tlsrpt.DNSSECInvalid {
			t.Fatalf("%+v", p)
		}
	})
	t.Run("fetch failure", func(t *testing.T) {
		n := newNet(t)
		m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{Mode: remotemta.STARTTLSValid})
		srv, err := tbsts.Start(n.ca)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		// The TXT record announces a policy; the web server has none (404).
		n.dns.Zone("dest.test", dnsserver.Insecure).TXT("_mta-sts.dest.test.", "v=STSv1; id=1")
		res, _ := resolver.New(resolver.Options{Server: n.dns.Addr(), Timeout: 2 * time.Second, TrustAD: true})
		f, err := mtasts.New(mtasts.Options{Resolver: res, DialContext: srv.DialContext, RootCAs: n.ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		tr := n.transport("")
		rpt := newRecorder(t, n)
		tr.SetEnforcement(f, rpt, nil)
		if out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]; out.State != queue.Delivered || len(m.Messages()) != 1 {
			t.Fatalf("RFC 8461 §3.3: deliver as without MTA-STS: %+v", out)
		}
		p := onePolicy(t, rpt, day, "dest.test")
		fd := p.FailureDetails
		if p.Policy.PolicyType != tlsrpt.PolicySTS || p.Summary.TotalFailure != 1 || p.Summary.TotalSuccessful != 0 ||
			len(fd) != 1 || fd[0].ResultType != tlsrpt.STSPolicyFetchError || fd[0].SendingMTAIP != "127.0.0.1" {
			t.Fatalf("%+v", p)
		}
		ex := tr.Explain(t.Context(), "dest.test", "", false, false)
		if !strings.Contains(strings.Join(ex.Extra, "\n"), "could not be fetched, and none is cached") {
			t.Errorf("explain: %q", ex.Extra)
		}
	})
	t.Run("alias only", func(t *testing.T) {
		n := newNet(t)
		n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{Mode: remotemta.NoSTARTTLS})
		tr := n.transport("")
		rpt := newRecorder(t, n)
		tr.SetEnforcement(nil, rpt, staticAliases{"enc@secure.example.org": 4 /* encrypt */})
		e := env1("x@dest.test")
		e.From = "enc@secure.example.org"
		if out := deliver(t, tr, e, plainMsg)[0]; out.State != queue.Failed {
			t.Fatalf("%+v", out)
		}
		if doms, _ := rpt.Domains(day); len(doms) != 0 {
			t.Fatalf("our alias's demand was reported to %v", doms)
		}
	})
	t.Run("sending-mta-ip", func(t *testing.T) {
		n := newNet(t)
		n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{Mode: remotemta.STARTTLSSelfSigned})
		tr := n.transport("")
		srv, err := tbsts.Start(n.ca)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		srv.SetPolicy("dest.test", tbsts.Policy("enforce", 86400, "mx.dest.test"))
		n.dns.Zone("dest.test", dnsserver.Insecure).TXT("_mta-sts.dest.test.", "v=STSv1; id=2")
		res, _ := resolver.New(resolver.Options{Server: n.dns.Addr(), Timeout: 2 * time.Second, TrustAD: true})
		f, _ := mtasts.New(mtasts.Options{Resolver: res, DialContext: srv.DialContext, RootCAs: n.ca.Pool()})
		rpt := newRecorder(t, n)
		tr.SetEnforcement(f, rpt, nil)
		deliver(t, tr, env1("x@dest.test"), plainMsg)
		p := onePolicy(t, rpt, day, "dest.test")
		if len(p.FailureDetails) != 1 || p.FailureDetails[0].SendingMTAIP != "127.0.0.1" || p.FailureDetails[0].ReceivingIP != "127.0.0.1" ||
			p.FailureDetails[0].ResultType != tlsrpt.CertificateNotTrusted {
			t.Fatalf("%+v", p)
		}
	})
}

func newRecorder(t *testing.T, n *fakeNet) *tlsrpt.Recorder {
	t.Helper()
	rpt, err := tlsrpt.New(tlsrpt.Options{Dir: filepath.Join(n.dir, "rpt"), Submitter: "out.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	return rpt
}

func onePolicy(t *testing.T, rpt *tlsrpt.Recorder, day time.Time, domain string) tlsrpt.PolicyResult {
	t.Helper()
	rep, err := rpt.Report(day, domain)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Policies) != 1 {
		t.Fatalf("report policies: %+v", rep.Policies)
	}
	return rep.Policies[0]
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
