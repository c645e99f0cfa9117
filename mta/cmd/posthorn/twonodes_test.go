package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/database"
	"github.com/posthorn/posthorn/mta/internal/tlsrpt"
	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	"github.com/posthorn/posthorn/testbed/pgtest"
	"github.com/posthorn/posthorn/testbed/remotemta"
	"github.com/posthorn/posthorn/testbed/wait"
)

// TestTwoNodesOnePostgres is issue 16's cluster test: two `posthorn serve`
// processes, each with its own queue, spool, plugin data and ports,
// sharing one real PostgreSQL ([database] and [directory] kind =
// "postgres"), driven only through SMTP, HTTP and the admin API:
//
//   - mail diverted to the web mailbox through node A is activated and
//     read after a login on node B; the session cookie B set is valid on
//     A; the reply written on B leaves through B's queue;
//   - a partner's certificate harvested from signed mail on A encrypts
//     the next mail to the partner sent through B;
//   - a secure-alias opt-in made through A's admin API is enforced on B;
//   - the periodic jobs run once, not once per node: yesterday's TLS
//     report is mailed once, the web mailbox's housekeeping runs on one
//     node;
//   - SIGKILL of A under load loses no acknowledged message (on either
//     node), and B keeps serving the web mailbox meanwhile.
func TestTwoNodesOnePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two daemons, their plugins and PostgreSQL")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (.ci/run installs it): it signs the partner's mail")
	}
	t0 := time.Now()
	step := func(what string) { t.Logf("%5.1fs %s", time.Since(t0).Seconds(), what) }
	pg := pgtest.Start(t) // skips without PostgreSQL
	db := pg.NewDatabase(t)
	shared := t.TempDir()
	bins := buildPlugins(t, shared, "webmailbox", "notify", "smime") // and posthorn
	step("PostgreSQL started, binaries built")

	// The Internet: a DNS server and the partner's MTA, which also takes
	// TLS reports.
	dns, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	remote, err := remotemta.Start(remotemta.Config{Hostname: "mx.remote.test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remote.Close() })
	dns.Zone("remote.test", dnsserver.Insecure).MX("remote.test.", 10, "mx.remote.test.").A("mx.remote.test.", "127.0.0.1").
		TXT("_smtp._tls.remote.test.", "v=TLSRPTv1; rua=mailto:tlsrpt@remote.test")

	// What every node gets alike: the TLS certificate, the password
	// file, the web mailbox's master key, the S/MIME trust store.
	pki, err := ca.New("Posthorn Cluster Test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.Issue("mx.example.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.WriteKeyPair(shared, "mx", cert)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS := &tls.Config{RootCAs: pki.Pool(), ServerName: "mx.example.test"}
	masterKey := filepath.Join(shared, "master.key")
	if err := os.WriteFile(masterKey, []byte(base64.StdEncoding.EncodeToString(randomBytes(32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	partners, err := ca.New("Partner Mail CA")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := partners.WriteCAFile(shared)
	if err != nil {
		t.Fatal(err)
	}
	bobCert, err := partners.IssueWith(ca.LeafOptions{RSA: true}, "bob@remote.test")
	if err != nil {
		t.Fatal(err)
	}
	bobCrt, bobKey, err := ca.WriteKeyPair(shared, "bob", bobCert)
	if err != nil {
		t.Fatal(err)
	}
	const token = "the portal's token"
	sum := sha256.Sum256([]byte(token))

	// Yesterday one node delivered to remote.test: its attempt is in the
	// shared database, and today's first node to start reports it.
	yesterday := time.Now().UTC().AddDate(0, 0, -1)
	seedTLSAttempts(t, db, yesterday, "remote.test")

	nodes := map[string]*node{}
	for _, name := range []string{"a", "b"} {
		nodes[name] = newNode(t, name, fmt.Sprintf(`
[tls]
cert_file = %q
key_file = %q
[dns]
resolver = %q
[testing]
port_map = { "mx.remote.test" = %d }
[directory]
kind = "postgres"
[database]
dsn = %q
max_conns = 8
[secure_alias]
subdomain = "secure"
level = "encrypt"
users = []
[admin]
address = "{ADMIN}"
[[admin.token]]
name = "portal"
sha256 = %q
scopes = ["*"]
[tls_rpt]
enabled = true

[[plugin]]
name = "notify"
path = %q
[plugin.config]
from = "notices@example.test"

[[plugin]]
name = "webmailbox"
path = %q
timeout = "60s"
[plugin.config]
base_url = "http://mailbox.example.test"
listen = "{WEB}"
master_key_file = %q
allowed_recipients = ["*@example.test"]
reset_mode = "question"
kdf = { time = 1, memory_kib = 8192, threads = 1 }

[[plugin]]
name = "smime"
path = %q
[plugin.config]
trust_store = %q
internal_domains = ["example.test"]

[[encryption.rule]]
senders = ["alice@example.test"]
recipients = ["friend@remote.test"]
encrypt = "required"
methods = ["webmailbox"]

[[encryption.rule]]
recipients = ["bob@remote.test"]
encrypt = "opportunistic"
methods = ["smime"]
`, certFile, keyFile, dns.Addr(), remote.Port(), db.DSN, hex.EncodeToString(sum[:]),
			bins["notify"], bins["webmailbox"], masterKey, bins["smime"], trust))
	}
	a, b := nodes["a"], nodes["b"]
	step("starting both nodes")
	// Both start at once: they migrate one after the other and race
	// for the day's jobs.
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.start() }()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, n := range nodes {
		n.waitListening(n.web, 30*time.Second)
	}

	step("both nodes serve")
	// The provider's portal sets up the domain on node A.
	admin := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS}}
	api := func(n *node, method, path, body string) {
		t.Helper()
		req, _ := http.NewRequest(method, "https://"+n.admin+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := admin.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s on node %s: %d %s", method, path, n.name, resp.StatusCode, msg)
		}
	}
	api(a, "PUT", "/v1/domains/example.test", `{}`)
	for _, m := range []string{"postmaster", "carol"} {
		api(a, "PUT", "/v1/mailboxes/"+m+"@example.test", `{}`)
	}
	api(a, "PUT", "/v1/mailboxes/alice@example.test", `{"password":"correct horse"}`)

	{
		step("web mailbox: diverted on A, activated and read on B, reply through B")
		s := submit(t, a, clientTLS)
		if err := s.SendMail("alice@example.test", []string{"friend@remote.test"}, strings.NewReader(
			"From: alice@example.test\r\nTo: friend@remote.test\r\nSubject: the contract\r\nMessage-ID: <contract@example.test>\r\n\r\nConfidential terms.\r\n")); err != nil {
			t.Fatal(err)
		}
		note := waitRemote(t, remote, "friend@remote.test", "webmailbox.activation")
		if strings.Contains(note, "Confidential terms.") {
			t.Fatalf("the protected mail itself went out:\n%s", note)
		}
		link := regexp.MustCompile(`http://mailbox\.example\.test(/activate\?t=[A-Za-z0-9_-]+)`).FindStringSubmatch(note)
		if link == nil {
			t.Fatalf("no activation link in:\n%s", note)
		}
		// The recipient's browser reaches node B (the load balancer's choice).
		br := &webClient{t: t, cookies: map[string]string{}}
		r := br.get(b, link[1])
		form := url.Values{"csrf": {csrfOf(t, r)}, "t": {strings.TrimPrefix(link[1], "/activate?t=")}, "language": {"en"},
			"password": {"friend's password"}, "password2": {"friend's password"}, "question": {"First pet?"}, "answer": {"Rex the Dog"}}
		if r := br.post(b, "/activate", form); r.code != 303 {
			t.Fatalf("activation on B: %d %s", r.code, r.body)
		}
		login := func(n *node) {
			t.Helper()
			r := br.get(n, "/login")
			if r := br.post(n, "/login", url.Values{"csrf": {csrfOf(t, r)}, "address": {"friend@remote.test"}, "password": {"friend's password"}}); r.code != 303 {
				t.Fatalf("login on %s: %d %s", n.name, r.code, r.body)
			}
		}
		login(b)
		inbox := br.get(b, "/inbox")
		id := regexp.MustCompile(`href="/msg/(\d+)"`).FindStringSubmatch(inbox.body)
		if inbox.code != 200 || id == nil {
			t.Fatalf("inbox on B: %d %s", inbox.code, inbox.body)
		}
		if r := br.get(b, "/msg/"+id[1]); r.code != 200 || !strings.Contains(r.body, "Confidential terms.") {
			t.Fatalf("message on B: %d %s", r.code, r.body)
		}
		// The cookie B set opens the mailbox on A too.
		if r := br.get(a, "/msg/"+id[1]); r.code != 200 || !strings.Contains(r.body, "Confidential terms.") {
			t.Fatalf("B's session on A: %d %s", r.code, r.body)
		}
		// The reply is written on B and leaves through B's queue: it is
		// delivered to alice's mailbox on B.
		r = br.get(b, "/compose?reply="+id[1])
		nonce := regexp.MustCompile(`name="nonce" value="([^"]+)"`).FindStringSubmatch(r.body)
		if nonce == nil {
			t.Fatalf("reply form on B: %d %s", r.code, r.body)
		}
		if r := br.post(b, "/send", url.Values{"csrf": {csrfOf(t, r)}, "nonce": {nonce[1]}, "reply": {id[1]}, "to": {"alice@example.test"},
			"subject": {"Re: the contract"}, "body": {"Received, thanks."}}); r.code != 303 {
			t.Fatalf("reply on B: %d %s", r.code, r.body)
		}
		got := b.waitMail(t, "alice", func(m string) bool { return strings.Contains(m, "Received, thanks.") })
		if !strings.Contains(got, "In-Reply-To: <contract@example.test>") {
			t.Errorf("the reply:\n%s", got)
		}
		if n := len(a.mails(t, "alice")); n != 0 {
			t.Errorf("%d mails in alice's mailbox on A: the reply did not stay on B", n)
		}
		a.browser, b.browser = br, br
	}

	{
		step("S/MIME: harvested on A, used on B")
		entity := filepath.Join(shared, "entity.txt")
		os.WriteFile(entity, []byte("Content-Type: text/plain\r\n\r\nHello Carol, here is my certificate.\r\n"), 0o600)
		signed, err := exec.Command("openssl", "cms", "-sign", "-in", entity, "-signer", bobCrt, "-inkey", bobKey,
			"-from", "bob@remote.test", "-to", "carol@example.test", "-subject", "signed").Output()
		if err != nil {
			t.Fatal(err)
		}
		c, err := smtp.Dial(a.mx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		crlf := strings.ReplaceAll(strings.ReplaceAll(string(signed), "\r\n", "\n"), "\n", "\r\n")
		if err := c.SendMail("bob@remote.test", []string{"carol@example.test"}, strings.NewReader(crlf)); err != nil {
			t.Fatal(err)
		}
		if got := a.waitMail(t, "carol", func(m string) bool { return strings.Contains(m, "here is my certificate") }); !strings.Contains(got, "signature=valid") {
			t.Fatalf("no verified-signature header on the signed mail:\n%s", got)
		}
		s := submit(t, b, clientTLS)
		if err := s.SendMail("alice@example.test", []string{"bob@remote.test"}, strings.NewReader(
			"From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: figures\r\n\r\nThe figures, encrypted.\r\n")); err != nil {
			t.Fatal(err)
		}
		data := waitRemote(t, remote, "bob@remote.test", "")
		if !strings.Contains(data, "application/pkcs7-mime") || strings.Contains(data, "The figures, encrypted.") {
			t.Fatalf("not encrypted on B:\n%s", data)
		}
		dec := exec.Command("openssl", "cms", "-decrypt", "-recip", bobCrt, "-inkey", bobKey)
		dec.Stdin = strings.NewReader(data)
		if out, err := dec.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("The figures, encrypted.")) {
			t.Fatalf("bob decrypts: %v\n%s", err, out)
		}
	}

	{
		step("secure alias: opt-in on A enforced on B")
		rcpt := func(n *node, starttls bool) error {
			t.Helper()
			var c *smtp.Client
			var err error
			if starttls {
				c, err = smtp.DialStartTLS(n.mx, clientTLS)
			} else {
				c, err = smtp.Dial(n.mx)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Mail("someone@remote.test", nil); err != nil {
				t.Fatal(err)
			}
			return c.Rcpt("carol@secure.example.test", nil)
		}
		if err := rcpt(b, true); smtpCode(err) != 550 {
			t.Fatalf("before the opt-in, on B: %v, want 550", err)
		}
		api(a, "PUT", "/v1/addresses/carol@example.test/secure-alias", `{"enabled":true}`)
		// B learns of it by the directory's NOTIFY (its cache held the
		// "no" from above).
		wait.For(t, 10*time.Second, "B accepts the secure alias", func() bool { return rcpt(b, true) == nil })
		if err := rcpt(b, false); smtpCode(err) != 530 {
			t.Fatalf("secure alias without TLS on B: %v, want 530", err)
		}
	}

	var aBefore string // A's log before the kill
	{
		step("SIGKILL of A under load")
		var acked sync.Map // Message-ID -> node
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < 6; w++ {
			n := []*node{a, b}[w%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				var c *smtpConn
				for i := 0; ; i++ {
					select {
					case <-stop:
						if c != nil {
							c.c.Close()
						}
						return
					default:
					}
					if c == nil {
						var err error
						if c, err = dialSMTP(n.mx); err != nil {
							time.Sleep(10 * time.Millisecond) // A is down: try again
							continue
						}
					}
					id := fmt.Sprintf("load-%s-%d-%d@test", n.name, w, i)
					if err := c.send("carol@example.test", id); err != nil {
						c.c.Close()
						c = nil
						continue
					}
					acked.Store(id, n.name)
				}
			}()
		}
		count := func(node string) int {
			k := 0
			acked.Range(func(_, v any) bool {
				if v == node {
					k++
				}
				return true
			})
			return k
		}
		wait.For(t, 30*time.Second, "load on both nodes", func() bool { return count("a") >= 20 && count("b") >= 20 })
		a.kill()
		step("A killed")
		beforeB := count("b")
		// B goes on taking mail and serving the web mailbox.
		wait.For(t, 30*time.Second, "B takes mail while A is dead", func() bool { return count("b") >= beforeB+20 })
		if r := b.browser.get(b, "/inbox"); r.code != 200 || !strings.Contains(r.body, "the contract") {
			t.Errorf("web mailbox on B with A dead: %d %s", r.code, r.body)
		}
		close(stop)
		wg.Wait()
		// A comes back (once its plugins, orphaned by the kill, are gone)
		// and delivers what it acknowledged.
		a.waitFree(a.web, 10*time.Second)
		aBefore = a.logText()
		a.start()
		step("A restarted")
		deadline := time.Now().Add(60 * time.Second)
		for {
			seen := map[string]int{}
			for _, n := range nodes {
				for id, k := range messageIDs(t, filepath.Join(n.dir, "mail", "example.test", "carol")) {
					seen[id] += k
				}
			}
			missing, dup := 0, ""
			acked.Range(func(k, _ any) bool {
				switch seen[k.(string)] {
				case 0:
					missing++
				case 1:
				default:
					dup = k.(string)
				}
				return true
			})
			if dup != "" {
				t.Fatalf("%s delivered %d times", dup, seen[dup])
			}
			if missing == 0 {
				t.Logf("acknowledged: %d by A, %d by B; all delivered once", count("a"), count("b"))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d acknowledged messages not delivered\nA:\n%s", missing, a.logText())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	{
		step("periodic jobs ran once")
		// Every node started (A twice) and tried yesterday's TLS reports
		// and the web mailbox's housekeeping at start.
		reports := func() int {
			k := 0
			for _, m := range remote.Messages() {
				if m.To()[0] == "tlsrpt@remote.test" {
					k++
				}
			}
			return k
		}
		wait.For(t, 30*time.Second, "yesterday's TLS report", func() bool { return reports() > 0 })
		if reports := reports(); reports != 1 {
			t.Errorf("%d TLS reports for yesterday, want 1", reports)
		}
		runs := strings.Count(aBefore+a.logText()+b.logText(), "housekeeping done on this node")
		if runs != 1 {
			t.Errorf("web mailbox housekeeping ran %d times, want once", runs)
		}
	}
}

// node is one posthorn serve process of the cluster test: an instance
// (e2e_test.go) with its own queue, mail, plugin data and ports.
type node struct {
	*instance
	name             string
	web, admin, subm string
	browser          *webClient
}

func newNode(t *testing.T, name, common string) *node {
	t.Helper()
	dir, err := os.MkdirTemp("", "phnode")
	if err != nil {
		t.Fatal(err)
	}
	var n *node
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("node %s: state kept in %s; its log:\n%s", name, dir, n.logText())
		}
	})
	n = &node{instance: &instance{t: t, dir: dir, mx: freePort(t)}, name: name, web: freePort(t), admin: freePort(t), subm: freePort(t)}
	common = strings.NewReplacer("{WEB}", n.web, "{ADMIN}", n.admin).Replace(common)
	cfg := fmt.Sprintf(`hostname = "mx-%s.example.test"
postmaster = "postmaster@example.test"
[log]
level = "info"
[smtp]
mx_address = %q
submission_address = %q
submissions_address = ""
client_networks = []
max_sessions_per_ip = 30
[queue]
dir = "spool"
min_backoff = "1s"
max_backoff = "2s"
[local]
maildir_root = "mail"
[metrics]
address = ""
[control]
socket = "ctl.sock"
%s`, name, n.mx, n.subm, common)
	n.cfg = filepath.Join(dir, "posthorn.toml")
	if err := os.WriteFile(n.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitListening waits until something accepts connections on addr.
func (n *node) waitListening(addr string, timeout time.Duration) {
	n.t.Helper()
	wait.For(n.t, timeout, "node "+n.name+" listening on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// waitFree waits until nothing listens on addr any more.
func (n *node) waitFree(addr string, timeout time.Duration) {
	n.t.Helper()
	wait.For(n.t, timeout, addr+" free", func() bool {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			l.Close()
		}
		return err == nil
	})
}

// mails returns the messages in user@example.test's Maildir on n.
func (n *node) mails(t *testing.T, user string) []string {
	t.Helper()
	var out []string
	d := filepath.Join(n.dir, "mail", "example.test", user, "new")
	ents, _ := os.ReadDir(d)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(d, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// waitMail waits for a message in user's Maildir on n that ok accepts.
func (n *node) waitMail(t *testing.T, user string, ok func(string) bool) string {
	t.Helper()
	var got string
	wait.For(t, 30*time.Second, "mail for "+user+" on node "+n.name, func() bool {
		for _, m := range n.mails(t, user) {
			if ok(m) {
				got = m
				return true
			}
		}
		return false
	})
	return got
}

// buildPlugins builds the named plugins of plugins/ into dir, at the same
// time as each other and the posthorn binary (linking is the slow part,
// and one link uses one core).
func buildPlugins(t *testing.T, dir string, names ...string) map[string]string {
	t.Helper()
	bins := map[string]string{}
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		bin := filepath.Join(dir, "posthorn-"+name)
		bins[name] = bin
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := exec.Command("go", "build", "-o", bin, "github.com/posthorn/posthorn/plugins/"+name+"/cmd/posthorn-"+name).CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("building %s: %v\n%s", name, err, out)
			}
		}()
	}
	posthornBinary(t)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return bins
}

// seedTLSAttempts records a successful delivery to domain on day in the
// shared database, as a node did then.
func seedTLSAttempts(t *testing.T, db conf.Database, day time.Time, domain string) {
	t.Helper()
	sdb, _, err := database.OpenPostgres(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	rec, err := tlsrpt.New(tlsrpt.Options{DB: sdb, Submitter: "mx-old.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if err := rec.Record(tlsrpt.Attempt{Time: day, Domain: domain, Success: true}); err != nil {
		t.Fatal(err)
	}
}

// submit opens an authenticated submission session as alice on n.
func submit(t *testing.T, n *node, tc *tls.Config) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(n.subm, tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.test", "correct horse")); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitRemote waits for a message to rcpt at the partner's MTA that
// contains want (quoted-printable soft breaks and =3D undone) and returns
// it so.
func waitRemote(t *testing.T, m *remotemta.MTA, rcpt, want string) string {
	t.Helper()
	var got string
	wait.For(t, 30*time.Second, "a message to "+rcpt+" containing "+want, func() bool {
		for _, msg := range m.Messages() {
			if len(msg.To()) == 0 || msg.To()[0] != rcpt {
				continue
			}
			d := strings.ReplaceAll(strings.ReplaceAll(string(msg.Data), "=\r\n", ""), "=3D", "=")
			if strings.Contains(d, want) {
				got = d
				return true
			}
		}
		return false
	})
	return got
}

func smtpCode(err error) int {
	if se, ok := err.(*smtp.SMTPError); ok {
		return se.Code
	}
	return 0
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// webClient is a browser for the web mailbox that may talk to any node.
// It keeps cookies itself: the web mailbox's are Secure (__Host-), and a
// cookie jar would not send them over the test's plain HTTP.
type webClient struct {
	t       *testing.T
	mu      sync.Mutex
	cookies map[string]string
}

type webResp struct {
	code int
	body string
}

func (w *webClient) do(n *node, method, path string, form url.Values) webResp {
	w.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, "http://"+n.web+path, body)
	req.Host = "mailbox.example.test"
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	w.mu.Lock()
	for k, v := range w.cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	w.mu.Unlock()
	c := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		w.t.Fatalf("%s %s on node %s: %v", method, path, n.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	w.mu.Lock()
	for _, ck := range resp.Cookies() {
		if ck.MaxAge < 0 {
			delete(w.cookies, ck.Name)
		} else {
			w.cookies[ck.Name] = ck.Value
		}
	}
	w.mu.Unlock()
	return webResp{resp.StatusCode, string(b)}
}

func (w *webClient) get(n *node, path string) webResp { return w.do(n, "GET", path, nil) }

func (w *webClient) post(n *node, path string, form url.Values) webResp {
	return w.do(n, "POST", path, form)
}

var csrfFieldRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, r webResp) string {
	t.Helper()
	m := csrfFieldRE.FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no csrf field in the page (%d): %s", r.code, r.body)
	}
	return m[1]
}
