package daemon_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/daemon"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/sdk"
)

// startReloadable is startEnvConfig with the config path given to the
// daemon, so that ReloadFile reads it again.
func startReloadable(t *testing.T, edit func(string) string) (*testEnv, string) {
	t.Helper()
	e := startEnvConfig(t, edit)
	// startEnvConfig wrote the file; start a second daemon on it is not
	// possible (same ports are fine at :0, same queue is not), so stop
	// that one and start one that knows its path.
	e.d.Shutdown(t.Context())
	path := filepath.Join(e.dir, "posthorn.toml")
	cfg, err := conf.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := daemon.Start(cfg, log, daemon.Options{AuthFailDelay: time.Millisecond, ConfigPath: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d.Shutdown(ctx)
	})
	e.d, e.cfg = d, cfg
	return e, path
}

func rewrite(t *testing.T, path string, f func(string) string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(f(string(b))), 0o600); err != nil {
		t.Fatal(err)
	}
}

func serverSerial(t *testing.T, e *testEnv) string {
	t.Helper()
	c, err := smtp.DialStartTLS(e.addr(smtpd.MX), e.client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	st, ok := c.TLSConnectionState()
	if !ok {
		t.Fatal("no TLS")
	}
	return st.PeerCertificates[0].SerialNumber.String()
}

// TestReloadUnderLoad reloads the config several times while clients
// keep sending: no session fails, a session open across the reloads
// completes, new mailboxes and a new certificate take effect, and a
// broken config is refused with the old one kept.
func TestReloadUnderLoad(t *testing.T) {
	// The clients open a connection a message, far more than 120 a
	// minute from 127.0.0.1; the rate limit outlives reloads.
	e, path := startReloadable(t, func(s string) string {
		return strings.Replace(s, "max_sessions_per_ip = 8\n", "max_sessions_per_ip = 8\nmax_connection_rate_per_ip = 1000000\n", 1)
	})

	if err := send(e.dial(smtpd.MX), "a@example.com", []string{"carol@example.test"}, testMessage("c0")); codeOf(err) != 550 {
		t.Fatalf("carol before reload: want 550, got %v", err)
	}
	serial0 := serverSerial(t, e)

	// A session that spans all reloads.
	long := e.dial(smtpd.MX)
	if err := long.Mail("long@example.com", nil); err != nil {
		t.Fatal(err)
	}

	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				err := func() error {
					c, err := smtp.Dial(e.addr(smtpd.MX))
					if err != nil {
						return err
					}
					defer c.Close()
					if err := c.Hello("load.example.com"); err != nil {
						return err
					}
					if err := send(c, "load@example.com", []string{"postmaster@example.test"}, testMessage(fmt.Sprintf("l%d-%d", g, i))); err != nil {
						return err
					}
					return c.Quit()
				}()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				} else {
					sent.Add(1)
				}
			}
		}()
	}
	lastNoop := time.Now()
	waitSent := func(n int64) {
		deadline := time.Now().Add(20 * time.Second)
		for sent.Load() < n && failed.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("load stalled at %d messages", sent.Load())
			}
			// The long session stays within command_timeout (5s).
			if time.Since(lastNoop) > time.Second {
				if err := long.Noop(); err != nil {
					t.Fatalf("long session NOOP: %v", err)
				}
				lastNoop = time.Now()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	waitSent(5)
	rewrite(t, path, func(s string) string {
		return strings.Replace(s, `mailboxes = ["postmaster", "bob"]`, `mailboxes = ["postmaster", "bob", "carol"]`, 1)
	})
	if _, err := e.d.ReloadFile(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	waitSent(sent.Load() + 5)

	// A broken file is refused; the running config stays.
	good, _ := os.ReadFile(path)
	rewrite(t, path, func(s string) string {
		return strings.Replace(s, "max_recipients = 5", "max_recipients = \"five\"\nbogus_key = 1", 1)
	})
	_, err := e.d.ReloadFile()
	if err == nil || !strings.Contains(err.Error(), "max_recipients") || !strings.Contains(err.Error(), "bogus_key") {
		t.Fatalf("bad config: want both errors, got %v", err)
	}
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	waitSent(sent.Load() + 5)

	// A new certificate, reloaded from the same files.
	cert, err := e.ca.Issue("mx.example.test", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	writeCert(t, e.dir, cert)
	for range 3 {
		if _, err := e.d.ReloadFile(); err != nil {
			t.Fatalf("reload: %v", err)
		}
		waitSent(sent.Load() + 3)
	}
	close(stop)
	wg.Wait()
	if err := long.Noop(); err != nil {
		t.Fatalf("long session NOOP: %v", err)
	}
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d sessions failed across reloads; first: %v", n, n+sent.Load(), firstErr.Load())
	}

	if err := send(e.dial(smtpd.MX), "a@example.com", []string{"carol@example.test"}, testMessage("c1")); err != nil {
		t.Fatalf("carol after reload: %v", err)
	}
	if serverSerial(t, e) == serial0 {
		t.Error("the new certificate is not served after reload")
	}
	// The session opened before the first reload finishes normally.
	if err := long.Rcpt("bob@example.test", nil); err != nil {
		t.Fatalf("long session RCPT: %v", err)
	}
	w, err := long.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, testMessage("long"))
	if err := w.Close(); err != nil {
		t.Fatalf("long session DATA: %v", err)
	}
	// Every accepted message is delivered once.
	total := int(sent.Load())
	e.waitMail("example.test", "postmaster", total, 30*time.Second)
	e.waitMail("example.test", "carol", 1, 10*time.Second)
	e.waitMail("example.test", "bob", 1, 10*time.Second)
	if n := e.mailCount("example.test", "postmaster"); n != total {
		t.Errorf("postmaster has %d messages, %d were accepted", n, total)
	}
	t.Logf("%d sessions across 5 reloads and 1 refused reload, none failed", total)
}

// TestReloadRefusesQueueDirChange: what cannot change while running is
// refused, not half applied.
func TestReloadRefusesQueueDirChange(t *testing.T) {
	e, path := startReloadable(t, func(s string) string { return s })
	rewrite(t, path, func(s string) string {
		return strings.Replace(s, filepath.Join(e.dir, "spool"), filepath.Join(e.dir, "spool2"), 1)
	})
	if _, err := e.d.ReloadFile(); err == nil || !strings.Contains(err.Error(), "queue.dir") {
		t.Fatalf("want queue.dir refusal, got %v", err)
	}
	if err := send(e.dial(smtpd.MX), "a@example.com", []string{"bob@example.test"}, testMessage("q")); err != nil {
		t.Fatal(err)
	}
	e.waitMail("example.test", "bob", 1, 10*time.Second)
}

// TestReloadPluginSubmissions: what plugins submit (Host.Submit) follows
// a reload: the new hostname in the Received line, the new size limit.
func TestReloadPluginSubmissions(t *testing.T) {
	e, path := startReloadable(t, func(s string) string { return s })
	env := &sdk.Envelope{MailFrom: "notify@example.test", Recipients: []sdk.Recipient{{Address: "bob@example.test"}}}
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 98)+"\r\n", 20<<10) // 2 MiB
	if _, err := e.d.SubmitForTest(env, "Subject: before\r\n\r\nbefore\r\n", ""); err != nil {
		t.Fatal(err)
	}
	if m := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]; !strings.Contains(m, "by mx.example.test (Posthorn, from plugin") {
		t.Fatalf("before the reload:\n%s", m)
	}
	rewrite(t, path, func(s string) string {
		s = strings.Replace(s, `hostname = "mx.example.test"`, `hostname = "mx2.example.test"`, 1)
		return strings.Replace(s, `max_message_size = "1MiB"`, `max_message_size = "4MiB"`, 1)
	})
	if _, err := e.d.ReloadFile(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if _, err := e.d.SubmitForTest(env, big, ""); err != nil {
		t.Fatalf("2 MiB after raising max_message_size to 4 MiB: %v", err)
	}
	var after string
	for _, m := range e.waitMail("example.test", "bob", 2, 20*time.Second) {
		if strings.Contains(m, "Subject: big") {
			after = m
		}
	}
	if !strings.Contains(after, "by mx2.example.test (Posthorn, from plugin") {
		t.Errorf("after the reload, the Received line names the old hostname:\n%.300s", after)
	}
	rewrite(t, path, func(s string) string {
		return strings.Replace(s, `max_message_size = "4MiB"`, `max_message_size = "1MiB"`, 1)
	})
	if _, err := e.d.ReloadFile(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if _, err := e.d.SubmitForTest(env, big, ""); err == nil {
		t.Fatal("2 MiB accepted after lowering max_message_size to 1 MiB")
	}
}

// TestReloadReportsConfigWarnings: a reload says what `posthorn check`
// warns about in the new config, as the start does: here a web mailbox
// rule for every sender.
func TestReloadReportsConfigWarnings(t *testing.T) {
	e, path := startReloadable(t, func(s string) string { return s })
	// A binary that is not a plugin: the reload reports that it did not
	// start, which is not what this test is about.
	bin := filepath.Join(e.dir, "not-a-plugin")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rewrite(t, path, func(s string) string {
		return s + fmt.Sprintf(`
[[plugin]]
name = "webmailbox"
path = %q

[[encryption.rule]]
recipients = ["remote.test"]
encrypt = "required"
methods = ["webmailbox"]
`, bin)
	})
	res, err := e.d.ReloadFile()
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	found := false
	for _, w := range res.Warnings {
		if strings.Contains(w, "encryption.rule[0]") && strings.Contains(w, "every sender") {
			found = true
		}
	}
	if !found {
		t.Errorf("reload warnings %q, want the web mailbox rule for every sender", res.Warnings)
	}
}
