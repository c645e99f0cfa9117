// Package abuse runs the floods of issue 20 against a real `posthorn
// serve` on loopback and measures how the daemon holds up: an AUTH flood
// (parallel password guessers from a few addresses, each reusing its
// session) while the real user logs in from another address, and a
// slow-client flood (connections that trickle a byte a second) while a
// client network and an unrelated address send mail. It reads the daemon's
// RSS from /proc and its session counters from /metrics. `make
// bench-abuse` prints the figures; abuse_test.go holds them to the issue's
// limits.
package abuse

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Config says what to run.
type Config struct {
	Bin      string        // the posthorn binary
	Guessers int           // parallel AUTH guessers (100)
	Sources  int           // addresses they come from, 127.0.0.11 on (5)
	Duration time.Duration // of each flood
	Slow     int           // slow clients (200)
	Logins   int           // logins by the real user during the AUTH flood (5)
	Stderr   io.Writer     // the daemon's log; nil discards it
}

// Result is what was measured.
type Result struct {
	// AUTH flood
	AuthAttempts, AuthRefused535, AuthThrottled454 int64           // 454: refused unchecked (421 and hang-up)
	LoginLatencies                                 []time.Duration // the AUTH exchange
	SessionLatencies                               []time.Duration // connect + STARTTLS + AUTH
	PeakRSSKiB                                     int64           // sampled from /proc/PID/status VmRSS during the floods
	HWMKiB                                         int64           // VmHWM at the end

	// slow-client flood
	SlowGreeted, SlowRefused int64
	SlowDisconnectedBy       time.Duration // longest a slow client stayed connected
	TrustedLatency           time.Duration // a client network's connect-to-250 under the flood
	OtherLatency             time.Duration // an unrelated address's connect-to-250 under the flood
	OtherErr                 string
	SlowConnectedMax         int64 // slow clients greeted and connected at once, at most, as the clients saw it
	MXSessionsPeak           int64 // most MX sessions open at once, as the daemon counted them (-1: not scraped)
	Refused                  map[string]float64
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

const (
	user = "alice@example.test"
	pass = "correct horse battery"
)

// Run starts the daemon in a temp dir, runs both floods and stops it.
func Run(ctx context.Context, c Config) (*Result, error) {
	bin, err := filepath.Abs(c.Bin)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "phabuse")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var addrs [3]string
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return nil, err
		}
	}
	mx, sub, met := addrs[0], addrs[1], addrs[2]
	cfg := fmt.Sprintf(`
hostname = "abuse.example.test"
[log]
level = "warn"
[smtp]
mx_address = %q
submission_address = %q
submissions_address = ""
client_networks = ["127.0.0.1/32"]
max_sessions = 150
reserved_sessions = 10
max_sessions_per_ip = 25
max_connection_rate_per_ip = 600
command_timeout = "5s"
data_timeout = "10s"
[auth]
password_file = "passwd"
[queue]
dir = "spool"
[local]
maildir_root = "mail"
[metrics]
address = %q
[control]
socket = "ctl.sock"
[tls]
self_signed_dir = "tls"
[[domain]]
name = "example.test"
mailboxes = ["postmaster"]
`, mx, sub, met)
	cfgPath := filepath.Join(dir, "posthorn.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	pw := exec.Command(bin, "passwd", "-c", cfgPath, user)
	pw.Dir = dir
	pw.Stdin = strings.NewReader(pass + "\n")
	if out, err := pw.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("posthorn passwd: %v: %s", err, out)
	}
	cmd := exec.Command(bin, "serve", "-c", cfgPath)
	cmd.Dir = dir
	cmd.Stderr = c.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	for i := 0; ; i++ {
		if conn, err := net.Dial("tcp", sub); err == nil {
			conn.Close()
			break
		}
		if i > 400 {
			return nil, errors.New("posthorn did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	res := &Result{}
	stop := sampleRSS(cmd.Process.Pid, &res.PeakRSSKiB)
	defer stop()

	if err := authFlood(ctx, c, sub, res); err != nil {
		return res, err
	}
	if err := slowFlood(ctx, c, mx, met, res); err != nil {
		return res, err
	}
	stop()
	res.HWMKiB, _ = procStatus(cmd.Process.Pid, "VmHWM:")
	return res, nil
}

// sampleRSS keeps *peak at the highest VmRSS seen until stop is called.
func sampleRSS(pid int, peak *int64) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := procStatus(pid, "VmRSS:"); err == nil && v > atomic.LoadInt64(peak) {
				atomic.StoreInt64(peak, v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// procStatus reads a "Key: N kB" line of /proc/PID/status.
func procStatus(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key) {
			return strconv.ParseInt(strings.Fields(line)[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}

func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	return d.Dial("tcp", addr)
}

var clientTLS = &tls.Config{InsecureSkipVerify: true} // the daemon's self-signed certificate

// session connects from src, says EHLO and does STARTTLS.
func session(src, addr string) (*smtp.Client, error) {
	conn, err := dialFrom(src, addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c, err := smtp.NewClientStartTLS(conn, clientTLS)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func authFlood(ctx context.Context, c Config, sub string, res *Result) error {
	ctx, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for g := 0; g < c.Guessers; g++ {
		src := fmt.Sprintf("127.0.0.%d", 11+g%max(1, c.Sources))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				cl, err := session(src, sub)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				for ctx.Err() == nil {
					err := cl.Auth(sasl.NewPlainClient("", user, fmt.Sprintf("guess-%d", n)))
					atomic.AddInt64(&res.AuthAttempts, 1)
					var se *smtp.SMTPError
					if !errors.As(err, &se) {
						break // connection gone: a new one
					}
					switch se.Code {
					case 535:
						atomic.AddInt64(&res.AuthRefused535, 1)
					case 421, 454:
						atomic.AddInt64(&res.AuthThrottled454, 1)
					}
					n++
				}
				cl.Close()
			}
		}()
	}
	// The real user logs in from another address while the flood runs,
	// once the guessers are at it.
	time.Sleep(c.Duration / 5)
	var loginErr error
	for i := 0; i < c.Logins; i++ {
		start := time.Now()
		var authTime time.Duration
		cl, err := session("127.0.0.42", sub)
		if err == nil {
			a := time.Now()
			err = cl.Auth(sasl.NewPlainClient("", user, pass))
			authTime = time.Since(a)
			cl.Quit()
		}
		if err != nil {
			loginErr = fmt.Errorf("real user's login %d: %w", i, err)
			break
		}
		res.SessionLatencies = append(res.SessionLatencies, time.Since(start))
		res.LoginLatencies = append(res.LoginLatencies, authTime)
		time.Sleep(c.Duration / time.Duration(5*max(1, c.Logins)))
	}
	wg.Wait()
	return loginErr
}

func slowFlood(ctx context.Context, c Config, mx, met string, res *Result) error {
	ctx, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()
	var wg sync.WaitGroup
	var longest atomic.Int64
	var connected atomic.Int64
	for i := 0; i < c.Slow; i++ {
		src := fmt.Sprintf("127.0.0.%d", 100+i%20)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				d, greeted := trickle(ctx, src, mx, &connected, &res.SlowConnectedMax)
				if !greeted {
					atomic.AddInt64(&res.SlowRefused, 1)
					select { // a refused client comes back a little later
					case <-ctx.Done():
					case <-time.After(500 * time.Millisecond):
					}
					continue
				}
				atomic.AddInt64(&res.SlowGreeted, 1)
				for {
					old := longest.Load()
					if int64(d) <= old || longest.CompareAndSwap(old, int64(d)) {
						break
					}
				}
			}
		}()
	}
	time.Sleep(c.Duration / 3)
	var terr error
	res.TrustedLatency, terr = sendOne("127.0.0.1", mx)
	if terr != nil {
		res.TrustedLatency = -1
	}
	var oerr error
	res.OtherLatency, oerr = sendOne("127.0.0.43", mx)
	if oerr != nil {
		res.OtherErr = oerr.Error()
	}
	wg.Wait()
	res.SlowDisconnectedBy = time.Duration(longest.Load())
	res.MXSessionsPeak = -1
	if m, err := scrape(met); err == nil {
		if v, ok := m[`posthorn_smtp_connections_open_peak{listener="mx"}`]; ok {
			res.MXSessionsPeak = int64(v)
		}
		res.Refused = map[string]float64{}
		for k, v := range m {
			if strings.HasPrefix(k, "posthorn_smtp_connections_refused_total") {
				res.Refused[k] = v
			}
		}
	}
	return nil
}

// trickle connects from src and sends one byte a second of a command
// that never ends, until the server hangs up or ctx is done; it returns
// how long the server kept it and whether it was greeted with 220.
func trickle(ctx context.Context, src, mx string, connected *atomic.Int64, most *int64) (time.Duration, bool) {
	conn, err := dialFrom(src, mx)
	if err != nil {
		return 0, false
	}
	defer conn.Close()
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220") {
		return 0, false
	}
	n := connected.Add(1)
	defer connected.Add(-1)
	for {
		old := atomic.LoadInt64(most)
		if n <= old || atomic.CompareAndSwapInt64(most, old, n) {
			break
		}
	}
	closed := make(chan struct{})
	go func() { // the server's 421 and close
		conn.SetReadDeadline(time.Time{})
		io.Copy(io.Discard, br)
		close(closed)
	}()
	for {
		conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write([]byte("N")); err != nil {
			return time.Since(start), true
		}
		select {
		case <-ctx.Done():
			return time.Since(start), true
		case <-closed:
			return time.Since(start), true
		case <-time.After(time.Second):
		}
	}
}

// sendOne sends a short message from src to postmaster and returns the
// time from connect to the 250.
func sendOne(src, mx string) (time.Duration, error) {
	start := time.Now()
	conn, err := dialFrom(src, mx)
	if err != nil {
		return 0, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	cl := smtp.NewClient(conn)
	defer cl.Close()
	if err := cl.SendMail("a@example.org", []string{"postmaster@example.test"},
		strings.NewReader("Subject: under a flood\r\n\r\nhello\r\n")); err != nil {
		return time.Since(start), err
	}
	return time.Since(start), nil
}

// scrape reads the daemon's /metrics into name{labels} -> value.
func scrape(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// Print writes the figures.
func (r *Result) Print(w io.Writer, c Config) {
	lat := slices.Clone(r.LoginLatencies)
	slices.Sort(lat)
	slat := slices.Clone(r.SessionLatencies)
	slices.Sort(slat)
	fmt.Fprintf(w, "AUTH flood: %d guessers from %d addresses for %s\n", c.Guessers, c.Sources, c.Duration)
	fmt.Fprintf(w, "  AUTH attempts %d: 535 (checked) %d, 421 (throttled, no hash, hang-up) %d; connections refused at connect are counted below\n", r.AuthAttempts, r.AuthRefused535, r.AuthThrottled454)
	fmt.Fprintf(w, "  real user's logins from another address: AUTH %v; connect+STARTTLS+AUTH %v\n", lat, slat)
	fmt.Fprintf(w, "  daemon RSS: peak sampled %.1f MiB, VmHWM %.1f MiB\n", float64(r.PeakRSSKiB)/1024, float64(r.HWMKiB)/1024)
	fmt.Fprintf(w, "slow-client flood: %d clients trickling a byte a second, max_sessions 150, reserved 10, 25 per address, command_timeout 5s\n", c.Slow)
	fmt.Fprintf(w, "  sessions: greeted %d, refused with 421 %d; at most %d MX sessions open at once (daemon's count; %d as the slow clients saw it, who notice a close late)\n", r.SlowGreeted, r.SlowRefused, r.MXSessionsPeak, r.SlowConnectedMax)
	fmt.Fprintf(w, "  longest a trickling client stayed connected: %s\n", r.SlowDisconnectedBy.Round(time.Millisecond))
	fmt.Fprintf(w, "  client network sends a message meanwhile: %s\n", r.TrustedLatency.Round(time.Millisecond))
	if r.OtherErr != "" {
		fmt.Fprintf(w, "  unrelated address: %v after %s\n", r.OtherErr, r.OtherLatency.Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "  unrelated address sends a message meanwhile: %s\n", r.OtherLatency.Round(time.Millisecond))
	}
	keys := make([]string, 0, len(r.Refused))
	for k := range r.Refused {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s %.0f\n", k, r.Refused[k])
	}
}
