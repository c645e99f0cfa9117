package interop

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/daemon"
	"github.com/posthorn/posthorn/mta/internal/remote"
	"github.com/posthorn/posthorn/mta/internal/tlsrpt"
	"github.com/posthorn/posthorn/queue"
)

// aliases are the secure aliases of the suite (sender -> level).
type aliases map[string]conf.TLSLevel

func (a aliases) SecureAlias(addr string) (string, conf.TLSLevel, bool) {
	l, ok := a[addr]
	return strings.Replace(addr, "@secure.", "@", 1), l, ok
}

var _ remote.SecureAliases = aliases(nil)

// TestInterop: posthorn's outbound transport, built as the daemon builds
// it ([dns] resolver = Unbound validating Knot's signed zones, MTA-STS
// policies from nginx, DANE on), delivers to real Postfix receivers
// once from an ordinary sender and once from a secure alias at each
// level. The test checks what arrived where and over which TLS (Postfix's
// Received header), what was deferred or bounced, that tls explain says
// the same, and the TLS-RPT reports of the run against RFC 8460's schema.
// Expectations: "D:tls" delivered over TLS, "D:plain" in plaintext, "T"
// deferred, "B" bounced.
func TestInterop(t *testing.T) {
	w := newWorld(t)
	ports := []string{fmt.Sprintf("%q = %d", "mta-sts.sts-valid."+zone, w.nginx)}
	for _, name := range w.ordering {
		d := w.dests[name]
		ports = append(ports, fmt.Sprintf("%q = %d", d.mx(), d.port))
		if d.sts != "" {
			ports = append(ports, fmt.Sprintf("%q = %d", "mta-sts."+d.domain(), w.nginx))
		}
	}
	cfg, err := conf.Parse("interop.toml", []byte(fmt.Sprintf(`
hostname = "out.example.org"
[dns]
resolver = %q
trust_ad = "yes"
[outbound]
ca_file = %q
ipv6 = false
connect_timeout = "5s"
command_timeout = "10s"
connection_reuse_time = "0s"
[dane]
enabled = true
[mta_sts]
enabled = true
cache_dir = %q
[testing]
port_map = { %s }
`, w.unbound, w.caFile, filepath.Join(w.dir, "sts-cache"), strings.Join(ports[1:], ", "))))
	if err != nil {
		t.Fatal(err)
	}
	rpt, err := tlsrpt.New(tlsrpt.Options{Dir: filepath.Join(w.dir, "tls-rpt"), Submitter: "out.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	al := aliases{"enc@secure.example.org": conf.TLSEncrypt, "dane@secure.example.org": conf.TLSDaneOnly, "pin@secure.example.org": conf.TLSVerify}
	tr, err := daemon.NewOutbound(cfg, rpt, al, log)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	columns := []string{"dane-ee", "dane-ta", "tlsa-mismatch", "signed", "tlsa", "sts-valid", "sts-wrongname", "sts-badweb", "sts-missing", "plain", "nostarttls"}
	senders := []struct {
		from string
		want []string
	}{
		{"a@example.org", []string{"D:tls", "D:tls", "T", "T", "T", "D:tls", "T", "D:tls", "D:tls", "D:tls", "D:plain"}},
		{"enc@secure.example.org", []string{"D:tls", "D:tls", "B", "B", "B", "D:tls", "B", "D:tls", "D:tls", "D:tls", "B"}},
		{"dane@secure.example.org", []string{"D:tls", "D:tls", "B", "B", "B", "B", "B", "B", "B", "B", "B"}},
		{"pin@secure.example.org", []string{"B", "B", "B", "B", "B", "B", "B", "B", "B", "B", "B"}},
	}
	wantArrive := map[string]string{} // subject -> "tls" or "plain"
	for _, s := range senders {
		for i, col := range columns {
			d := w.dests[col]
			subject := fmt.Sprintf("interop %s to %s", s.from, col)
			msg := fmt.Sprintf("From: <%s>\r\nTo: <x@%s>\r\nSubject: %s\r\nMessage-ID: <%d.%s@example.org>\r\n\r\nhello\r\n", s.from, d.domain(), subject, i, strings.ReplaceAll(s.from, "@", "."))
			env := &queue.Envelope{ID: fmt.Sprintf("IOP%d", i), From: s.from, Size: int64(len(msg)),
				Recipients: []*queue.Recipient{{Addr: "x@" + d.domain(), State: queue.Pending}}}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out := tr.Deliver(ctx, env, []int{0}, func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(msg)), nil })[0]
			ex := tr.Explain(ctx, d.domain(), s.from, false, false)
			cancel()
			refused := ex.MXError != "" || len(ex.Hosts) == 0 || ex.Hosts[0].Error != ""
			want := s.want[i]
			where := fmt.Sprintf("%s -> %s: want %s, got %s %s %q", s.from, col, want, out.State, out.Status, out.Diagnostic)
			switch want {
			case "D:tls", "D:plain":
				if out.State != queue.Delivered {
					t.Errorf("%s", where)
					continue
				}
				if (want == "D:tls") != !strings.Contains(out.Diagnostic, "(plaintext)") {
					t.Errorf("%s: TLS not as expected", where)
				}
				if refused {
					t.Errorf("%s: delivered, but tls explain refuses: %s %+v", where, ex.MXError, ex.Hosts)
				}
				wantArrive[subject] = want[2:]
			case "T":
				if out.State != queue.Pending {
					t.Errorf("%s", where)
				}
			case "B":
				if out.State != queue.Failed || !strings.HasPrefix(out.Status, "5.") {
					t.Errorf("%s", where)
				}
			}
			if want == "D:tls" && strings.HasPrefix(col, "dane-") && !strings.Contains(out.Diagnostic, "verified=dane-usage-") {
				t.Errorf("%s: not authenticated by DANE", where)
			}
			if want == "D:tls" && col == "sts-valid" && !strings.Contains(out.Diagnostic, "pkix") {
				t.Errorf("%s: not PKIX-verified under MTA-STS", where)
			}
		}
	}
	if t.Failed() {
		return
	}

	// What Postfix received: exactly the deliveries, over the TLS the
	// table says (Postfix's Received header names the TLS version).
	got := map[string]string{}
	waitFor(t, "Postfix delivering every message", 20*time.Second, func() error {
		got = map[string]string{}
		files, _ := filepath.Glob(filepath.Join(w.mailDir, "maildir", "new", "*"))
		for _, f := range files {
			fh, err := os.Open(f)
			if err != nil {
				continue
			}
			m, err := mail.ReadMessage(fh)
			fh.Close()
			if err != nil {
				continue
			}
			how := "plain"
			if strings.Contains(strings.Join(m.Header["Received"], "\n"), "(using TLSv1.") {
				how = "tls"
			}
			got[m.Header.Get("Subject")] = how
		}
		if len(got) < len(wantArrive) {
			return fmt.Errorf("%d of %d arrived", len(got), len(wantArrive))
		}
		return nil
	})
	for subj, how := range wantArrive {
		if got[subj] != how {
			t.Errorf("%q arrived as %q, want %q", subj, got[subj], how)
		}
	}
	for subj := range got {
		if _, ok := wantArrive[subj]; !ok {
			t.Errorf("%q arrived but must not have", subj)
		}
	}

	// The TLS-RPT reports of the run: valid RFC 8460 JSON, with the
	// results this run must have produced.
	rpt.Close()
	day := time.Now().UTC()
	domains, err := rpt.Domains(day)
	if err != nil {
		t.Fatal(err)
	}
	results := map[string][]string{}
	for _, dom := range domains {
		rep, err := rpt.Report(day, dom)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := rep.JSON()
		if err := tlsrpt.ValidateReport(js); err != nil {
			t.Errorf("report for %s: %v\n%s", dom, err, js)
		}
		for _, p := range rep.Policies {
			r := string(p.Policy.PolicyType)
			for _, fd := range p.FailureDetails {
				r += " " + string(fd.ResultType)
				// A session that reached the MX says where it came from.
				if fd.ReceivingIP != "" && fd.SendingMTAIP != "127.0.0.1" {
					t.Errorf("%s: sending-mta-ip %q", dom, fd.SendingMTAIP)
				}
			}
			if p.Summary.TotalSuccessful > 0 {
				r += " ok"
			}
			results[strings.TrimSuffix(dom, "."+zone)] = append(results[strings.TrimSuffix(dom, "."+zone)], r)
		}
	}
	for dom, want := range map[string]string{
		"dane-ee":       "tlsa ok",
		"tlsa-mismatch": "tlsa tlsa-invalid",
		"tlsa.badsig":   "tlsa dnssec-invalid",
		"sts-valid":     "sts ok",
		"sts-wrongname": "sts certificate-host-mismatch",
		"sts-badweb":    "sts sts-webpki-invalid",
		"sts-missing":   "sts sts-policy-fetch-error",
	} {
		if !strings.Contains(strings.Join(results[dom], "; "), want) {
			t.Errorf("TLS-RPT for %s: %q, want %q", dom, results[dom], want)
		}
	}
}
