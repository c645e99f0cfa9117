package daemon_test

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
)

// Real milters from Debian, started by the tests on loopback with a
// private configuration and stopped by PID (recipes in
// shared/notes/test-services.md).

// service is a daemon process started by a test.
type service struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string // file to show when the test fails
}

func startService(t *testing.T, name, logFile string, kill syscall.Signal, argv ...string) *service {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := os.CreateTemp("", name+"-out")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	s := &service{t: t, name: name, cmd: cmd, done: make(chan struct{}), log: logFile}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("%s output:\n%s", name, b)
			if s.log != "" {
				b, _ := os.ReadFile(s.log)
				t.Logf("%s log:\n%s", name, b)
			}
		}
		out.Close()
		os.Remove(out.Name())
		cmd.Process.Signal(kill)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// waitReady polls ready until it is true, the process died or the
// deadline passed.
func (s *service) waitReady(timeout time.Duration, ready func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !ready() {
		select {
		case <-s.done:
			s.t.Fatalf("%s exited before it was ready", s.name)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s not ready after %s", s.name, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// milterReady does an option negotiation round trip with a milter.
func milterReady(network, addr string) bool {
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	data := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 6), 0x1ff), 0x1fffff)
	if _, err := c.Write(pkt('O', string(data))); err != nil {
		return false
	}
	code, _, err := readPkt(c)
	return err == nil && code == 'O'
}

func needBinary(t *testing.T, pkg string, bins ...string) []string {
	t.Helper()
	var paths []string
	for _, b := range bins {
		p, err := exec.LookPath(b)
		if err != nil {
			for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
				if _, err := os.Stat(filepath.Join(dir, b)); err == nil {
					p = filepath.Join(dir, b)
				}
			}
		}
		if p == "" {
			t.Skipf("%s not installed (Debian package %s): skipping the test against the real milter", b, pkg)
		}
		paths = append(paths, p)
	}
	return paths
}

// serviceDir makes a private directory owned by the service's user.
func serviceDir(t *testing.T, owner string) (string, func(path string)) {
	t.Helper()
	dir, err := os.MkdirTemp("", "phm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	chown := func(string) {}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(owner)
		if err != nil {
			t.Skipf("user %s missing: %v", owner, err)
		}
		var uid, gid int
		fmt.Sscan(u.Uid, &uid)
		fmt.Sscan(u.Gid, &gid)
		chown = func(path string) {
			filepath.Walk(path, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, uid, gid) })
		}
	}
	return dir, chown
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// startRspamd runs rspamd's proxy worker in milter mode, scanning in
// process, with the stock rules minus everything that needs the network
// or Redis. It returns the milter address.
func startRspamd(t *testing.T) string {
	bin := needBinary(t, "rspamd", "rspamd")[0]
	dir, chown := serviceDir(t, "_rspamd")
	addr := freeLocalAddr(t)
	// The hyperscan cache survives between runs: a warm start is ~1.5s.
	hsCache := filepath.Join(os.TempDir(), "posthorn-test-rspamd-hs")
	os.MkdirAll(hsCache, 0o755)
	files := map[string]string{
		"rspamd.conf": `.include "$CONFDIR/common.conf"
options {
  .include "$CONFDIR/options.inc"
  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging { type = "file"; filename = "$LOGDIR/rspamd.log"; level = "info"; }
worker "rspamd_proxy" {
  bind_socket = "` + addr + `";
  milter = yes;
  timeout = 120s;
  count = 1;
  upstream "local" { default = yes; self_scan = yes; }
  spam_header = "X-Spam";
  reject_message = "Spam message rejected";
}
`,
		"local.d/options.inc": `dns { nameserver = ["127.0.0.129:53"]; timeout = 0.2s; retransmits = 1; }
local_addrs = [];
hs_cache_dir = "` + hsCache + `";
control_socket = "` + dir + `/run/rspamd.sock mode=0600";
url_tld = "` + dir + `/tld.dat";
`,
		"local.d/milter_headers.conf": `use = ["x-spamd-result","x-rspamd-server","x-rspamd-queue-id","x-spam-level","x-spam-status","authentication-results"];
skip_local = false; skip_authenticated = false;
`,
		"tld.dat": "com\nnet\norg\nexample\ntest\ninvalid\nlocalhost\n",
	}
	for _, m := range strings.Fields("rbl surbl emails spf dkim dmarc arc fuzzy_check asn phishing multimap whitelist mime_types mid " +
		"rspamd_update hfilter url_redirector neural ratelimit greylist replies reputation history_redis bimi") {
		files["local.d/"+m+".conf"] = "enabled = false;\n"
	}
	writeFiles(t, dir, files)
	for _, d := range []string{"db", "run", "log"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	chown(dir)
	chown(hsCache)
	argv := []string{bin, "-f", "-c", filepath.Join(dir, "rspamd.conf"), "--var=LOCAL_CONFDIR=" + dir,
		"--var=DBDIR=" + dir + "/db", "--var=RUNDIR=" + dir + "/run", "--var=LOGDIR=" + dir + "/log"}
	if os.Geteuid() == 0 {
		argv = append(argv, "-u", "_rspamd", "-g", "_rspamd")
	}
	s := startService(t, "rspamd", filepath.Join(dir, "log", "rspamd.log"), syscall.SIGTERM, argv...)
	s.waitReady(60*time.Second, func() bool { return milterReady("tcp", addr) })
	return "inet:" + addr
}

const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// TestMilterRspamd: the real rspamd as a milter on the MX listener
// rejects GTUBE with its own reply and adds its headers to clean mail.
func TestMilterRspamd(t *testing.T) {
	addr := startRspamd(t)
	e := startEnv(t, realMilterConf("rspamd", addr, "")+milterLists(`"rspamd"`, "", ""))
	rejects0 := metric(t, e, `posthorn_milter_actions_total{action="reject",milter="rspamd"}`)
	c := e.dial(smtpd.MX)
	err := send(c, "spammer@example.com", []string{"bob@example.test"},
		"From: <spammer@example.com>\r\nTo: <bob@example.test>\r\nSubject: cheap\r\nMessage-ID: <gtube@example.com>\r\n\r\n"+gtube+"\r\n")
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 554 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) || se.Message != "Gtube pattern" {
		t.Fatalf("GTUBE: want rspamd's 554 5.7.1 Gtube pattern, got %v", err)
	}
	if err := send(c, "friend@example.com", []string{"bob@example.test"}, testMessage("rspamd-clean")); err != nil {
		t.Fatalf("clean mail: %v", err)
	}
	m := e.waitMail("example.test", "bob", 1, 20*time.Second)[0]
	for _, h := range []string{"X-Spamd-Result: ", "X-Rspamd-Server: ", "X-Rspamd-Queue-Id: ", "X-Spam-Status: No"} {
		if !strings.Contains(m, h) {
			t.Errorf("rspamd's %q missing:\n%s", h, m)
		}
	}
	// rspamd names the message by our queue ID (macro i).
	_, rest, _ := strings.Cut(m, "(Posthorn) with ESMTP id ")
	if id, _, _ := strings.Cut(rest, "\n"); id == "" || !strings.Contains(m, "X-Rspamd-Queue-Id: "+id) {
		t.Errorf("X-Rspamd-Queue-Id is not our queue ID %q:\n%s", id, m)
	}
	if n := metric(t, e, `posthorn_milter_actions_total{action="reject",milter="rspamd"}`) - rejects0; n != 1 {
		t.Errorf("%v rejects counted for rspamd, want 1", n)
	}
}

// The ClamAV test signature: a marker string no real file contains.
const clamMarker = "POSTHORN-CLAMAV-TEST-MARKER-5d1e7b"

// startClamd runs clamd with only a custom signature database and
// returns the path of its socket.
func startClamd(t *testing.T) (dir, sock string, chown func(string)) {
	bin := needBinary(t, "clamav-daemon", "clamd")[0]
	dir, chown = serviceDir(t, "clamav")
	sock = filepath.Join(dir, "clamd.sock")
	writeFiles(t, dir, map[string]string{
		"db/custom.ndb": "Test.Marker-1:0:*:" + hex.EncodeToString([]byte(clamMarker)) + "\n",
		"clamd.conf": strings.Join([]string{"Foreground yes", "LocalSocket " + sock, "LocalSocketMode 660", "FixStaleSocket yes",
			"DatabaseDirectory " + dir + "/db", "TemporaryDirectory " + dir + "/tmp", "LogFile " + dir + "/clamd.log",
			"User clamav", "SelfCheck 0", "MaxThreads 2", "Bytecode no"}, "\n") + "\n",
	})
	os.MkdirAll(filepath.Join(dir, "tmp"), 0o755)
	chown(dir)
	s := startService(t, "clamd", filepath.Join(dir, "clamd.log"), syscall.SIGTERM, bin, "-c", filepath.Join(dir, "clamd.conf"))
	s.waitReady(30*time.Second, func() bool {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte("zPING\x00"))
		buf := make([]byte, 16)
		n, _ := c.Read(buf)
		return strings.HasPrefix(string(buf[:n]), "PONG")
	})
	return dir, sock, chown
}

// startClamavMilter runs clamav-milter against clamd with onInfected
// ("Reject" or "Quarantine") and returns its address.
func startClamavMilter(t *testing.T, dir, clamdSock string, chown func(string), onInfected string) string {
	bin := needBinary(t, "clamav-milter", "clamav-milter")[0]
	addr := freeLocalAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	name := "clamav-milter-" + strings.ToLower(onInfected)
	conf := filepath.Join(dir, name+".conf")
	writeFiles(t, dir, map[string]string{name + ".conf": strings.Join([]string{
		"MilterSocket inet:" + port + "@" + host, "ClamdSocket unix:" + clamdSock, "Foreground yes", "User clamav",
		"TemporaryDirectory " + dir + "/tmp", "OnClean Accept", "OnInfected " + onInfected, "OnFail Defer",
		"RejectMsg Virus found: %v", "AddHeader Replace", "LogFile " + dir + "/" + name + ".log", "LogInfected Basic",
		"ReadTimeout 30"}, "\n") + "\n"})
	chown(dir)
	// clamav-milter takes ~5s to stop on SIGTERM; nothing of it needs
	// saving here.
	s := startService(t, name, filepath.Join(dir, name+".log"), syscall.SIGKILL, bin, "-c", conf)
	s.waitReady(30*time.Second, func() bool { return milterReady("tcp", addr) })
	return "inet:" + addr
}

// markerMessage has the test signature in a base64 attachment.
func markerMessage(id string) string {
	att := base64.StdEncoding.EncodeToString([]byte("harmless looking text\n" + clamMarker + "\n"))
	return "From: <sender@example.com>\r\nTo: <bob@example.test>\r\nSubject: invoice " + id + "\r\nMessage-ID: <" + id + "@example.com>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"invoice.bin\"\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"invoice.bin\"\r\n\r\n" + att + "\r\n--b1--\r\n"
}

// TestMilterClamAV: the real clamav-milter with a signature written for
// the test rejects the marker attachment (OnInfected Reject) or has it
// quarantined — held in our queue (OnInfected Quarantine); clean mail
// gets its headers.
func TestMilterClamAV(t *testing.T) {
	dir, sock, chown := startClamd(t)
	reject := startClamavMilter(t, dir, sock, chown, "Reject")
	quarantine := startClamavMilter(t, dir, sock, chown, "Quarantine")
	e := startEnv(t, realMilterConf("clamav", reject, "")+realMilterConf("clamav-hold", quarantine, "")+
		milterLists(`"clamav"`, `"clamav-hold"`, ""))

	c := e.dial(smtpd.MX)
	err := send(c, "sender@example.com", []string{"bob@example.test"}, markerMessage("virus1"))
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 550 || !strings.Contains(se.Message, "Virus found: Test.Marker-1.UNOFFICIAL") {
		t.Fatalf("marker attachment on MX: want clamav-milter's 550 Virus found, got %v", err)
	}
	if err := send(c, "sender@example.com", []string{"bob@example.test"}, testMessage("clean1")); err != nil {
		t.Fatal(err)
	}
	m := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]
	if !strings.Contains(m, "X-Virus-Scanned: clamav-milter") || !strings.Contains(m, "X-Virus-Status: Clean") {
		t.Fatalf("clamav-milter's headers missing:\n%s", m)
	}

	// Submission uses the quarantining instance: the message is accepted
	// and held in the queue with the reason.
	sc := e.login()
	if err := send(sc, testUser, []string{"bob@example.test"}, markerMessage("virus2")); err != nil {
		t.Fatalf("quarantine: want 250, got %v", err)
	}
	found := false
	for _, env := range e.d.Queue.List() {
		if env.From == testUser {
			found = true
			if !env.Held || !strings.HasPrefix(env.Attrs["milter.quarantine"], "clamav-hold: ") {
				t.Fatalf("quarantined message: held=%v attrs=%v", env.Held, env.Attrs)
			}
			t.Logf("held: %s", env.Attrs["milter.quarantine"])
		}
	}
	if !found {
		t.Fatal("quarantined message not in the queue")
	}
}

// TestMilterClamAVRescansDecryptedSMIME: ClamAV sees the S/MIME message as
// the client sent it (encrypted: nothing to find), the smime plugin
// decrypts it for the internal recipient, and with rescan_after_plugins
// ClamAV sees the plaintext and the marker in it: the message is refused.
// Clean encrypted mail arrives decrypted, scanned twice. (Metrics are
// per process: the milter's name is this test's own.)
func TestMilterClamAVRescansDecryptedSMIME(t *testing.T) {
	needOpenSSL(t)
	cdir, sock, chown := startClamd(t)
	clam := startClamavMilter(t, cdir, sock, chown, "Reject")
	bin := pluginBinary(t, "smime")
	dir := shortTempDir(t)
	pki := newSMIMEPKI(t, dir)
	bobCrt, bobKey := pki.issue("bob", "bob@example.test")
	e := startEnv(t, fmt.Sprintf(`
[[plugin]]
name = "smime"
path = %q
timeout = "30s"
[plugin.config]
trust_store = %q
internal_domains = ["example.test"]
[[plugin.config.identity]]
cert = %q
key = %q
`, bin, pki.caFile("trust.pem"), bobCrt, bobKey)+
		realMilterConf("clamav-smime", clam, "rescan_after_plugins = true")+milterLists(`"clamav-smime"`, "", ""))
	waitPluginNamed(t, e, "smime", "running")
	scans0 := metric(t, e, `posthorn_milter_calls_total{milter="clamav-smime",stage="content"}`)

	seal := func(subject, text string) string {
		in := filepath.Join(dir, "plain.txt")
		if err := os.WriteFile(in, []byte("Content-Type: text/plain; charset=us-ascii\r\n\r\n"+text+"\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("openssl", "cms", "-encrypt", "-aes256", "-in", in,
			"-from", "carol@remote.test", "-to", "bob@example.test", "-subject", subject, bobCrt).Output()
		if err != nil {
			t.Fatalf("openssl cms -encrypt: %v", err)
		}
		return strings.ReplaceAll(strings.ReplaceAll(string(out), "\r\n", "\n"), "\n", "\r\n")
	}
	c := e.dial(smtpd.MX)
	err := send(c, "carol@remote.test", []string{"bob@example.test"}, seal("sealed virus", clamMarker))
	if codeOf(err) != 550 || !strings.Contains(err.Error(), "Test.Marker-1.UNOFFICIAL") {
		t.Fatalf("encrypted marker: want clamav-milter's 550 after decryption, got %v", err)
	}
	if err := send(c, "carol@remote.test", []string{"bob@example.test"}, seal("sealed hello", "Hello Bob.")); err != nil {
		t.Fatal(err)
	}
	m := e.waitMail("example.test", "bob", 1, 20*time.Second)[0]
	if !strings.Contains(m, "Hello Bob.") || strings.Count(m, "X-Virus-Scanned: clamav-milter") < 1 {
		t.Fatalf("want the decrypted, scanned message:\n%s", m)
	}
	if n := metric(t, e, `posthorn_milter_calls_total{milter="clamav-smime",stage="content"}`) - scans0; n != 4 {
		t.Errorf("%v content scans, want 4 (2 messages, each as sent and decrypted)", n)
	}
}

// realMilterConf is a [[milter]] with timeouts that a loaded test machine
// does not hit (the scripted milter's tests use short ones on purpose).
func realMilterConf(name, addr, extra string) string {
	return fmt.Sprintf("\n[[milter]]\nname = %q\naddress = %q\ncommand_timeout = \"20s\"\ncontent_timeout = \"60s\"\n%s\n", name, addr, extra)
}
