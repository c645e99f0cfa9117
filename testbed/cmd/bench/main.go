// Command bench is `make bench`: it starts a real `posthorn serve` on a
// fresh spool with local Maildir delivery, sends N messages of S KiB over
// C concurrent SMTP sessions with testbed/loadgen, waits until every
// accepted message is in the Maildir, and prints accepted msgs/s,
// end-to-end msgs/s, p50/p99 time to 250, CPU time per message and the
// daemon's peak RSS.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/posthorn/posthorn/testbed/loadgen"
)

func main() {
	bin := flag.String("posthorn", "bin/posthorn", "posthorn binary")
	n := flag.Int("n", 5000, "messages")
	size := flag.Int("size", 10, "message size in KiB")
	c := flag.Int("c", 20, "concurrent sessions")
	keep := flag.Bool("keep", false, "keep the state directory")
	flag.Parse()
	if err := run(*bin, *n, *size, *c, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func run(bin string, n, size, conc int, keep bool) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "phbench")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	} else {
		fmt.Println("state in", dir)
	}
	mx, err := freeAddr()
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`
hostname = "bench.example.test"
[log]
level = "warn"
[smtp]
mx_address = %q
submission_address = ""
submissions_address = ""
max_sessions_per_ip = %d
[queue]
dir = "spool"
workers = 20
[local]
maildir_root = "mail"
[metrics]
address = ""
[control]
socket = "ctl.sock"
[tls]
self_signed_dir = "tls"
[[domain]]
name = "example.test"
mailboxes = ["postmaster", "bench"]
`, mx, conc+5)
	cfgPath := filepath.Join(dir, "posthorn.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve", "-c", cfgPath)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", mx); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			return fmt.Errorf("posthorn did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cpu0, err := cpuTime(cmd.Process.Pid)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := loadgen.Run(ctx, loadgen.Config{Addr: mx, N: n, Concurrency: conc, SizeKB: size,
		From: "load@bench.example.test", To: []string{"bench@example.test"}})
	if err != nil {
		return err
	}
	newDir := filepath.Join(dir, "mail", "example.test", "bench", "new")
	for {
		ents, _ := os.ReadDir(newDir)
		if len(ents) >= res.Sent {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("only %d of %d delivered", len(ents), res.Sent)
		}
		time.Sleep(5 * time.Millisecond)
	}
	e2e := time.Since(start)
	cpu1, _ := cpuTime(cmd.Process.Pid)
	rss, _ := peakRSS(cmd.Process.Pid)
	fmt.Printf("posthorn bench: N=%d S=%dKiB C=%d (fsync per message, Maildir delivery)\n", n, size, conc)
	fmt.Printf("  accepted:       %d (failed %d) in %v = %.0f msgs/s\n", res.Sent, res.Failed, res.Duration.Round(time.Millisecond), res.Rate)
	fmt.Printf("  end to end:     %d in Maildir after %v = %.0f msgs/s\n", res.Sent, e2e.Round(time.Millisecond), float64(res.Sent)/e2e.Seconds())
	fmt.Printf("  time to 250:    p50 %v  p90 %v  p99 %v  max %v\n", res.P50.Round(10*time.Microsecond), res.P90.Round(10*time.Microsecond),
		res.P99.Round(10*time.Microsecond), res.Max.Round(10*time.Microsecond))
	if res.Sent > 0 {
		fmt.Printf("  daemon CPU:     %v in all, %.2f ms per message\n", (cpu1 - cpu0).Round(time.Millisecond), float64((cpu1-cpu0).Microseconds())/1000/float64(res.Sent))
	}
	fmt.Printf("  peak RSS:       %.1f MiB\n", float64(rss)/1024)
	for _, e := range res.Errors {
		fmt.Println("  error:", e)
	}
	return nil
}

// cpuTime reads user+system CPU time of pid from /proc.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

// peakRSS reads VmHWM (KiB) of pid.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strconv.ParseInt(strings.Fields(line)[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM")
}
