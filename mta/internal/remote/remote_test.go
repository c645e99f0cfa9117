package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/delivery"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// net is a small fake internet: one DNS server, one CA, remote MTAs.
type fakeNet struct {
	t    *testing.T
	dns  *dnsserver.Server
	ca   *ca.CA
	dir  string
	mtas map[string]*remotemta.MTA // by host name
}

func newNet(t *testing.T) *fakeNet {
	t.Helper()
	d, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c, err := ca.New("Remote Test CA")
	if err != nil {
		t.Fatal(err)
	}
	return &fakeNet{t: t, dns: d, ca: c, dir: t.TempDir(), mtas: map[string]*remotemta.MTA{}}
}

// mx starts a remote MTA called host, serving domain as its MX at pref,
// and publishes the MX and A records.
func (n *fakeNet) mx(domain, host string, pref uint16, cfg remotemta.Config) *remotemta.MTA {
	n.t.Helper()
	cfg.Hostname = host
	if cfg.CA == nil {
		cfg.CA = n.ca
	}
	m, err := remotemta.Start(cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { m.Close() })
	z := n.dns.Zone(domain, dnsserver.Insecure)
	z.MX(domain+".", pref, host+".")
	n.dns.Zone(host, dnsserver.Insecure).A(host+".", "127.0.0.1")
	n.mtas[host] = m
	return m
}

// transport builds a remote transport for a config snippet; the port map
// points every started MTA's host name at its port.
func (n *fakeNet) transport(extra string) *Transport {
	n.t.Helper()
	return n.transportWith("", extra)
}

// transportWith also takes extra [outbound] keys.
func (n *fakeNet) transportWith(outbound, extra string) *Transport {
	n.t.Helper()
	caFile, err := n.ca.WriteCAFile(n.dir)
	if err != nil {
		n.t.Fatal(err)
	}
	var pm []string
	for h, m := range n.mtas {
		pm = append(pm, fmt.Sprintf("%q = %d", h, m.Port()))
	}
	cfgText := fmt.Sprintf(`
hostname = "out.example.test"
[outbound]
ca_file = %q
connect_timeout = "2s"
command_timeout = "5s"
connection_reuse_time = "2s"
%s
[testing]
port_map = { %s }
%s`, caFile, outbound, strings.Join(pm, ", "), extra)
	cfg, err := conf.Parse("test.toml", []byte(cfgText))
	if err != nil {
		n.t.Fatal(err)
	}
	res, err := resolver.New(resolver.Options{Server: n.dns.Addr(), Timeout: 2 * time.Second, TrustAD: true})
	if err != nil {
		n.t.Fatal(err)
	}
	tr, err := New(cfg, res, slog.New(slog.NewTextHandler(testWriter{n.t}, nil)))
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(tr.Close)
	return tr
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

const plainMsg = "From: a@example.test\r\nTo: x@dest.test\r\nSubject: hi\r\nMessage-ID: <m@example.test>\r\n\r\nhello\r\n"

func deliver(t *testing.T, tr *Transport, env *queue.Envelope, msg string) map[int]delivery.Outcome {
	t.Helper()
	env.Size = int64(len(msg))
	if env.ID == "" {
		env.ID = "TESTID"
	}
	var idx []int
	for i := range env.Recipients {
		idx = append(idx, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return tr.Deliver(ctx, env, idx, func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(msg)), nil })
}

func env1(to ...string) *queue.Envelope {
	e := &queue.Envelope{From: "a@example.test"}
	for _, a := range to {
		e.Recipients = append(e.Recipients, &queue.Recipient{Addr: a, State: queue.Pending})
	}
	return e
}

// TestTLSLevels delivers at each level to each kind of remote server and
// checks what arrived and over what. A "-" means nothing may arrive and the
// recipient stays deferred with the given status.
func TestTLSLevels(t *testing.T) {
	type want struct {
		delivered bool
		tls       bool
		status    string
	}
	modes := []remotemta.Mode{remotemta.NoSTARTTLS, remotemta.STARTTLSSelfSigned, remotemta.STARTTLSValid,
		remotemta.STARTTLSWrongName, remotemta.STARTTLSBroken}
	table := map[string][]want{
		//              none-tls            self-signed          valid                wrong-name           broken handshake
		"none":    {{true, false, ""}, {true, false, ""}, {true, false, ""}, {true, false, ""}, {true, false, ""}},
		"may":     {{true, false, ""}, {true, true, ""}, {true, true, ""}, {true, true, ""}, {true, false, ""}},
		"dane":    {{true, false, ""}, {true, true, ""}, {true, true, ""}, {true, true, ""}, {true, false, ""}},
		"encrypt": {{false, false, "4.7.4"}, {true, true, ""}, {true, true, ""}, {true, true, ""}, {false, false, "4.7.5"}},
		// Insecure zone: no DANE, so dane-only never delivers.
		"dane-only": {{false, false, "4.7.5"}, {false, false, "4.7.5"}, {false, false, "4.7.5"}, {false, false, "4.7.5"}, {false, false, "4.7.5"}},
		"verify":    {{false, false, "4.7.4"}, {false, false, "4.7.5"}, {true, true, ""}, {false, false, "4.7.5"}, {false, false, "4.7.5"}},
		"secure":    {{false, false, "4.7.4"}, {false, false, "4.7.5"}, {true, true, ""}, {false, false, "4.7.5"}, {false, false, "4.7.5"}},
	}
	for level, wants := range table {
		for i, mode := range modes {
			t.Run(level+"/"+mode.String(), func(t *testing.T) {
				n := newNet(t)
				m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{Mode: mode})
				tr := n.transport(fmt.Sprintf("[[tls_policy]]\ndomain = \"dest.test\"\nlevel = %q\n", level))
				out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
				w := wants[i]
				msgs := m.Messages()
				if !w.delivered {
					if len(msgs) != 0 {
						t.Fatalf("message arrived, but level %s must refuse %s", level, mode)
					}
					if out.State != queue.Pending || out.Status != w.status {
						t.Fatalf("want deferred %s, got %+v", w.status, out)
					}
					return
				}
				if out.State != queue.Delivered || len(msgs) != 1 {
					t.Fatalf("want delivered, got %+v (%d arrived)", out, len(msgs))
				}
				if msgs[0].TLS != w.tls {
					t.Fatalf("TLS = %v, want %v", msgs[0].TLS, w.tls)
				}
				if w.tls && msgs[0].ServerName != "mx.dest.test" {
					t.Errorf("SNI %q", msgs[0].ServerName)
				}
			})
		}
	}
}

func TestSecureMatchesNexthopNotMXName(t *testing.T) {
	n := newNet(t)
	// The MX host is in another domain: its certificate is valid for the
	// MX name (verify passes) but not for dest.test (secure refuses).
	n.mx("dest.test", "mx.hoster.test", 10, remotemta.Config{Mode: remotemta.STARTTLSValid})
	for level, ok := range map[string]bool{"verify": true, "secure": false} {
		tr := n.transport(fmt.Sprintf("[[tls_policy]]\ndomain = \"dest.test\"\nlevel = %q\n", level))
		out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
		if (out.State == queue.Delivered) != ok {
			t.Errorf("%s: %+v", level, out)
		}
	}
	// With an explicit match list naming the MX host, secure passes too.
	tr := n.transport("[[tls_policy]]\ndomain = \"dest.test\"\nlevel = \"secure\"\nmatch = [\"mx.hoster.test\"]\n")
	if out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]; out.State != queue.Delivered {
		t.Errorf("secure with match: %+v", out)
	}
}

func TestFingerprint(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{Mode: remotemta.STARTTLSSelfSigned})
	leaf := m.Certificate().Leaf
	if leaf == nil {
		t.Fatal("no leaf")
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	cert := sha256.Sum256(leaf.Raw)
	for name, c := range map[string]struct {
		fp string
		ok bool
	}{
		"spki":  {hex.EncodeToString(spki[:]), true},
		"cert":  {colonHex(cert[:]), true},
		"wrong": {strings.Repeat("ab", 32), false},
	} {
		tr := n.transport(fmt.Sprintf("[[tls_policy]]\ndomain = \"dest.test\"\nlevel = \"fingerprint\"\nfingerprints = [%q]\n", c.fp))
		out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
		if (out.State == queue.Delivered) != c.ok {
			t.Errorf("%s: %+v", name, out)
		}
	}
}

func colonHex(b []byte) string {
	var s []string
	for _, x := range b {
		s = append(s, fmt.Sprintf("%02X", x))
	}
	return strings.Join(s, ":")
}

func TestMXFallbackAndRouting(t *testing.T) {
	n := newNet(t)
	// MX 10 answers every connection with 421; MX 20 works.
	bad := n.mx("dest.test", "mx1.dest.test", 10, remotemta.Config{Replies: map[remotemta.Stage]remotemta.Reply{
		remotemta.StageConnect: {Code: 421, Enhanced: "4.3.2", Text: "busy"}}})
	good := n.mx("dest.test", "mx2.dest.test", 20, remotemta.Config{})
	// Null MX, nonexistent domain, implicit MX (A record only).
	n.dns.Zone("null.test", dnsserver.Insecure).NullMX("null.test.")
	n.dns.Zone("nx.test", dnsserver.Insecure)
	imp := n.mx("other.test", "implicit.test", 10, remotemta.Config{})
	n.dns.Zone("implicit.test", dnsserver.Insecure).Remove("implicit.test.", 15 /* MX */)
	tr := n.transport("")
	out := deliver(t, tr, env1("x@dest.test", "y@null.test", "z@missing.nx.test", "w@implicit.test"), plainMsg)
	if out[0].State != queue.Delivered || len(good.Messages()) != 1 || len(bad.Messages()) != 0 {
		t.Errorf("fallback to MX 20: %+v", out[0])
	}
	if out[1].State != queue.Failed || out[1].Status != "5.1.10" {
		t.Errorf("null MX: %+v", out[1])
	}
	if out[2].State != queue.Failed || out[2].Status != "5.1.2" {
		t.Errorf("NXDOMAIN: %+v", out[2])
	}
	if out[3].State != queue.Delivered || len(imp.Messages()) != 1 {
		t.Errorf("implicit MX: %+v", out[3])
	}
}

func TestOrderMX(t *testing.T) {
	mxs := []*struct {
		h string
		p uint16
	}{{"c", 20}, {"a", 10}, {"b", 10}, {".", 5}}
	in := make([]*net.MX, 0)
	for _, m := range mxs {
		in = append(in, &net.MX{Host: m.h, Pref: m.p})
	}
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		out := OrderMX(in, func(n int) int { return (i * 7) % n })
		if len(out) != 3 || out[2].host != "c" {
			t.Fatalf("order %v", out)
		}
		seen[out[0].host] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("equal preferences not shuffled: %v", seen)
	}
}

func TestPerRecipientReplies(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{})
	m.SetRcptReply("gone@dest.test", remotemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"})
	m.SetRcptReply("full@dest.test", remotemta.Reply{Code: 452, Enhanced: "4.2.2", Text: "mailbox full"})
	tr := n.transport("")
	out := deliver(t, tr, env1("ok@dest.test", "gone@dest.test", "full@dest.test"), plainMsg)
	if out[0].State != queue.Delivered || out[1].State != queue.Failed || out[1].Status != "5.1.1" ||
		out[2].State != queue.Pending || out[2].Status != "4.2.2" {
		t.Fatalf("outcomes %+v", out)
	}
	if !strings.Contains(out[1].Diagnostic, "smtp; 550 5.1.1 no such user") || out[1].RemoteMTA != "mx.dest.test" {
		t.Errorf("diagnostic %+v", out[1])
	}
	if got := m.Messages()[0].To(); len(got) != 1 || got[0] != "ok@dest.test" {
		t.Errorf("arrived for %v", got)
	}
	// A 5xx after DATA fails every accepted recipient; a 4xx defers them.
	m.SetReply(remotemta.StageData, remotemta.Reply{Code: 554, Enhanced: "5.7.1", Text: "spam", Times: 1})
	if out := deliver(t, tr, env1("ok@dest.test"), plainMsg)[0]; out.State != queue.Failed || out.Status != "5.7.1" {
		t.Errorf("DATA 554: %+v", out)
	}
	m.SetReply(remotemta.StageData, remotemta.Reply{Code: 451, Enhanced: "4.3.0", Text: "later", Times: 1})
	if out := deliver(t, tr, env1("ok@dest.test"), plainMsg)[0]; out.State != queue.Pending || out.Status != "4.3.0" {
		t.Errorf("DATA 451: %+v", out)
	}
}

func TestSizeUTF8And8BitMIME(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{SizeLimit: 100, No8BITMIME: true})
	tr := n.transport("")
	// Too big for the remote: bounced without sending.
	out := deliver(t, tr, env1("x@dest.test"), plainMsg+strings.Repeat("x", 200)+"\r\n")[0]
	if out.State != queue.Failed || out.Status != "5.3.4" || len(m.Messages()) != 0 {
		t.Fatalf("SIZE: %+v", out)
	}
	// SMTPUTF8 needed, not offered: bounced.
	e := env1("x@dest.test")
	e.SMTPUTF8 = true
	if out := deliver(t, tr, e, "Subject: x\r\n\r\nx\r\n")[0]; out.State != queue.Failed || out.Status != "5.6.7" {
		t.Fatalf("SMTPUTF8: %+v", out)
	}

	// 8-bit body to a server without 8BITMIME: converted to
	// quoted-printable, 7-bit clean, same text once decoded.
	m2 := n.mx("eight.test", "mx.eight.test", 10, remotemta.Config{No8BITMIME: true})
	tr = n.transport("")
	msg := "From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n--b1\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n\r\nplain part\r\n--b1--\r\n"
	e = env1("x@eight.test")
	e.BodyType = "8BITMIME"
	if out := deliver(t, tr, e, msg)[0]; out.State != queue.Delivered {
		t.Fatalf("8bit: %+v", out)
	}
	got := m2.Messages()[0]
	for _, b := range got.Data {
		if b >= 0x80 {
			t.Fatalf("8-bit byte sent to a 7-bit server:\n%s", got.Data)
		}
	}
	if got.Body == "8BITMIME" {
		t.Error("BODY=8BITMIME sent to a server without 8BITMIME")
	}
	if !bytes.Contains(got.Data, []byte("Content-Transfer-Encoding: quoted-printable")) || !bytes.Contains(got.Data, []byte("Gr=C3=BC=C3=9Fe aus K=C3=B6ln")) ||
		!bytes.Contains(got.Data, []byte("plain part")) {
		t.Errorf("converted message:\n%s", got.Data)
	}
}

func TestDSNParametersPassedOn(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{DSN: true})
	tr := n.transport("")
	e := env1("x@dest.test")
	e.Ret, e.EnvID = "HDRS", "env-7"
	e.Recipients[0].Notify = []string{"SUCCESS", "FAILURE"}
	e.Recipients[0].ORcpt = "rfc822;orig@example.test"
	out := deliver(t, tr, e, plainMsg)[0]
	if out.State != queue.Delivered || !out.DSNPassedOn {
		t.Fatalf("%+v", out)
	}
	got := m.Messages()[0]
	if got.Ret != "HDRS" || got.EnvID != "env-7" || !strings.EqualFold(got.Rcpts[0].ORcpt, "rfc822;orig@example.test") ||
		strings.Join(got.Rcpts[0].Notify, ",") != "SUCCESS,FAILURE" {
		t.Errorf("DSN parameters: %+v %+v", got, got.Rcpts[0])
	}
	// Without DSN at the remote, the success notice stays our duty.
	m2 := n.mx("nodsn.test", "mx.nodsn.test", 10, remotemta.Config{})
	tr = n.transport("")
	if out := deliver(t, tr, env1("x@nodsn.test"), plainMsg)[0]; out.DSNPassedOn || len(m2.Messages()) != 1 {
		t.Errorf("no-DSN remote: %+v", out)
	}
}

func TestConnectionReuse(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{Mode: remotemta.STARTTLSSelfSigned})
	tr := n.transport("")
	for i := 0; i < 3; i++ {
		if out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]; out.State != queue.Delivered {
			t.Fatal(out)
		}
	}
	if c := m.Connections(); len(c) != 1 {
		t.Fatalf("3 messages used %d connections, want 1", len(c))
	}
	msgs := m.Messages()
	if msgs[2].Seq != 3 || !msgs[2].TLS {
		t.Errorf("third message: seq %d tls %v", msgs[2].Seq, msgs[2].TLS)
	}
}

func TestSmarthostWithAuthAndDiscard(t *testing.T) {
	n := newNet(t)
	relay, err := remotemta.Start(remotemta.Config{Mode: remotemta.STARTTLSValid, Hostname: "relay.isp.test", CA: n.ca,
		AuthUser: "gw@example.test", AuthPassword: "relay-secret", AuthRequired: true})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	n.dns.Zone("relay.isp.test", dnsserver.Insecure).A("relay.isp.test.", "127.0.0.1")
	pw := filepath.Join(n.dir, "relay.pass")
	os.WriteFile(pw, []byte("relay-secret\n"), 0o600)
	tr := n.transport(fmt.Sprintf(`
[[transport]]
domain = "*"
kind = "smarthost"
host = "relay.isp.test:%d"
auth_user = "gw@example.test"
auth_password_file = %q
tls_level = "verify"

[[transport]]
domain = "blackhole.test"
kind = "discard"
`, relay.Port(), pw))
	out := deliver(t, tr, env1("x@anywhere.example", "y@blackhole.test"), plainMsg)
	if out[0].State != queue.Delivered || out[1].State != queue.Delivered {
		t.Fatalf("%+v", out)
	}
	msgs := relay.Messages()
	if len(msgs) != 1 || msgs[0].AuthUser != "gw@example.test" || !msgs[0].TLS || len(msgs[0].Rcpts) != 1 {
		t.Fatalf("relay got %+v", msgs)
	}
}

// TestWithoutPipelining runs the per-recipient and DSN cases against a
// server that does not offer PIPELINING (commands one at a time).
func TestWithoutPipelining(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{NoPIPELINING: true, DSN: true})
	m.SetRcptReply("gone@dest.test", remotemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"})
	tr := n.transport("")
	e := env1("ok@dest.test", "gone@dest.test")
	e.Ret, e.EnvID = "HDRS", "env 8"
	e.Recipients[0].Notify = []string{"SUCCESS"}
	out := deliver(t, tr, e, plainMsg)
	if out[0].State != queue.Delivered || out[1].State != queue.Failed || out[1].Status != "5.1.1" {
		t.Fatalf("%+v", out)
	}
	got := m.Messages()[0]
	if got.EnvID != "env 8" || got.Ret != "HDRS" || strings.Join(got.Rcpts[0].Notify, ",") != "SUCCESS" {
		t.Fatalf("%+v", got)
	}
}

// TestPipelinedEnvIDIsXtext: ENVID with a space or "+" goes as xtext.
func TestPipelinedEnvIDIsXtext(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{DSN: true})
	tr := n.transport("")
	e := env1("ok@dest.test")
	e.EnvID = "a b+c"
	if out := deliver(t, tr, e, plainMsg)[0]; out.State != queue.Delivered {
		t.Fatal(out)
	}
	if got := m.Messages()[0]; got.EnvID != "a b+c" {
		t.Fatalf("ENVID %q params %v", got.EnvID, got.MailParams)
	}
}

// TestPerDomainRate: per_domain_rate = 120 a minute spaces deliveries to
// one domain half a second apart.
func TestPerDomainRate(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{})
	tr := n.transportWith("per_domain_rate = 120", "")
	start := time.Now()
	for i := 0; i < 3; i++ {
		if out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]; out.State != queue.Delivered {
			t.Fatal(out)
		}
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("3 messages at 120/min took only %s", d)
	}
	if len(m.Messages()) != 3 {
		t.Fatal(len(m.Messages()))
	}
}

// TestMaildirTransport: kind "maildir" writes a domain's mail into
// HOST/LOCALPART, a Maildir per recipient.
func TestMaildirTransport(t *testing.T) {
	n := newNet(t)
	dir := filepath.Join(n.dir, "out")
	tr := n.transport(fmt.Sprintf("[[transport]]\ndomain = \"partner.example\"\nkind = \"maildir\"\nhost = %q\n", dir))
	out := deliver(t, tr, env1("Friend@partner.example", "other@partner.example"), plainMsg)
	if out[0].State != queue.Delivered || out[1].State != queue.Delivered {
		t.Fatalf("%+v", out)
	}
	for _, box := range []string{"friend", "other"} {
		files, _ := filepath.Glob(filepath.Join(dir, box, "new", "*"))
		if len(files) != 1 {
			t.Fatalf("%s: %d files", box, len(files))
		}
		b, _ := os.ReadFile(files[0])
		if !strings.Contains(string(b), "Message-ID: <m@example.test>") || !strings.Contains(string(b), "Delivered-To: ") {
			t.Fatalf("%s", b)
		}
	}
}
