package daemon_test

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/smtpd"
)

func needOpenSSL(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (.ci/run installs it)")
	}
}

func waitPluginNamed(t *testing.T, e *testEnv, name, state string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range e.d.PluginStatus() {
			if s.Name == name && s.State == state {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("plugin %s never %s: %+v", name, state, e.d.PluginStatus())
}

// inboundSizes are the sizes of the encrypted mails of
// TestInboundDecryptionNeverRefused: 1 KB to 5 MB, most of them small
// (that is where the race used to hit 40 % of the time), a few large
// ones (which it used to hit every time).
func inboundSizes() []int {
	var sizes []int
	for i := 0; i < 80; i++ { // 1 KB .. ~64 KB
		sizes = append(sizes, 1200+i*i*10)
	}
	for i := 0; i < 15; i++ { // 100 KB .. ~1 MB
		sizes = append(sizes, 100<<10+i*64<<10)
	}
	sizes = append(sizes, 1500<<10, 2<<20, 3<<20, 4<<20, 5<<20-4096)
	return sizes
}

// TestInboundDecryptionNeverRefused is issue 13's first point: 100 mails
// encrypted by openssl cms to an internal user, 1 KB to 5 MB, go through
// the real daemon and the real smime plugin, which replaces each by its
// decrypted form. Every one must be accepted at the first try (the host
// used to cancel the hook's context before the replacement had been
// streamed back, and answered 451 at random).
func TestInboundDecryptionNeverRefused(t *testing.T) {
	needOpenSSL(t)
	bin := pluginBinary(t, "smime")
	dir := shortTempDir(t)
	pki := newSMIMEPKI(t, dir)
	bobCrt, bobKey := pki.issue("bob", "bob@example.test")

	e := startEnvConfig(t, func(s string) string {
		s = strings.Replace(s, `max_message_size = "1MiB"`, `max_message_size = "8MiB"`, 1)
		s = strings.Replace(s, `data_timeout = "5s"`, `data_timeout = "60s"`, 1)
		return s + fmt.Sprintf(`
[[plugin]]
name = "smime"
path = %q
timeout = "30s"
on_failure = "tempfail"
[plugin.config]
trust_store = %q
internal_domains = ["example.test"]
[[plugin.config.identity]]
cert = %q
key = %q
`, bin, pki.caFile("trust.pem"), bobCrt, bobKey)
	})
	waitPluginNamed(t, e, "smime", "running")

	sizes := inboundSizes()
	if len(sizes) != 100 {
		t.Fatalf("%d sizes", len(sizes))
	}
	rng := rand.New(rand.NewPCG(13, 1))
	mails := make([]string, len(sizes))
	for i, size := range sizes {
		// base64 grows by 4/3; leave room for the CMS and MIME framing.
		plainLen := max((size-800)*7/10, 64)
		raw := make([]byte, plainLen*3/4)
		for j := range raw {
			raw[j] = byte(rng.Uint32())
		}
		var body strings.Builder
		fmt.Fprintf(&body, "Content-Type: text/plain; charset=us-ascii\r\n\r\nmarker-%03d\r\n", i)
		b64 := base64.StdEncoding.EncodeToString(raw)
		for len(b64) > 0 {
			n := min(76, len(b64))
			body.WriteString(b64[:n] + "\r\n")
			b64 = b64[n:]
		}
		in := filepath.Join(dir, "plain.txt")
		if err := os.WriteFile(in, []byte(body.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("openssl", "cms", "-encrypt", "-aes256", "-in", in,
			"-from", "carol@remote.test", "-to", "bob@example.test", "-subject", fmt.Sprintf("sealed %d", i), bobCrt).Output()
		if err != nil {
			t.Fatalf("openssl cms -encrypt: %v", err)
		}
		mails[i] = strings.ReplaceAll(strings.ReplaceAll(string(out), "\r\n", "\n"), "\n", "\r\n")
	}
	if n := len(mails[0]); n < 1024 || n > 2048 {
		t.Fatalf("smallest mail is %d bytes", n)
	}
	if n := len(mails[99]); n > 5<<20 || n < 4<<20 {
		t.Fatalf("largest mail is %d bytes", n)
	}

	// Two sessions at once, as a busy MX would see them.
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(mails))
	for w := 0; w < 2; w++ {
		c := e.dial(smtpd.MX)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(mails); i += 2 {
				errs[i] = send(c, "carol@remote.test", []string{"bob@example.test"}, mails[i])
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("mail %d (%d bytes) refused: %v", i, len(mails[i]), err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	got := e.waitMail("example.test", "bob", len(mails), 60*time.Second)
	t.Logf("%d mails, %d KB, accepted and delivered in %s", len(mails), total(mails)>>10, time.Since(start).Round(time.Millisecond))
	seen := map[string]bool{}
	for _, m := range got {
		if !strings.Contains(m, "X-Posthorn-SMIME: decrypted") || strings.Contains(m, "application/pkcs7-mime") {
			t.Fatalf("not decrypted:\n%.600s", m)
		}
		if i := strings.Index(m, "marker-"); i >= 0 {
			seen[m[i:i+10]] = true
		}
	}
	if len(seen) != len(mails) {
		t.Fatalf("%d distinct decrypted mails, want %d", len(seen), len(mails))
	}
}

func total(ms []string) int {
	n := 0
	for _, m := range ms {
		n += len(m)
	}
	return n
}

// TestPlainMailWhileSMIMEPluginStopped: the smime plugin declares which
// mail it wants (S/MIME content types, its result header, the collection
// address). While it is SIGSTOPped, plain mail is accepted at once; an
// encrypted mail, which it would have seen, gets its on_failure (451).
func TestPlainMailWhileSMIMEPluginStopped(t *testing.T) {
	needOpenSSL(t)
	bin := pluginBinary(t, "smime")
	dir := shortTempDir(t)
	pki := newSMIMEPKI(t, dir)
	bobCrt, bobKey := pki.issue("bob", "bob@example.test")
	e := startEnv(t, fmt.Sprintf(`
[[plugin]]
name = "smime"
path = %q
timeout = "2s"
on_failure = "tempfail"
[plugin.config]
trust_store = %q
internal_domains = ["example.test"]
[[plugin.config.identity]]
cert = %q
key = %q
`, bin, pki.caFile("trust.pem"), bobCrt, bobKey))
	waitPluginNamed(t, e, "smime", "running")
	var pid int
	for _, s := range e.d.PluginStatus() {
		if s.Name == "smime" {
			pid = s.Pid
		}
	}
	if pid == 0 {
		t.Fatal("no pid for the smime plugin")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })

	c := e.dial(smtpd.MX)
	for i := range 5 {
		start := time.Now()
		if err := send(c, "carol@remote.test", []string{"bob@example.test"}, testMessage(fmt.Sprintf("plain%d", i))); err != nil {
			t.Fatalf("plain mail %d while the smime plugin is stopped: %v", i, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("plain mail %d took %s: held up by the stopped plugin", i, d)
		}
	}
	e.waitMail("example.test", "bob", 5, 10*time.Second)

	in := filepath.Join(dir, "plain.txt")
	os.WriteFile(in, []byte("Content-Type: text/plain\r\n\r\nsealed\r\n"), 0o600)
	sealed, err := exec.Command("openssl", "cms", "-encrypt", "-aes256", "-in", in, "-to", "bob@example.test", bobCrt).Output()
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.ReplaceAll(strings.ReplaceAll(string(sealed), "\r\n", "\n"), "\n", "\r\n")
	if err := send(c, "carol@remote.test", []string{"bob@example.test"}, msg); codeOf(err) != 451 {
		t.Fatalf("encrypted mail while the smime plugin is stopped: want 451 (on_failure), got %v", err)
	}
}
