package remote

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/mta/internal/tlsrpt"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	tbsts "github.com/posthorn/posthorn/testbed/mtasts"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// stsNet serves dest.test's MX from a remote MTA with cfg, and an MTA-STS
// policy in mode with mx pattern mxPat; it returns a transport with MTA-STS
// and TLS-RPT switched on.
func stsNet(t *testing.T, cfg remotemta.Config, mode, mxPat string) (*Transport, *remotemta.MTA, *tlsrpt.Recorder, *fakeNet) {
	t.Helper()
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, cfg)
	srv, err := tbsts.Start(n.ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	srv.SetPolicy("dest.test", tbsts.Policy(mode, 86400, mxPat))
	n.dns.Zone("dest.test", dnsserver.Insecure).TXT("_mta-sts.dest.test.", "v=STSv1; id=20261124")
	tr := n.transport("")
	res, _ := resolver.New(resolver.Options{Server: n.dns.Addr(), Timeout: 2 * time.Second, TrustAD: true})
	f, err := mtasts.New(mtasts.Options{Resolver: res, DialContext: srv.DialContext, RootCAs: n.ca.Pool(), CacheDir: filepath.Join(n.dir, "sts")})
	if err != nil {
		t.Fatal(err)
	}
	rpt, err := tlsrpt.New(tlsrpt.Options{Dir: filepath.Join(n.dir, "rpt"), Submitter: "out.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	tr.SetEnforcement(f, rpt, nil)
	return tr, m, rpt, n
}

func TestMTASTSEnforce(t *testing.T) {
	for name, c := range map[string]struct {
		cfg       remotemta.Config
		mxPat     string
		delivered bool
	}{
		"valid certificate":  {remotemta.Config{Mode: remotemta.STARTTLSValid}, "mx.dest.test", true},
		"STARTTLS stripped":  {remotemta.Config{Mode: remotemta.NoSTARTTLS}, "mx.dest.test", false},
		"wrong certificate":  {remotemta.Config{Mode: remotemta.STARTTLSWrongName}, "mx.dest.test", false},
		"self-signed":        {remotemta.Config{Mode: remotemta.STARTTLSSelfSigned}, "mx.dest.test", false},
		"MX not in policy":   {remotemta.Config{Mode: remotemta.STARTTLSValid}, "mx.other.test", false},
		"wildcard in policy": {remotemta.Config{Mode: remotemta.STARTTLSValid}, "*.dest.test", true},
	} {
		t.Run(name, func(t *testing.T) {
			tr, m, _, _ := stsNet(t, c.cfg, "enforce", c.mxPat)
			out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
			if c.delivered {
				if out.State != queue.Delivered || !strings.Contains(out.Diagnostic, "verified=pkix") {
					t.Fatalf("want delivered over verified TLS: %+v", out)
				}
				return
			}
			if out.State != queue.Pending || len(m.Messages()) != 0 {
				t.Fatalf("enforce must not deliver: %+v (%d arrived)", out, len(m.Messages()))
			}
		})
	}
}

func TestMTASTSTestingDeliversAndRecords(t *testing.T) {
	tr, m, rpt, n := stsNet(t, remotemta.Config{Mode: remotemta.STARTTLSWrongName}, "testing", "mx.dest.test")
	out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
	if out.State != queue.Delivered || len(m.Messages()) != 1 {
		t.Fatalf("testing mode must deliver: %+v", out)
	}
	rep, err := rpt.Report(time.Now().UTC(), "dest.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Policies) != 1 {
		t.Fatalf("report: %+v", rep)
	}
	p := rep.Policies[0]
	if p.Policy.PolicyType != "sts" || p.Summary.TotalFailure != 1 || p.Summary.TotalSuccessful != 0 ||
		len(p.FailureDetails) != 1 || p.FailureDetails[0].ResultType != tlsrpt.CertificateHostMismatch {
		t.Fatalf("report policy: %+v", p)
	}
	_ = n
}

// TestDANEAndMTASTSBothHold: with usable TLSA records and an enforced
// MTA-STS policy, both must hold (the strongest-of rule; RFC 8461 §2
// would let DANE replace MTA-STS): a self-signed certificate that
// matches the TLSA record is refused, a CA-signed one that matches both
// is delivered, authenticated both ways.
func TestDANEAndMTASTSBothHold(t *testing.T) {
	tr, m, _, n := stsNet(t, remotemta.Config{Mode: remotemta.STARTTLSSelfSigned}, "enforce", "mx.dest.test")
	n.dns.Zone("dest.test", dnsserver.Secure)
	n.dns.Zone("mx.dest.test", dnsserver.Secure).TLSA("_25._tcp.mx.dest.test.", 3, 1, 1, dnsserver.TLSAData(m.Certificate().Leaf, 1, 1))
	out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
	if out.State != queue.Pending || len(m.Messages()) != 0 {
		t.Fatalf("self-signed under MTA-STS enforce delivered because DANE matched: %+v", out)
	}

	tr2, m2, _, n2 := stsNet(t, remotemta.Config{Mode: remotemta.STARTTLSValid}, "enforce", "mx.dest.test")
	n2.dns.Zone("dest.test", dnsserver.Secure)
	n2.dns.Zone("mx.dest.test", dnsserver.Secure).TLSA("_25._tcp.mx.dest.test.", 3, 1, 1, dnsserver.TLSAData(m2.Certificate().Leaf, 1, 1))
	out = deliver(t, tr2, env1("x@dest.test"), plainMsg)[0]
	if out.State != queue.Delivered || len(m2.Messages()) != 1 || !strings.Contains(out.Diagnostic, "verified=dane-usage-3+pkix") {
		t.Fatalf("%+v", out)
	}
}

func TestRequireTLSOnward(t *testing.T) {
	// Authenticated by MTA-STS and offering REQUIRETLS: delivered, with
	// the REQUIRETLS parameter.
	tr, m, _, _ := stsNet(t, remotemta.Config{Mode: remotemta.STARTTLSValid, REQUIRETLS: true}, "enforce", "mx.dest.test")
	e := env1("x@dest.test")
	e.RequireTLS = true
	if out := deliver(t, tr, e, plainMsg)[0]; out.State != queue.Delivered || !m.Messages()[0].RequireTLS {
		t.Fatalf("%+v", out)
	}
	// Authenticated, but no REQUIRETLS at the host: bounced, 5.7.30.
	tr2, m2, _, _ := stsNet(t, remotemta.Config{Mode: remotemta.STARTTLSValid}, "enforce", "mx.dest.test")
	if out := deliver(t, tr2, e, plainMsg)[0]; out.State != queue.Failed || out.Status != "5.7.30" || len(m2.Messages()) != 0 {
		t.Fatalf("%+v", out)
	}
	// No MTA-STS and no DANE: nothing authenticates the MX: bounced.
	n := newNet(t)
	m3 := n.mx("plain.test", "mx.plain.test", 10, remotemta.Config{Mode: remotemta.STARTTLSValid, REQUIRETLS: true})
	e3 := env1("x@plain.test")
	e3.RequireTLS = true
	if out := deliver(t, n.transport(""), e3, plainMsg)[0]; out.State != queue.Failed || out.Status != "5.7.30" || len(m3.Messages()) != 0 {
		t.Fatalf("%+v", out)
	}
	// "TLS-Required: No" lets a message through despite MTA-STS.
	tr4, m4, _, _ := stsNet(t, remotemta.Config{Mode: remotemta.NoSTARTTLS}, "enforce", "mx.dest.test")
	if out := deliver(t, tr4, env1("x@dest.test"), "TLS-Required: No\r\n"+plainMsg)[0]; out.State != queue.Delivered || len(m4.Messages()) != 1 {
		t.Fatalf("TLS-Required: No: %+v", out)
	}
}
