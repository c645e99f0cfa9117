// Package dovecottest starts a private Dovecot auth service for a test:
// Debian's dovecot-core with a passwd-file passdb and userdb in a
// temporary directory, auth-client and auth-userdb listeners on free
// loopback ports, stopped by PID when the test ends. StartLMTP adds
// Dovecot's LMTP server (Debian's dovecot-lmtpd) delivering to a Maildir
// in each user's home. Tests skip with a
// clear message when Dovecot is not installed or the test does not run
// as root (Dovecot's master drops to its own users).
package dovecottest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a running Dovecot auth service.
type Server struct {
	Dir  string
	stop func()
	// AuthSocket and UserdbSocket in posthorn's "tcp:HOST:PORT" form.
	AuthSocket   string
	UserdbSocket string
	// LMTP is the LMTP listener in posthorn's "tcp:HOST:PORT" form
	// (StartLMTP only).
	LMTP string
}

// Maildir is where Dovecot's LMTP delivers user's mail (StartLMTP).
func (s *Server) Maildir(user string) string {
	return filepath.Join(s.Dir, "home", user, "Maildir")
}

// User is one line of the passwd-file: Password is stored as {PLAIN}.
type User struct {
	Name, Password string
}

// Start runs Dovecot's auth service with users until the test ends.
func Start(t testing.TB, users []User) *Server {
	t.Helper()
	return start(t, users, false)
}

// StartLMTP runs Dovecot's auth service and its LMTP server, which
// delivers to Maildir in the users' homes, until the test ends.
func StartLMTP(t testing.TB, users []User) *Server {
	t.Helper()
	if _, err := os.Stat("/usr/lib/dovecot/lmtp"); err != nil {
		t.Skip("Dovecot's LMTP server is not installed (no /usr/lib/dovecot/lmtp): apt-get install dovecot-lmtpd")
	}
	return start(t, users, true)
}

func start(t testing.TB, users []User, lmtp bool) *Server {
	t.Helper()
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/dovecot"); e == nil {
			bin = "/usr/sbin/dovecot"
		} else {
			t.Skip("Dovecot is not installed (no dovecot binary): apt-get install dovecot-core")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("Dovecot's master must start as root to drop to its users; run the test as root")
	}
	dir, err := os.MkdirTemp("", "phdc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // auth runs as user dovecot and reads the passwd-file
	var pw strings.Builder
	for i, u := range users {
		fmt.Fprintf(&pw, "%s:{PLAIN}%s:%d:%d::%s::\n", u.Name, u.Password, 1000+i, 1000+i, filepath.Join(dir, "home", u.Name))
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(pw.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	authPort, userdbPort := freePort(t), freePort(t)
	protocols, lmtpPort, lmtpConf := "none", 0, ""
	if lmtp {
		// The homes belong to the users, whose ids the LMTP server
		// takes to deliver.
		for i, u := range users {
			home := filepath.Join(dir, "home", u.Name)
			if err := os.MkdirAll(home, 0o755); err != nil {
				t.Fatal(err)
			}
			os.Chown(home, 1000+i, 1000+i)
		}
		lmtpPort = freePort(t)
		protocols = "lmtp"
		lmtpConf = fmt.Sprintf(`mail_location = maildir:~/Maildir
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %d
  }
}
`, lmtpPort)
	}
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = posthorn-test-%[2]d
protocols = %[5]s
listen = 127.0.0.1
log_path = %[1]s/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
passdb {
  driver = passwd-file
  args = username_format=%%u %[1]s/users
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[1]s/users
}
service auth {
  inet_listener auth-client {
    address = 127.0.0.1
    port = %[3]d
  }
  inet_listener auth-userdb {
    address = 127.0.0.1
    port = %[4]d
  }
  unix_listener auth-client {
    mode = 0666
  }
  unix_listener auth-userdb {
    mode = 0666
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
`+lmtpConf, dir, os.Getpid()+authPort, authPort, userdbPort, protocols)
	cf := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-F", "-c", cf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, _ := os.Create(filepath.Join(dir, "stdout.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	t.Cleanup(stop)
	s := &Server{Dir: dir, stop: stop, AuthSocket: fmt.Sprintf("tcp:127.0.0.1:%d", authPort), UserdbSocket: fmt.Sprintf("tcp:127.0.0.1:%d", userdbPort)}
	if lmtp {
		s.LMTP = fmt.Sprintf("tcp:127.0.0.1:%d", lmtpPort)
	}
	// Ready when the auth-client listener greets with its handshake
	// (and the LMTP server with its 220).
	deadline := time.Now().Add(20 * time.Second)
	for {
		if ready(authPort) && (!lmtp || greets(lmtpPort)) {
			return s
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			so, _ := os.ReadFile(filepath.Join(dir, "stdout.log"))
			t.Fatalf("dovecot exited:\n%s\n%s", so, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("dovecot auth not ready after 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop shuts Dovecot down now and waits for it (an outage, for tests of
// what happens then).
func (s *Server) Stop() { s.stop() }

func ready(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return false
		}
		if strings.HasPrefix(line, "DONE") {
			return true
		}
	}
}

func greets(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "220 ")
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
