package interop

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
)

const zone = "interop.test"

// dest is one destination of the suite: a domain, its MX host served by
// a Postfix listener with its own TLS behaviour, and what DNS and MTA-STS
// say about it.
type dest struct {
	name string // first label
	port int    // Postfix listener
	cert *tls.Certificate
	// startTLS false: the listener offers no STARTTLS.
	startTLS bool
	tlsa     string // TLSA record data (usage selector type hex), "" for none
	// sts: "enforce" or "testing" with the policy served by nginx;
	// stsCert: the policy host's certificate; stsMissing: 404.
	sts        string
	stsCert    *tls.Certificate
	stsMissing bool
	// sub: "" for the signed parent zone, "bogus" for the child zone
	// whose DS matches no key, "badsig" for the child zone signed
	// offline whose TLSA signature is corrupted.
	sub string
}

func (d *dest) domain() string {
	if d.sub != "" {
		return d.name + "." + d.sub + "." + zone
	}
	return d.name + "." + zone
}

func (d *dest) mx() string { return "mx." + d.domain() }

// world is the running third-party software.
type world struct {
	addr     string // the loopback address every daemon of this world listens on
	dir      string
	root     *ca.CA
	caFile   string
	unbound  string // resolver address
	nginx    int    // port of the MTA-STS web server
	mailDir  string // Postfix's Maildir for every destination
	postfix  *proc
	dests    map[string]*dest
	ordering []string
}

func tlsaHex(cert *x509.Certificate, usage, selector uint8) string {
	return fmt.Sprintf("%d %d 1 %s", usage, selector, dnsserver.TLSAData(cert, selector, 1))
}

// newWorld builds certificates, starts Knot with the signed zone tree,
// Unbound validating it, nginx with the MTA-STS policies and Postfix with
// one listener per destination.
func newWorld(t *testing.T) *world {
	t.Helper()
	need(t, "knotd", "unbound", "nginx", "/usr/lib/postfix/sbin/master", "ldns-keygen", "ldns-signzone")
	dir, err := os.MkdirTemp("", "phinterop")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // Postfix's daemons read certificates as user postfix
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("state kept in %s", dir)
		}
	})
	w := &world{addr: loopbackAddr(), dir: dir, dests: map[string]*dest{}}
	if w.root, err = ca.New("Interop Root CA"); err != nil {
		t.Fatal(err)
	}
	if w.caFile, err = w.root.WriteCAFile(dir); err != nil {
		t.Fatal(err)
	}
	inter, err := w.root.Intermediate("Interop Issuing CA")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(c *ca.CA, names ...string) *tls.Certificate {
		var cert tls.Certificate
		var err error
		if c == nil {
			cert, err = ca.SelfSigned(names...)
		} else {
			cert, err = c.Issue(names...)
		}
		if err != nil {
			t.Fatal(err)
		}
		return &cert
	}
	other := issue(nil, "someone.else.example")
	add := func(d *dest) {
		d.port = freePort(t, w.addr)
		w.dests[d.name] = d
		w.ordering = append(w.ordering, d.name)
	}
	mx := func(name string) string { return "mx." + name + "." + zone }
	ee := issue(nil, mx("dane-ee"))
	add(&dest{name: "dane-ee", cert: ee, startTLS: true, tlsa: tlsaHex(ee.Leaf, 3, 1)})
	ta := issue(inter, mx("dane-ta"))
	add(&dest{name: "dane-ta", cert: ta, startTLS: true, tlsa: tlsaHex(inter.Certificate(), 2, 0)})
	add(&dest{name: "tlsa-mismatch", cert: issue(w.root, mx("tlsa-mismatch")), startTLS: true, tlsa: tlsaHex(other.Leaf, 3, 1)})
	bc := issue(w.root, "mx.signed.bogus."+zone)
	add(&dest{name: "signed", sub: "bogus", cert: bc, startTLS: true, tlsa: tlsaHex(bc.Leaf, 3, 1)})
	sc := issue(w.root, "mx.tlsa.badsig."+zone)
	add(&dest{name: "tlsa", sub: "badsig", cert: sc, startTLS: true, tlsa: tlsaHex(sc.Leaf, 3, 1)})
	add(&dest{name: "sts-valid", cert: issue(w.root, mx("sts-valid")), startTLS: true, sts: "enforce",
		stsCert: issue(w.root, "mta-sts.sts-valid."+zone)})
	add(&dest{name: "sts-wrongname", cert: issue(w.root, "wrong.example"), startTLS: true, sts: "enforce",
		stsCert: issue(w.root, "mta-sts.sts-wrongname."+zone)})
	add(&dest{name: "sts-badweb", cert: issue(w.root, mx("sts-badweb")), startTLS: true, sts: "enforce",
		stsCert: issue(w.root, "www.elsewhere.example")})
	add(&dest{name: "sts-missing", cert: issue(w.root, mx("sts-missing")), startTLS: true, sts: "enforce", stsMissing: true,
		stsCert: issue(w.root, "mta-sts.sts-missing."+zone)})
	add(&dest{name: "plain", cert: issue(nil, mx("plain")), startTLS: true})
	add(&dest{name: "nostarttls", startTLS: false})

	w.nginx = freePort(t, w.addr)
	w.startKnotAndUnbound(t)
	w.startNginx(t)
	w.startPostfix(t)
	return w
}

func (w *world) startKnotAndUnbound(t *testing.T) {
	t.Helper()
	kdir := filepath.Join(w.dir, "knot")
	for _, d := range []string{kdir, filepath.Join(kdir, "keys"), filepath.Join(kdir, "db")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kport := freePort(t, w.addr)
	soa := func(origin string) string {
		return fmt.Sprintf("$ORIGIN %s.\n$TTL 300\n@ SOA ns.%s. hostmaster.%s. 1 3600 600 86400 300\n@ NS ns.%s.\n", origin, zone, zone, zone)
	}
	parent, child, badsig := soa(zone)+"ns A "+w.addr+"\n", soa("bogus."+zone), soa("badsig."+zone)
	// The child zone is delegated with a DS that matches no key of it:
	// every answer from it is bogus for a validating resolver.
	parent += "bogus NS ns." + zone + ".\nbogus DS 12345 13 2 " + strings.Repeat("ab", 32) + "\n"
	for _, name := range w.ordering {
		d := w.dests[name]
		rel := d.name
		rr := &parent
		switch d.sub {
		case "bogus":
			rr = &child
		case "badsig":
			rr = &badsig
		}
		*rr += fmt.Sprintf("%s MX 10 mx.%s\nmx.%s A %s\n", rel, rel, rel, w.addr)
		if d.tlsa != "" {
			*rr += fmt.Sprintf("_25._tcp.mx.%s TLSA %s\n", rel, d.tlsa)
		}
		if d.sts != "" {
			*rr += fmt.Sprintf("_mta-sts.%s TXT \"v=STSv1; id=1\"\nmta-sts.%s A %s\n", rel, rel, w.addr)
		}
	}
	parent += w.signOffline(t, kdir, "badsig."+zone, badsig)
	writeFile(t, filepath.Join(kdir, zone+".zone"), parent)
	writeFile(t, filepath.Join(kdir, "bogus."+zone+".zone"), child)
	conf := fmt.Sprintf(`server:
    listen: %s@%d
    rundir: %s
log:
  - target: stderr
    any: warning
database:
    storage: %s
    kasp-db: %s
keystore:
  - id: pem
    backend: pem
    config: %s
policy:
  - id: ecdsa
    algorithm: ecdsap256sha256
    keystore: pem
    single-type-signing: on
template:
  - id: default
    storage: %s
    dnssec-signing: on
    dnssec-policy: ecdsa
zone:
  - domain: %s
  - domain: bogus.%s
  - domain: badsig.%s
    file: badsig.%s.zone.signed
    dnssec-signing: off
    zonefile-sync: -1
`, w.addr, kport, kdir, filepath.Join(kdir, "db"), filepath.Join(kdir, "kasp"), filepath.Join(kdir, "keys"), kdir, zone, zone, zone, zone)
	writeFile(t, filepath.Join(kdir, "knot.conf"), conf)
	knot := start(t, "knotd", "-c", filepath.Join(kdir, "knot.conf"))
	kaddr := net.JoinHostPort(w.addr, strconv.Itoa(kport))
	var ksk *dns.DNSKEY
	waitFor(t, "Knot serving a signed "+zone, 15*time.Second, func() error {
		if err := knot.exited(); err != nil {
			return err
		}
		r, err := query(kaddr, zone, dns.TypeDNSKEY)
		if err != nil {
			return err
		}
		for _, rr := range r.Answer {
			if k, ok := rr.(*dns.DNSKEY); ok && k.Flags&dns.SEP != 0 {
				ksk = k
				return nil
			}
		}
		return errors.New("no DNSKEY yet")
	})
	ds := ksk.ToDS(dns.SHA256)

	udir := filepath.Join(w.dir, "unbound")
	os.MkdirAll(udir, 0o755)
	uport := freePort(t, w.addr)
	uconf := fmt.Sprintf(`server:
    interface: %s
    port: %d
    so-reuseport: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "%s"
    pidfile: "%s/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    do-ip6: no
    do-not-query-localhost: no
    module-config: "validator iterator"
    trust-anchor: "%s"
    local-zone: "test." nodefault
    ede: yes
    val-log-level: 2
    qname-minimisation: no
    cache-max-ttl: 5
stub-zone:
    name: "%s"
    stub-addr: %s
stub-zone:
    name: "bogus.%s"
    stub-addr: %s
stub-zone:
    name: "badsig.%s"
    stub-addr: %s
remote-control:
    control-enable: no
`, w.addr, uport, udir, udir, ds.String(), zone, strings.Replace(kaddr, ":", "@", 1), zone, strings.Replace(kaddr, ":", "@", 1),
		zone, strings.Replace(kaddr, ":", "@", 1))
	writeFile(t, filepath.Join(udir, "unbound.conf"), uconf)
	ub := start(t, "unbound", "-d", "-c", filepath.Join(udir, "unbound.conf"))
	w.unbound = net.JoinHostPort(w.addr, strconv.Itoa(uport))
	waitFor(t, "Unbound validating "+zone, 15*time.Second, func() error {
		if err := ub.exited(); err != nil {
			return err
		}
		r, err := query(w.unbound, "mx.dane-ee."+zone, dns.TypeA)
		if err != nil {
			return err
		}
		if !r.AuthenticatedData || len(r.Answer) == 0 {
			return fmt.Errorf("answer not validated: rcode %s ad %v", dns.RcodeToString[r.Rcode], r.AuthenticatedData)
		}
		return nil
	})
}

func (w *world) startNginx(t *testing.T) {
	t.Helper()
	ndir := filepath.Join(w.dir, "nginx")
	os.MkdirAll(ndir, 0o755)
	var servers strings.Builder
	for _, name := range w.ordering {
		d := w.dests[name]
		if d.sts == "" {
			continue
		}
		certFile, keyFile, err := ca.WriteKeyPair(ndir, "mta-sts."+d.name, *d.stsCert)
		if err != nil {
			t.Fatal(err)
		}
		policy := fmt.Sprintf("version: STSv1\r\nmode: %s\r\nmx: %s\r\nmax_age: 86400\r\n", d.sts, d.mx())
		writeFile(t, filepath.Join(ndir, d.name+".txt"), policy)
		loc := fmt.Sprintf("location = /.well-known/mta-sts.txt { default_type text/plain; alias %s; }", filepath.Join(ndir, d.name+".txt"))
		if d.stsMissing {
			loc = "location / { return 404; }"
		}
		fmt.Fprintf(&servers, "  server {\n    listen %s:%d ssl;\n    server_name mta-sts.%s;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n    %s\n  }\n",
			w.addr, w.nginx, d.domain(), certFile, keyFile, loc)
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %s/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
http {
  access_log off;
%s}
`, ndir, servers.String())
	writeFile(t, filepath.Join(ndir, "nginx.conf"), conf)
	ng := start(t, "nginx", "-e", "stderr", "-p", ndir, "-c", filepath.Join(ndir, "nginx.conf"))
	waitFor(t, "nginx listening", 10*time.Second, func() error {
		if err := ng.exited(); err != nil {
			return err
		}
		c, err := tls.Dial("tcp", net.JoinHostPort(w.addr, strconv.Itoa(w.nginx)), &tls.Config{ServerName: "mta-sts.sts-valid." + zone, RootCAs: w.root.Pool()})
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func (w *world) startPostfix(t *testing.T) {
	t.Helper()
	pdir := filepath.Join(w.dir, "postfix")
	q := filepath.Join(pdir, "queue")
	w.mailDir = filepath.Join(pdir, "mail")
	for _, d := range []string{filepath.Join(pdir, "conf"), filepath.Join(pdir, "data"), w.mailDir, filepath.Join(pdir, "certs")} {
		os.MkdirAll(d, 0o755)
	}
	own := func(path string, mode os.FileMode, user string) {
		os.MkdirAll(path, mode)
		os.Chmod(path, mode)
		if out, err := exec.Command("chown", user, path).CombinedOutput(); err != nil {
			t.Fatalf("chown %s: %v %s", path, err, out)
		}
	}
	own(q, 0o755, "root:root")
	for _, d := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		own(filepath.Join(q, d), 0o700, "postfix")
	}
	own(filepath.Join(q, "maildrop"), 0o730, "postfix:postdrop")
	own(filepath.Join(q, "public"), 0o710, "postfix:postdrop")
	own(filepath.Join(q, "pid"), 0o755, "root:root")
	own(filepath.Join(pdir, "data"), 0o700, "postfix")
	own(w.mailDir, 0o755, "nobody:nogroup")

	var domains []string
	var services strings.Builder
	for _, name := range w.ordering {
		d := w.dests[name]
		domains = append(domains, d.domain())
		opts := "-o smtpd_tls_security_level=none"
		if d.startTLS {
			certFile, keyFile, err := ca.WriteKeyPair(filepath.Join(pdir, "certs"), d.name, *d.cert)
			if err != nil {
				t.Fatal(err)
			}
			os.Chmod(keyFile, 0o644)
			opts = fmt.Sprintf("-o smtpd_tls_security_level=may -o smtpd_tls_chain_files=%s,%s", keyFile, certFile)
		}
		fmt.Fprintf(&services, "%s:%d inet n - n - - smtpd %s -o syslog_name=postfix/%s\n", w.addr, d.port, opts, d.name)
	}
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %s
data_directory = %s
meta_directory = /etc/postfix
maillog_file = /dev/stdout
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = receiver.%s
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = %s
virtual_mailbox_base = %s
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
default_transport = error:no outbound mail
relay_transport = error:no outbound mail
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
`, q, filepath.Join(pdir, "data"), zone, strings.Join(domains, " "), w.mailDir)
	master := services.String() + `pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`
	writeFile(t, filepath.Join(pdir, "conf", "main.cf"), main)
	writeFile(t, filepath.Join(pdir, "conf", "master.cf"), master)
	old := time.Now().Add(-time.Minute)
	os.Chtimes(filepath.Join(pdir, "conf", "main.cf"), old, old)
	os.Chtimes(filepath.Join(pdir, "conf", "master.cf"), old, old)
	w.postfix = start(t, "/usr/lib/postfix/sbin/master", "-c", filepath.Join(pdir, "conf"), "-s")
	for _, name := range w.ordering {
		d := w.dests[name]
		waitFor(t, "Postfix listening for "+d.name, 15*time.Second, func() error {
			if err := w.postfix.exited(); err != nil {
				return err
			}
			return banner(net.JoinHostPort(w.addr, strconv.Itoa(d.port)))
		})
	}
}

// banner connects and reads an SMTP 220 greeting.
func banner(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("greeting %q", line)
	}
	c.Write([]byte("QUIT\r\n"))
	return nil
}

// signOffline signs the zone text with a fresh key (ldns-keygen,
// ldns-signzone, NSEC3), corrupts the signature of its TLSA RRset, writes
// ORIGIN.zone.signed for Knot to serve as it is, and returns the parent's
// delegation (NS and the DS of the key).
func (w *world) signOffline(t *testing.T, dir, origin, text string) string {
	t.Helper()
	file := filepath.Join(dir, origin+".zone")
	writeFile(t, file, text)
	cmd := exec.Command("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", origin)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ldns-keygen: %v", err)
	}
	key := strings.TrimSpace(string(out))
	cmd = exec.Command("ldns-signzone", "-n", file, key)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ldns-signzone: %v %s", err, out)
	}
	signed, err := os.ReadFile(file + ".signed")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(signed), "\n")
	corrupted := false
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) > 5 && f[3] == "RRSIG" && f[4] == "TLSA" {
			// Flip one character of the signature: still base64, no
			// longer valid.
			sig := []byte(f[len(f)-1])
			if sig[5] == 'A' {
				sig[5] = 'B'
			} else {
				sig[5] = 'A'
			}
			f[len(f)-1] = string(sig)
			lines[i] = strings.Join(f, " ")
			corrupted = true
		}
	}
	if !corrupted {
		t.Fatal("no TLSA signature to corrupt")
	}
	writeFile(t, file+".signed", strings.Join(lines, "\n"))
	ds, err := os.ReadFile(filepath.Join(dir, key+".ds"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(ds))
	label := strings.TrimSuffix(origin, "."+zone)
	return fmt.Sprintf("%s NS ns.%s.\n%s DS %s\n", label, zone, label, strings.Join(f[3:], " "))
}
