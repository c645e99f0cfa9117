// Package browsertest starts headless Chromium for tests that drive
// posthorn's web pages (web mailbox, self-service) through a real browser,
// and stops it completely when the test ends.
//
// "Completely" is the point of this package. Chromium forks a zygote,
// renderers and utility processes that outlive the browser process
// chromedp kills, and they keep writing into the profile directory for a
// moment; t.TempDir's removal then fails with "directory not empty", which
// failed CI. Here the browser runs in its own process group; at the end of
// the test the whole group is killed, the test waits until no process of
// the group is alive, and only then is the profile removed.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Path returns the Chromium binary, or skips the test when there is none
// (.ci/run installs Debian's chromium).
func Path(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (.ci/run installs it)")
	}
	return bin
}

// Options adjusts the browser. The zero value is a 900×1000 window in the
// browser's default language, a 4-minute limit for the whole test and the
// test CA's certificates refused.
type Options struct {
	Lang          string        // Accept-Language, e.g. "de"; empty keeps Chromium's default
	Width, Height int           // window size; 0 means 900×1000
	Timeout       time.Duration // limit for everything the test does in the browser; 0 means 4 minutes
	// IgnoreCertErrors accepts any server certificate (the test CA is not
	// in Chromium's store).
	IgnoreCertErrors bool
}

// Start starts Chromium (skipping the test when it is not installed) and
// returns a browser context for chromedp.Run. Everything is torn down by
// t.Cleanup: on a loaded machine Chromium alone can take a minute to
// start, which is why the default limit is generous.
func Start(t testing.TB, o Options) context.Context {
	t.Helper()
	bin := Path(t)
	if o.Width == 0 || o.Height == 0 {
		o.Width, o.Height = 900, 1000
	}
	if o.Timeout == 0 {
		o.Timeout = 4 * time.Minute
	}
	dir, err := os.MkdirTemp("", "posthorn-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-crash-reporter", true),
		chromedp.WindowSize(o.Width, o.Height), chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.ModifyCmdFunc(func(c *exec.Cmd) {
			// Its own process group, so that the cleanup can kill every
			// process Chromium forked; and killed with the test binary.
			c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			cmd = c
		}))
	if o.Lang != "" {
		opts = append(opts, chromedp.Flag("lang", o.Lang))
	}
	if o.IgnoreCertErrors {
		opts = append(opts, chromedp.Flag("ignore-certificate-errors", true))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, o.Timeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc() // kills the browser process and waits for it
		if cmd != nil && cmd.Process != nil {
			pgid := cmd.Process.Pid
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			if !waitGroupGone(pgid, 30*time.Second) {
				t.Errorf("browsertest: Chromium processes of group %d still alive 30 s after SIGKILL", pgid)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("browsertest: removing the browser profile: %v", err)
		}
	})
	return ctx
}

// waitGroupGone waits until no live process (zombies do not count: in a
// container nobody may reap them) belongs to process group pgid.
func waitGroupGone(pgid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if !groupAlive(pgid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupAlive reports whether /proc lists a process in group pgid that is
// not a zombie.
func groupAlive(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		// No /proc: fall back to kill(0), which also counts zombies.
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces and ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 {
			continue
		}
		if f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			return true
		}
	}
	return false
}
