package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitBanner waits until addr answers with a 220 greeting.
func waitBanner(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 3)
			_, err = c.Read(b)
			c.Close()
			if err == nil && string(b) == "220" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no 220 greeting: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type proc struct {
	label string
	dir   string
	cmd   *exec.Cmd
	a     string
	// metrics is posthorn's metrics listener with pprof (-profile).
	metrics string
}

func (p *proc) name() string { return p.label }
func (p *proc) addr() string { return p.a }
func (p *proc) root() int    { return p.cmd.Process.Pid }
func (p *proc) pids() []int  { return descendants(p.cmd.Process.Pid) }
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	waitExit(p.cmd, 20*time.Second)
	os.RemoveAll(p.dir)
}

// startPosthorn runs `posthorn serve` on a fresh spool, relaying every
// remote domain to the sink as a smarthost, without TLS. With sm, every
// message to the sink is also signed and encrypted by the smime plugin
// (label "posthorn+smime"), and one message has gone through before it
// returns.
func startPosthorn(bin string, snk *sink, sm *smimeSetup) (mta, error) {
	sinkAddr := snk.addr()
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("posthorn binary: %w (run make build)", err)
	}
	dir, err := os.MkdirTemp("", "phcmp")
	if err != nil {
		return nil, err
	}
	mx, err := freeAddr()
	if err != nil {
		return nil, err
	}
	extra, label := "", "posthorn"
	if sm != nil {
		label = "posthorn+smime"
		data := filepath.Join(dir, "plugins", "smime")
		if err := sm.prepare(data); err != nil {
			return nil, err
		}
		extra = sm.config(data)
	}
	metrics := ""
	if profDir != "" {
		if metrics, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	cfg := fmt.Sprintf(`
hostname = "bench.example.test"
[log]
level = "warn"
[smtp]
mx_address = %q
submission_address = ""
submissions_address = ""
client_networks = ["127.0.0.0/8"]
max_sessions_per_ip = 100
max_connection_rate_per_ip = 0
[queue]
dir = "spool"
workers = 20
min_backoff = "1s"
[local]
maildir_root = "mail"
[metrics]
address = %q
pprof = %v
[control]
socket = "ctl.sock"
[tls]
self_signed_dir = "tls"
[authres]
enabled = false
[outbound]
tls_level = "none"
[[transport]]
domain = "*"
kind = "smarthost"
host = %q
tls_level = "none"
[[domain]]
name = "example.test"
mailboxes = ["postmaster"]
%s`, mx, metrics, metrics != "", sinkAddr, extra)
	cfgPath := filepath.Join(dir, "posthorn.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "-c", cfgPath)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{label: label, dir: dir, cmd: cmd, a: mx, metrics: metrics}
	if err := waitBanner(mx, 30*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	if sm != nil {
		if err := warmUp(mx, snk); err != nil {
			p.stop()
			return nil, err
		}
	}
	return p, nil
}

const postfixMasterCF = `%s inet n - n - - smtpd
pickup unix n - n 60 1 pickup
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
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`

// startPostfix runs a private Postfix instance (recipe: the shared
// test-services notes, §5) with relayhost = the sink; Postfix's
// defaults otherwise (it fsyncs a queue file before 250).
func startPostfix(master, sinkAddr string) (mta, error) {
	dir, err := os.MkdirTemp("", "pfcmp")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	pu, err := user.Lookup("postfix")
	if err != nil {
		return nil, fmt.Errorf("no postfix user: %w", err)
	}
	uid, _ := strconv.Atoi(pu.Uid)
	pdg, err := user.LookupGroup("postdrop")
	if err != nil {
		return nil, fmt.Errorf("no postdrop group: %w", err)
	}
	gid, _ := strconv.Atoi(pdg.Gid)
	pgid, _ := strconv.Atoi(pu.Gid)
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	q := filepath.Join(dir, "queue")
	for _, d := range []string{"conf", "queue", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	os.Chown(filepath.Join(dir, "data"), uid, pgid)
	for _, d := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		p := filepath.Join(q, d)
		os.Mkdir(p, 0o700)
		os.Chown(p, uid, pgid)
	}
	for d, mode := range map[string]os.FileMode{"maildrop": 0o730, "public": 0o710} {
		p := filepath.Join(q, d)
		os.Mkdir(p, mode)
		os.Chmod(p, mode)
		os.Chown(p, uid, gid)
	}
	os.Mkdir(filepath.Join(q, "pid"), 0o755)
	sh, sp, _ := net.SplitHostPort(sinkAddr)
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
meta_directory = /etc/postfix
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = mx.bench.test
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [%[2]s]:%[3]s
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtp_dns_support_level = disabled
default_process_limit = 100
`, dir, sh, sp)
	cf := filepath.Join(dir, "conf")
	if err := os.WriteFile(filepath.Join(cf, "main.cf"), []byte(mainCF), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cf, "master.cf"), []byte(fmt.Sprintf(postfixMasterCF, addr)), 0o644); err != nil {
		return nil, err
	}
	// Postfix waits ~2 s for "too new" configuration files.
	old := time.Now().Add(-time.Minute)
	os.Chtimes(filepath.Join(cf, "main.cf"), old, old)
	os.Chtimes(filepath.Join(cf, "master.cf"), old, old)
	cmd := exec.Command(master, "-c", cf, "-s")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{label: "postfix", dir: dir, cmd: cmd, a: addr}
	if err := waitBanner(addr, 30*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}
