package daemon_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/posthorn/posthorn/mta/internal/daemon"
	phsts "github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/smtpd"

	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	tbsts "github.com/posthorn/posthorn/testbed/mtasts"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// remoteEnv is a daemon that delivers to remote.test through the
// testbed's DNS to a testbed MTA.
func remoteEnv(t *testing.T, mcfg remotemta.Config, extra string) (*testEnv, *remotemta.MTA) {
	t.Helper()
	dns, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	mcfg.Hostname = "mx.remote.test"
	m, err := remotemta.Start(mcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	dns.Zone("remote.test", dnsserver.Insecure).MX("remote.test.", 10, "mx.remote.test.").A("mx.remote.test.", "127.0.0.1")
	extra = strings.ReplaceAll(extra, "{DNS}", dns.Addr()) // for plugins that need the testbed's DNS
	e := startEnvConfig(t, func(s string) string {
		s = strings.Replace(s, "client_networks = []", `client_networks = ["127.0.0.0/8"]`, 1)
		return s + fmt.Sprintf(`
[dns]
resolver = %q
[testing]
port_map = { "mx.remote.test" = %d }
%s`, dns.Addr(), m.Port(), extra)
	})
	e.dns = dns
	return e, m
}

func TestRemoteDeliveryOverTLS(t *testing.T) {
	e, m := remoteEnv(t, remotemta.Config{Mode: remotemta.STARTTLSSelfSigned}, "")
	c := e.dial(smtpd.MX)
	if err := send(c, "bob@example.test", []string{"friend@remote.test"}, testMessage("out-1")); err != nil {
		t.Fatal(err)
	}
	msgs, err := m.WaitMessages(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !msgs[0].TLS || msgs[0].From != "bob@example.test" || msgs[0].Helo != "mx.example.test" ||
		!strings.Contains(string(msgs[0].Data), "Message-ID: <out-1@example.com>") {
		t.Fatalf("arrived: tls=%v from=%q helo=%q\n%s", msgs[0].TLS, msgs[0].From, msgs[0].Helo, msgs[0].Data)
	}
}

func TestRemoteRejectionBounces(t *testing.T) {
	e, m := remoteEnv(t, remotemta.Config{}, "")
	m.SetRcptReply("gone@remote.test", remotemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "user unknown"})
	c := e.dial(smtpd.MX)
	if err := send(c, "bob@example.test", []string{"gone@remote.test"}, testMessage("out-2")); err != nil {
		t.Fatal(err)
	}
	dsn := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]
	for _, want := range []string{"Action: failed", "Status: 5.1.1", "Remote-MTA: dns; mx.remote.test", "user unknown", "Final-Recipient: rfc822; gone@remote.test"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("bounce lacks %q:\n%s", want, dsn)
		}
	}
}

func TestRemoteTemporaryFailureRetriesAndWarns(t *testing.T) {
	e, m := remoteEnv(t, remotemta.Config{}, "[outbound]\ndelay_warning = \"500ms\"\n")
	// Refuse twice with 451, then accept: the queue retries (backoff 1s,
	// then 2s) and the sender gets one delay warning in between.
	m.SetReply(remotemta.StageRcpt, remotemta.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later", Times: 2})
	c := e.dial(smtpd.MX)
	if err := send(c, "bob@example.test", []string{"slow@remote.test"}, testMessage("out-3")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitMessages(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	warn := e.waitMail("example.test", "bob", 1, 5*time.Second)[0]
	if !strings.Contains(warn, "Action: delayed") || !strings.Contains(warn, "Will-Retry-Until:") {
		t.Errorf("delay warning:\n%s", warn)
	}
	// Once the queue is empty the message has been delivered: no
	// further warning can come.
	waitQueueEmpty(t, e)
	if n := e.mailCount("example.test", "bob"); n != 1 {
		t.Errorf("%d notices to the sender, want exactly one delay warning", n)
	}
}

func TestTLSExplain(t *testing.T) {
	e, m := remoteEnv(t, remotemta.Config{Mode: remotemta.STARTTLSSelfSigned}, "[[tls_policy]]\ndomain = \"pinned.test\"\nlevel = \"secure\"\n")
	z := e.dns.Zone("remote.test", dnsserver.Secure)
	z.TLSA("_25._tcp.mx.remote.test.", 3, 1, 1, dnsserver.TLSAData(m.Certificate().Leaf, 1, 1))
	ex, err := daemon.Explain(e.cfg, "remote.test", "", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if !ex.MXSecure || !ex.TrustAD || len(ex.Hosts) != 1 {
		t.Fatalf("%+v", ex)
	}
	h := ex.Hosts[0]
	if h.Effective.Level.String() != "dane-only" || !h.Effective.DANE || !strings.Contains(h.DANE, "dane: 1 usable TLSA") || !strings.HasPrefix(h.Probe, "ok: TLSv1.3") ||
		!strings.Contains(h.Probe, "verified=dane-usage-3") {
		t.Fatalf("host: %+v", h)
	}
	ex, _ = daemon.Explain(e.cfg, "pinned.test", "", false, false)
	if ex.Policy.Level.String() != "secure" || !strings.Contains(ex.Policy.Source, "policy map entry pinned.test") {
		t.Fatalf("policy map: %+v", ex.Policy)
	}
}

// TestRequireTLSEndToEnd: a message received with REQUIRETLS over TLS is
// delivered only to an MX host that MTA-STS authenticates and that offers
// REQUIRETLS, with the parameter passed on.
func TestRequireTLSEndToEnd(t *testing.T) {
	dns, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	root, err := ca.New("RequireTLS CA")
	if err != nil {
		t.Fatal(err)
	}
	m, err := remotemta.Start(remotemta.Config{Mode: remotemta.STARTTLSValid, Hostname: "mx.remote.test", CA: root, REQUIRETLS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sts, err := tbsts.Start(root)
	if err != nil {
		t.Fatal(err)
	}
	defer sts.Close()
	sts.SetPolicy("remote.test", tbsts.Policy("enforce", 86400, "mx.remote.test"))
	z := dns.Zone("remote.test", dnsserver.Insecure)
	z.MX("remote.test.", 10, "mx.remote.test.").A("mx.remote.test.", "127.0.0.1").A("mta-sts.remote.test.", "127.0.0.1")
	z.TXT("_mta-sts.remote.test.", "v=STSv1; id=1")
	dir := shortTempDir(t)
	caFile, _ := root.WriteCAFile(dir)
	e := startEnvConfig(t, func(s string) string {
		return s + fmt.Sprintf(`
[dns]
resolver = %q
[outbound]
ca_file = %q
[testing]
port_map = { "mx.remote.test" = %d, "mta-sts.remote.test" = %d }
`, dns.Addr(), caFile, m.Port(), sts.Port())
	})
	// Submission as alice (authenticated) with REQUIRETLS to the remote.
	s := e.login()
	if err := s.Mail(testUser, &smtp.MailOptions{RequireTLS: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Rcpt("friend@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	w, _ := s.Data()
	io.WriteString(w, testMessage("rtls-e2e"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := m.WaitMessages(1, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].TLS || !got[0].RequireTLS {
		t.Fatalf("arrived tls=%v requiretls=%v", got[0].TLS, got[0].RequireTLS)
	}
}

// TestPublishOwnMTASTSPolicy: our policy is served for our domains only,
// and our own MTA-STS parser accepts it.
func TestPublishOwnMTASTSPolicy(t *testing.T) {
	e := startEnv(t, "\n[mta_sts]\nserve_address = \"127.0.0.1:0\"\nserve_mode = \"enforce\"\nserve_mx = [\"mx.example.test\", \"*.backup.example.test\"]\n")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool(), ServerName: "mx.example.test"}}}
	get := func(host string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", "https://"+e.d.MTASTSAddr()+"/.well-known/mta-sts.txt", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("mta-sts.example.test")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	p, err := phsts.ParsePolicy([]byte(body))
	if err != nil {
		t.Fatalf("our own policy does not parse: %v\n%s", err, body)
	}
	if p.Mode != phsts.Enforce || !p.Matches("mx.example.test") || !p.Matches("a.backup.example.test") || p.MaxAge != 7*24*time.Hour {
		t.Fatalf("%+v", p)
	}
	if resp, _ := get("mta-sts.someone-else.test"); resp.StatusCode != 404 {
		t.Fatalf("served for a foreign domain: %d", resp.StatusCode)
	}
}
