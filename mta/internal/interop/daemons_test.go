package interop

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/posthorn/posthorn/testbed/freeport"
)

// need skips the test when a program is missing.
func need(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := os.Stat(p); err != nil {
			if _, err := exec.LookPath(p); err != nil {
				t.Skipf("%s is not installed (apt-get install knot unbound nginx-light postfix ldnsutils)", p)
			}
		}
	}
}

// loopbackAddr picks a loopback address of its own for one world, away
// from 127.0.0.1 where other tests listen. Postfix, Knot and Unbound bind
// their listeners with SO_REUSEPORT: two of them on one address and port
// share it silently, and the kernel hands each connection to either. With
// ports alone two worlds (two runs of the suite at once, or another test's
// Postfix) could pick the same port in the gap between freePort and the
// daemon's bind, and mail for one world reached the other's Postfix (seen
// as certificate-not-trusted for sts-wrongname: the other world's CA).
func loopbackAddr() string {
	return fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
}

// freePort returns a port free for TCP and UDP on addr, never one given
// out before (two daemons of one world once got the same port: nginx
// failed to bind the port Knot had taken).
func freePort(t *testing.T, addr string) int {
	t.Helper()
	return freeport.Port(t, addr, true)
}

// logBuf collects a daemon's output for failure messages.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is a daemon started by start.
type proc struct {
	name string
	out  *logBuf
	done chan struct{} // closed when the process has exited
}

// exited is a stop error for waitFor once the daemon has exited (a bind
// conflict, a config error): waiting on longer cannot help.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return stopError{fmt.Errorf("%s exited:\n%s", p.name, p.out)}
	default:
		return nil
	}
}

// stopError ends a waitFor at once.
type stopError struct{ error }

// start runs a daemon in the foreground and stops it by PID at cleanup.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	p := &proc{name: filepath.Base(name), out: &logBuf{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(p.out, "[%s exited: %v]\n", p.name, err)
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.out)
		}
	})
	return p
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		var stop stopError
		if errors.As(err, &stop) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// query asks server for name/qtype with DNSSEC OK.
func query(server, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, true)
	c := &dns.Client{Timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, server)
	return r, err
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
