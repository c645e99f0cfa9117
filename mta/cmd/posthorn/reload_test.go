package main

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/testbed/wait"
)

// TestSIGHUPReloads: SIGHUP no longer kills the daemon; it reloads, and
// `posthorn reload` does the same and reports; a broken file is refused
// with its errors, and the daemon goes on with the old config.
func TestSIGHUPReloads(t *testing.T) {
	in := newInstance(t, "")
	in.start()
	b, err := os.ReadFile(in.cfg)
	if err != nil {
		t.Fatal(err)
	}
	good := strings.Replace(string(b), `mailboxes = ["postmaster", "bob"]`, `mailboxes = ["postmaster", "bob", "carol"]`, 1)
	if err := os.WriteFile(in.cfg, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := in.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(in.logText(), "config reloaded") })
	c, err := dialSMTP(in.mx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.send("carol@example.test", "<c@test>"); err != nil {
		t.Fatalf("carol after SIGHUP: %v", err)
	}

	if err := os.WriteFile(in.cfg, []byte(strings.Replace(good, `max_backoff = "2s"`, "max_backoff = \"2s\"\nworkers = 0", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := in.cli("reload")
	if err == nil || !strings.Contains(out, "reload refused") {
		t.Fatalf("posthorn reload of a broken file: %v\n%s", err, out)
	}
	if err := in.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(in.logText(), "workers: must be") })
	if err := os.WriteFile(in.cfg, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := in.cli("reload"); err != nil || !strings.Contains(out, "reloaded") {
		t.Fatalf("posthorn reload: %v\n%s", err, out)
	}
	if in.cmd.ProcessState != nil {
		t.Fatalf("daemon exited:\n%s", in.logText())
	}
	c2, err := dialSMTP(in.mx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.send("bob@example.test", "<b@test>"); err != nil {
		t.Fatal(err)
	}
	in.stop()
	if code := in.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// TestReloadMovesWebListeners: when the admin API's and the self-service
// page's addresses change, `posthorn reload` moves them: the new ports
// answer, the old ones stop accepting, and a request in progress on the
// old port is answered, not dropped.
func TestReloadMovesWebListeners(t *testing.T) {
	const token = "reload-test-token"
	sum := sha256.Sum256([]byte(token))
	admin1, self1 := freePort(t), freePort(t)
	web := func(admin, self string) string {
		return fmt.Sprintf(`
[admin]
address = %q
[[admin.token]]
name = "ops"
sha256 = %q
scopes = ["queue:read"]
[self_service]
address = %q
`, admin, hex.EncodeToString(sum[:]), self)
	}
	in := newInstance(t, web(admin1, self1))
	in.start()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
	get := func(url string, auth bool) (int, error) {
		req, _ := http.NewRequest("GET", url, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get("https://"+admin1+"/v1/queue/summary", true); code != 200 {
		t.Fatalf("admin API before reload: %d %v", code, err)
	}
	if code, err := get("https://"+self1+"/", false); code != 200 {
		t.Fatalf("self-service before reload: %d %v", code, err)
	}

	// A login in progress on the old self-service port: the headers are
	// read, the handler waits for the rest of the form.
	c, err := tls.Dial("tcp", self1, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	form := "address=bob%40example.test&password=wrong-password"
	fmt.Fprintf(c, "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(form), form[:10])

	admin2, self2 := freePort(t), freePort(t)
	b, err := os.ReadFile(in.cfg)
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(string(b), web(admin1, self1), web(admin2, self2), 1)
	if err := os.WriteFile(in.cfg, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := in.cli("reload"); err != nil || !strings.Contains(out, "reloaded") {
		t.Fatalf("posthorn reload: %v\n%s\n%s", err, out, in.logText())
	}
	if code, err := get("https://"+admin2+"/v1/queue/summary", true); code != 200 {
		t.Fatalf("admin API on its new address: %d %v", code, err)
	}
	if code, err := get("https://"+self2+"/", false); code != 200 {
		t.Fatalf("self-service on its new address: %d %v", code, err)
	}
	wait.For(t, 10*time.Second, "the old admin port to close", func() bool {
		_, err := get("https://"+admin1+"/v1/queue/summary", true)
		return err != nil
	})
	// The request in progress is answered (a failed login: 401).
	fmt.Fprint(c, form[10:])
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the request in progress during the move was dropped: %v\n%s", err, in.logText())
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("login in progress: status %d, want 401", resp.StatusCode)
	}
	wait.For(t, 40*time.Second, "the old self-service port to close", func() bool {
		_, err := get("https://"+self1+"/", false)
		return err != nil
	})
	in.stop()
}

// TestReloadSharesSessionLimit: the sessions the old listener still
// serves after a reload count against max_sessions together with the new
// listener's.
func TestReloadSharesSessionLimit(t *testing.T) {
	in := newInstance(t, "")
	b, err := os.ReadFile(in.cfg)
	if err != nil {
		t.Fatal(err)
	}
	limited := strings.Replace(string(b), "[smtp]\n", "[smtp]\nmax_sessions = 2\nreserved_sessions = 0\n", 1)
	if err := os.WriteFile(in.cfg, []byte(limited), 0o600); err != nil {
		t.Fatal(err)
	}
	in.start()
	greeting := func() (net.Conn, string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", in.mx, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return c, line
	}
	var open []net.Conn
	wait.For(t, 10*time.Second, "two open sessions", func() bool {
		c, g := greeting()
		if !strings.HasPrefix(g, "220 ") {
			c.Close() // a start-up probe still holds a slot
			return false
		}
		open = append(open, c)
		return len(open) == 2
	})
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	if out, err := in.cli("reload"); err != nil || !strings.Contains(out, "reloaded") {
		t.Fatalf("posthorn reload: %v\n%s", err, out)
	}
	// Both sessions are on the old listener now, which drains them.
	c, g := greeting()
	c.Close()
	if !strings.HasPrefix(g, "421 4.7.0") {
		t.Fatalf("third session right after the reload: %q, want 421 (max_sessions = 2)", g)
	}
	open[0].Close()
	wait.For(t, 10*time.Second, "the slot of a closed old session", func() bool {
		c, g := greeting()
		c.Close()
		return strings.HasPrefix(g, "220 ")
	})
	in.stop()
}
