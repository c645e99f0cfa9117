package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	tbsts "github.com/posthorn/posthorn/testbed/mtasts"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// staticAliases: the secure aliases of the table test.
type staticAliases map[string]conf.TLSLevel

func (s staticAliases) SecureAlias(addr string) (string, conf.TLSLevel, bool) {
	l, ok := s[addr]
	return strings.Replace(addr, "@secure.", "@", 1), l, ok
}

// destination is one recipient domain of the table test.
type destination struct {
	name string // the table's column, and the domain's first label
	mta  *remotemta.MTA
}

// strongestNet builds every destination the issue lists, each its own
// domain with its own remote MTA (all offer REQUIRETLS under TLS): DANE-EE
// and DANE-TA matches, a TLSA mismatch, a bogus (SERVFAIL) TLSA answer, a
// bogus MX answer, MTA-STS enforce with a valid certificate, a wrong name,
// a self-signed certificate, an MX the policy does not list, MTA-STS
// testing (wrong name), a plain STARTTLS server (self-signed) and one
// without STARTTLS.
func strongestNet(t *testing.T) (*fakeNet, *tbsts.Server, map[string]*destination) {
	t.Helper()
	n := newNet(t)
	sts, err := tbsts.Start(n.ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sts.Close() })
	other, err := ca.SelfSigned("someone.else.test")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := n.ca.Intermediate("Dane TA Issuing CA")
	if err != nil {
		t.Fatal(err)
	}
	taLeaf, err := inter.Issue("mx.dane-ta.test")
	if err != nil {
		t.Fatal(err)
	}
	dests := map[string]*destination{}
	start := func(name string, zone dnsserver.Mode, cfg remotemta.Config) *destination {
		domain, host := name+".test", "mx."+name+".test"
		cfg.Hostname, cfg.REQUIRETLS = host, true
		if cfg.CA == nil {
			cfg.CA = n.ca
		}
		m, err := remotemta.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		n.mtas[host] = m
		n.dns.Zone(domain, zone).MX(domain+".", 10, host+".").A(host+".", "127.0.0.1")
		d := &destination{name: name, mta: m}
		dests[name] = d
		return d
	}
	d := start("dane-ee", dnsserver.Secure, remotemta.Config{Mode: remotemta.STARTTLSSelfSigned})
	n.dns.Zone("dane-ee.test", dnsserver.Secure).TLSA("_25._tcp.mx.dane-ee.test.", 3, 1, 1, dnsserver.TLSAData(d.mta.Certificate().Leaf, 1, 1))
	start("dane-ta", dnsserver.Secure, remotemta.Config{Mode: remotemta.STARTTLSValid, Certificate: &taLeaf})
	n.dns.Zone("dane-ta.test", dnsserver.Secure).TLSA("_25._tcp.mx.dane-ta.test.", 2, 0, 1, dnsserver.TLSAData(inter.Certificate(), 0, 1))
	start("tlsa-mismatch", dnsserver.Secure, remotemta.Config{Mode: remotemta.STARTTLSValid})
	n.dns.Zone("tlsa-mismatch.test", dnsserver.Secure).TLSA("_25._tcp.mx.tlsa-mismatch.test.", 3, 1, 1, dnsserver.TLSAData(other.Leaf, 1, 1))
	start("bogus-tlsa", dnsserver.Secure, remotemta.Config{Mode: remotemta.STARTTLSValid})
	n.dns.Fail("_25._tcp.mx.bogus-tlsa.test.", dns.RcodeServerFailure, dns.TypeTLSA)
	start("bogus-mx", dnsserver.Bogus, remotemta.Config{Mode: remotemta.STARTTLSValid})
	for name, c := range map[string]struct {
		mode, mx string
		tls      remotemta.Mode
	}{
		"sts-valid":      {"enforce", "mx.sts-valid.test", remotemta.STARTTLSValid},
		"sts-wrongname":  {"enforce", "mx.sts-wrongname.test", remotemta.STARTTLSWrongName},
		"sts-selfsigned": {"enforce", "mx.sts-selfsigned.test", remotemta.STARTTLSSelfSigned},
		"sts-notlisted":  {"enforce", "mx.elsewhere.test", remotemta.STARTTLSValid},
		"sts-testing":    {"testing", "mx.sts-testing.test", remotemta.STARTTLSWrongName},
	} {
		start(name, dnsserver.Insecure, remotemta.Config{Mode: c.tls})
		sts.SetPolicy(name+".test", tbsts.Policy(c.mode, 86400, c.mx))
		n.dns.Zone(name+".test", dnsserver.Insecure).TXT("_mta-sts."+name+".test.", "v=STSv1; id=1")
	}
	start("starttls", dnsserver.Insecure, remotemta.Config{Mode: remotemta.STARTTLSSelfSigned})
	start("nostarttls", dnsserver.Insecure, remotemta.Config{Mode: remotemta.NoSTARTTLS})
	return n, sts, dests
}

// columns are the destinations in the order of the expectations below.
var columns = []string{"dane-ee", "dane-ta", "tlsa-mismatch", "bogus-tlsa", "bogus-mx",
	"sts-valid", "sts-wrongname", "sts-selfsigned", "sts-notlisted", "sts-testing", "starttls", "nostarttls"}

// TestStrongestOfEveryInput delivers from every kind of sender to every
// kind of destination through the real transport (testbed DNS with the
// AD bit, testbed MTA-STS server and remote MTAs) and checks what arrived,
// over what, and what was deferred or bounced; and that tls explain says
// the same. Expectations: "D:x" delivered and the session's TLS shows x
// ("dane-usage", "pkix", "fingerprint", "TLS" for unauthenticated TLS,
// "plain" for none), "T" deferred, "B" bounced, with nothing arriving.
func TestStrongestOfEveryInput(t *testing.T) {
	n, stsSrv, dests := strongestNet(t)
	pins := ""
	for _, name := range columns {
		if name == "nostarttls" {
			continue // no certificate to pin
		}
		sum := sha256.Sum256(dests[name].mta.Certificate().Certificate[0])
		pins += fmt.Sprintf("[[tls_policy]]\ndomain = %q\nlevel = \"may\"\nfingerprints = [%q]\n", name+".test", hex.EncodeToString(sum[:]))
	}
	aliases := staticAliases{"enc@secure.example.org": conf.TLSEncrypt, "dane@secure.example.org": conf.TLSDaneOnly,
		"pin@secure.example.org": conf.TLSVerify}
	senders := []struct {
		name, from, cfg string
		requireTLS      bool
		want            []string // one per column
	}{
		{"normal sender", "a@example.org", "", false,
			[]string{"D:dane-usage-3", "D:dane-usage-2", "T", "T", "T", "D:pkix", "T", "T", "T", "D:TLS", "D:TLS", "D:plain"}},
		{"alias encrypt", "enc@secure.example.org", "", false,
			[]string{"D:dane-usage-3", "D:dane-usage-2", "B", "B", "B", "D:pkix", "B", "B", "B", "D:TLS", "D:TLS", "B"}},
		{"alias dane-only", "dane@secure.example.org", "", false,
			[]string{"D:dane-usage-3", "D:dane-usage-2", "B", "B", "B", "B", "B", "B", "B", "B", "B", "B"}},
		{"alias verify (pinned)", "pin@secure.example.org", pins, false,
			[]string{"D:dane-usage-3+fingerprint", "D:dane-usage-2+fingerprint", "B", "B", "B", "D:pkix+fingerprint", "B", "B", "B", "D:fingerprint", "D:fingerprint", "B"}},
		{"alias verify (nothing pinned)", "pin@secure.example.org", "", false,
			[]string{"B", "B", "B", "B", "B", "B", "B", "B", "B", "B", "B", "B"}},
		{"REQUIRETLS", "a@example.org", "", true,
			[]string{"D:dane-usage-3", "D:dane-usage-2", "T", "T", "T", "D:pkix", "T", "T", "B", "T", "B", "B"}},
		{"policy map encrypt", "a@example.org", "[[tls_policy]]\ndomain = \".test\"\nlevel = \"encrypt\"\n", false,
			[]string{"D:dane-usage-3", "D:dane-usage-2", "T", "T", "T", "D:pkix", "T", "T", "T", "D:TLS", "D:TLS", "T"}},
		{"policy map verify", "a@example.org", "[[tls_policy]]\ndomain = \".test\"\nlevel = \"verify\"\n", false,
			[]string{"T", "D:dane-usage-2+pkix", "T", "T", "T", "D:pkix", "T", "T", "T", "T", "T", "T"}},
	}
	for _, s := range senders {
		t.Run(s.name, func(t *testing.T) {
			tr := n.transport(s.cfg)
			res, _ := resolver.New(resolver.Options{Server: n.dns.Addr(), Timeout: 2 * time.Second, TrustAD: true})
			f, err := mtasts.New(mtasts.Options{Resolver: res, DialContext: stsSrv.DialContext, RootCAs: n.ca.Pool(), CacheDir: filepath.Join(t.TempDir(), "sts")})
			if err != nil {
				t.Fatal(err)
			}
			tr.SetEnforcement(f, nil, aliases)
			for i, col := range columns {
				dest, want := dests[col], s.want[i]
				dest.mta.Reset()
				env := &queue.Envelope{From: s.from, RequireTLS: s.requireTLS,
					Recipients: []*queue.Recipient{{Addr: "x@" + col + ".test", State: queue.Pending}}}
				out := deliver(t, tr, env, plainMsg)[0]
				msgs := dest.mta.Messages()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				ex := tr.Explain(ctx, col+".test", s.from, s.requireTLS, false)
				cancel()
				explainOK := ex.MXError == "" && len(ex.Hosts) == 1 && ex.Hosts[0].Error == ""
				where := fmt.Sprintf("%s -> %s: want %s, got %s %s %q", s.name, col, want, out.State, out.Status, out.Diagnostic)
				switch {
				case strings.HasPrefix(want, "D:"):
					if out.State != queue.Delivered || len(msgs) != 1 {
						t.Errorf("%s (%d arrived)", where, len(msgs))
						continue
					}
					label := want[2:]
					switch label {
					case "plain":
						if msgs[0].TLS || !strings.Contains(out.Diagnostic, "(plaintext)") {
							t.Errorf("%s: not in plaintext", where)
						}
					case "TLS":
						if !msgs[0].TLS || strings.Contains(out.Diagnostic, "verified=") {
							t.Errorf("%s: want unauthenticated TLS", where)
						}
					default:
						if !msgs[0].TLS || !strings.Contains(out.Diagnostic, "verified="+label+")") {
							t.Errorf("%s: want verified=%s", where, label)
						}
					}
					if !explainOK {
						t.Errorf("%s: delivered, but tls explain refuses: %+v", where, ex)
					}
				case want == "T":
					if out.State != queue.Pending || len(msgs) != 0 {
						t.Errorf("%s (%d arrived)", where, len(msgs))
					}
				case want == "B":
					if out.State != queue.Failed || len(msgs) != 0 || !strings.HasPrefix(out.Status, "5.") {
						t.Errorf("%s (%d arrived)", where, len(msgs))
					}
				}
				if !strings.HasPrefix(want, "D:") && explainOK && len(dest.mta.Connections()) == 0 {
					// explain agrees when it refuses, or when the refusal
					// comes from the TLS session itself (a connection was
					// made and failed).
					t.Errorf("%s: not delivered and no connection tried, but tls explain sees no refusal: %+v", where, ex.Hosts)
				}
			}
		})
	}
}

// TestExplainAliasNeverProbesPlaintext: tls explain --sender ALIAS --probe
// probes with the alias's effective policy, so a host without STARTTLS
// shows the refusal the alias would get, never a plaintext session; hosts
// the alias may not use at all are not probed.
func TestExplainAliasNeverProbesPlaintext(t *testing.T) {
	n, _, _ := strongestNet(t)
	tr := n.transport("")
	tr.SetEnforcement(nil, nil, staticAliases{"enc@secure.example.org": conf.TLSEncrypt, "dane@secure.example.org": conf.TLSDaneOnly})
	ctx := t.Context()
	if ex := tr.Explain(ctx, "nostarttls.test", "a@example.org", false, true); len(ex.Hosts) != 1 || !strings.Contains(ex.Hosts[0].Probe, "ok: plaintext") {
		t.Fatalf("ordinary sender: %+v", ex.Hosts)
	}
	ex := tr.Explain(ctx, "nostarttls.test", "enc@secure.example.org", false, true)
	if len(ex.Hosts) != 1 || strings.Contains(ex.Hosts[0].Probe, "plaintext") || !strings.Contains(ex.Hosts[0].Probe, "did not offer STARTTLS") {
		t.Fatalf("alias encrypt: %+v", ex.Hosts)
	}
	ex = tr.Explain(ctx, "nostarttls.test", "dane@secure.example.org", false, true)
	if len(ex.Hosts) != 1 || ex.Hosts[0].Probe != "" || !strings.Contains(ex.Hosts[0].Error, "(bounce)") {
		t.Fatalf("alias dane-only: %+v", ex.Hosts)
	}
}
