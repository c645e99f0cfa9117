package remote

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// daneNet publishes dest.test with its MX in a DNSSEC-secure zone (the
// testbed's resolver sets AD) and a TLSA record for the MX.
func daneNet(t *testing.T, cfg remotemta.Config, tlsa func(m *remotemta.MTA) (usage, sel, mt uint8, data string)) (*fakeNet, *remotemta.MTA) {
	t.Helper()
	n := newNet(t)
	cfg.Hostname = "mx.dest.test"
	if cfg.CA == nil {
		cfg.CA = n.ca
	}
	m, err := remotemta.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	n.mtas["mx.dest.test"] = m
	z := n.dns.Zone("dest.test", dnsserver.Secure)
	z.MX("dest.test.", 10, "mx.dest.test.").A("mx.dest.test.", "127.0.0.1")
	if tlsa != nil {
		u, s, mt, data := tlsa(m)
		z.TLSA("_25._tcp.mx.dest.test.", u, s, mt, data)
	}
	return n, m
}

func leafTLSA(m *remotemta.MTA) (uint8, uint8, uint8, string) {
	return 3, 1, 1, dnsserver.TLSAData(m.Certificate().Leaf, 1, 1)
}

func TestDANEEndEntity(t *testing.T) {
	n, m := daneNet(t, remotemta.Config{Mode: remotemta.STARTTLSSelfSigned}, leafTLSA)
	tr := n.transport("") // default level may: opportunistic DANE
	out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
	if out.State != queue.Delivered || len(m.Messages()) != 1 || !m.Messages()[0].TLS {
		t.Fatalf("%+v", out)
	}
	if !strings.Contains(out.Diagnostic, "verified=dane-usage-3") {
		t.Errorf("not authenticated by DANE: %s", out.Diagnostic)
	}
}

func TestDANEMismatchStrippedAndBogus(t *testing.T) {
	other, _ := ca.SelfSigned("someone.else")
	for name, c := range map[string]struct {
		cfg  remotemta.Config
		tlsa func(*remotemta.MTA) (uint8, uint8, uint8, string)
		zone dnsserver.Mode
	}{
		"TLSA mismatch": {remotemta.Config{Mode: remotemta.STARTTLSSelfSigned}, func(*remotemta.MTA) (uint8, uint8, uint8, string) {
			return 3, 1, 1, dnsserver.TLSAData(other.Leaf, 1, 1)
		}, dnsserver.Secure},
		"STARTTLS stripped": {remotemta.Config{Mode: remotemta.NoSTARTTLS}, func(*remotemta.MTA) (uint8, uint8, uint8, string) {
			return 3, 1, 1, dnsserver.TLSAData(other.Leaf, 1, 1)
		}, dnsserver.Secure},
		"bogus DNSSEC": {remotemta.Config{Mode: remotemta.STARTTLSSelfSigned}, leafTLSA, dnsserver.Bogus},
	} {
		t.Run(name, func(t *testing.T) {
			n, m := daneNet(t, c.cfg, c.tlsa)
			if c.zone == dnsserver.Bogus {
				// The MX is secure, but the host's TLSA zone is bogus.
				n.dns.Zone("mx.dest.test", dnsserver.Bogus)
			}
			tr := n.transport("")
			out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
			if out.State != queue.Pending || len(m.Messages()) != 0 {
				t.Fatalf("want deferred and nothing delivered, got %+v (%d arrived)", out, len(m.Messages()))
			}
		})
	}
}

func TestDANETrustAnchorChain(t *testing.T) {
	n := newNet(t)
	inter, err := n.ca.Intermediate("Dest Issuing CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.Issue("mx.dest.test")
	if err != nil {
		t.Fatal(err)
	}
	n2, m := daneNet(t, remotemta.Config{Mode: remotemta.STARTTLSValid, Certificate: &leaf}, func(*remotemta.MTA) (uint8, uint8, uint8, string) {
		// DANE-TA(2), full certificate, SHA-256 of the intermediate.
		return 2, 0, 1, dnsserver.TLSAData(inter.Certificate(), 0, 1)
	})
	_ = n
	tr := n2.transport("")
	out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
	if out.State != queue.Delivered || len(m.Messages()) != 1 || !strings.Contains(out.Diagnostic, "dane-usage-2") {
		t.Fatalf("%+v", out)
	}
	var _ tls.Certificate = leaf
}

func TestDANEOnlyAndPolicyMap(t *testing.T) {
	n, m := daneNet(t, remotemta.Config{Mode: remotemta.STARTTLSSelfSigned}, leafTLSA)
	tr := n.transport("[[tls_policy]]\ndomain = \"dest.test\"\nlevel = \"dane-only\"\n")
	if out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]; out.State != queue.Delivered {
		t.Fatalf("dane-only with usable TLSA: %+v", out)
	}
	// Without TLSA records, dane-only refuses to deliver.
	n.dns.Zone("dest.test", dnsserver.Secure).Remove("_25._tcp.mx.dest.test.", 52)
	if out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]; out.State != queue.Pending {
		t.Fatalf("dane-only without TLSA: %+v", out)
	}
	if len(m.Messages()) != 1 {
		t.Fatalf("%d messages", len(m.Messages()))
	}
}
