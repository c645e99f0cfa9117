// Command benchcompare is `make bench-compare` (issue 19): it runs a
// private throw-away Postfix instance (Debian postfix, under a temp dir,
// relayhost = a local sink) and posthorn (relaying everything to the
// same sink) on the same workloads, interleaved, several repetitions,
// and prints a median/min/max table of accepted and end-to-end msgs/s,
// the MTA's CPU ms per message (from /proc, all processes of the MTA
// including reaped children) and its peak PSS, plus the ratio
// posthorn/Postfix. Both fsync before 250 (Postfix by default, posthorn
// always). No TLS. The load comes from testbed/loadgen: one message per
// connection, as the first measurement with Postfix's
// smtp-source did, or with -reuse many messages per session. The table
// also shows the CPU this program itself (load generator and sink) used
// per message: it shares the two cores with the MTA under test.
//
// With -smime (`make bench-smime`, issue 19.4) it compares posthorn
// with posthorn whose smime plugin signs and encrypts every relayed
// message instead (a throw-away PKI, RSA 2048; the sink checks that every
// message arrives encrypted), and prints the CPU added per message.
//
// Pacing (-rate): unpaced, loadgen offers messages as fast as posthorn
// accepts them; with S/MIME acceptance (~370/s here) outruns delivery
// (~220/s), the spool fills during the run and its file operations may
// get slower, so part of the CPU "added" can be the backlog, not the
// S/MIME path. With -rate every workload runs twice per repetition: unpaced,
// then both contenders paced at the same offered rate (loadgen's
// Config.Rate, spread over the sessions). -rate auto, the default with
// -smime, paces at 0.6 × the lower end-to-end rate of the two unpaced
// runs of the same repetition (with -smime: what S/MIME delivery
// sustained; a paced run costs more CPU per message than an unpaced
// one, each message waking the processes up on its own, so 0.8 was not
// always kept up with), so that delivery keeps up; -rate N paces at N
// msgs/s (for A/B comparisons of two builds: the same rate for both);
// -rate 0 (the default without -smime) runs unpaced only. The table has
// a row group per mode, labelled "unpaced" and "paced at R/s" (the
// median of the repetitions' rates); a paced run whose end-to-end rate
// fell short of the offered rate is flagged in its line.
//
// Not part of `make test`: a benchmark, whose figures mean something
// only on an otherwise idle machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/posthorn/posthorn/testbed/loadgen"
)

var (
	profDir     string
	profFor     time.Duration
	skipPostfix bool
	smimeMode   bool
	reuse       bool
	// autoRateFraction: -rate auto paces at this fraction of the lower
	// unpaced end-to-end rate.
	autoRateFraction = 0.6
	smime            *smimeSetup // with -smime
)

type workload struct {
	name  string
	n     int
	size  int // KiB
	conc  int
	rcpts int
}

var allWorkloads = []workload{
	{"10k", 5000, 10, 20, 1},
	{"100k", 2000, 100, 10, 1},
	{"1m", 1000, 1024, 5, 1},
	{"10k-10rcpt", 5000, 10, 20, 10},
}

// sample is one run of one MTA on one workload.
type sample struct {
	accept, e2e float64 // msgs/s
	cpuMS       float64 // MTA CPU ms per message
	harnessMS   float64 // this program's CPU ms per message (load and sink)
	sysMS       float64 // of cpuMS: the main process's system time
	pluginMS    float64 // of cpuMS: the processes below it (plugins)
	pssMiB      float64
	p50, p90    time.Duration // end of DATA to the reply (loadgen)
	rate        float64       // offered rate (paced runs), msgs/s; 0 unpaced
}

// mta is a running MTA under test.
type mta interface {
	name() string
	addr() string
	pids() []int // the processes whose CPU and memory count
	root() int   // the process whose reaped children's CPU counts too
	stop()
}

func main() {
	posthorn := flag.String("posthorn", "bin/posthorn", "posthorn binary (make build)")
	master := flag.String("postfix-master", "/usr/lib/postfix/sbin/master", "Postfix master binary")
	reps := flag.Int("reps", 3, "repetitions of each workload per MTA")
	scale := flag.Float64("scale", 1, "fraction of each workload's message count to send (e.g. 0.1)")
	flag.StringVar(&profDir, "profile", "", "directory for posthorn's pprof CPU and allocation profiles (one per run; serves pprof on a loopback metrics listener)")
	flag.BoolVar(&skipPostfix, "posthorn-only", false, "run only posthorn (for profiling; no comparison)")
	flag.DurationVar(&profFor, "profile-seconds", 20*time.Second, "length of each CPU profile (from the start of the load)")
	only := flag.String("workloads", "", "comma-separated subset of: 10k,100k,1m,10k-10rcpt (default all; 100k with -smime)")
	flag.BoolVar(&reuse, "reuse", false, "send many messages per session (RSET between them) instead of one message per connection")
	flag.BoolVar(&smimeMode, "smime", false, "instead of Postfix, compare posthorn with posthorn signing and encrypting every message with the smime plugin (issue 19.4: CPU added per message)")
	smimePlugin := flag.String("smime-plugin", "", "posthorn-smime binary for -smime (default: go build it)")
	rateFlag := flag.String("rate", "", "pace the load: auto (default with -smime: a second, paced run of each workload at 0.6 × the lower unpaced end-to-end rate of the repetition), N (a second run paced at N msgs/s) or 0 (unpaced only; default without -smime)")
	smimeRSASigner := flag.String("smime-rsa-signer", "auto", "the smime plugin's rsa_signer for the -smime RSA identities: auto (its default: OpenSSL where it can be loaded), go (crypto/rsa) or openssl")
	smimeKey := flag.String("smime-key", "rsa", "key type of the -smime identities: rsa (RSA 2048: PKCS #1 v1.5 signatures, RSA key transport) or ec (P-256: ECDSA signatures, ECDH key agreement)")
	flag.Parse()
	if smimeMode && *only == "" {
		*only = "100k"
	}
	if *rateFlag == "" {
		*rateFlag = "0"
		if smimeMode {
			*rateFlag = "auto"
		}
	}
	rate := -1.0 // auto
	if *rateFlag != "auto" {
		r, err := strconv.ParseFloat(*rateFlag, 64)
		if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
			fmt.Fprintf(os.Stderr, "benchcompare: -rate %q: want auto, 0 or a rate in msgs/s\n", *rateFlag)
			os.Exit(2)
		}
		rate = r
	}
	if _, err := os.Stat(*master); err != nil && !smimeMode && !skipPostfix {
		fmt.Fprintln(os.Stderr, "benchcompare: Postfix is not installed (apt-get install postfix):", err)
		os.Exit(2)
	}
	ws := allWorkloads
	if *only != "" {
		ws = nil
		for _, w := range allWorkloads {
			for _, o := range strings.Split(*only, ",") {
				if o == w.name {
					ws = append(ws, w)
				}
			}
		}
	}
	if smimeMode {
		maxRcpts := 1
		for _, w := range ws {
			maxRcpts = max(maxRcpts, w.rcpts)
		}
		plugin := *smimePlugin
		if plugin != "" {
			// posthorn runs in its own directory: a relative path would
			// name a file there.
			abs, err := filepath.Abs(plugin)
			if err != nil {
				fmt.Fprintln(os.Stderr, "benchcompare:", err)
				os.Exit(1)
			}
			plugin = abs
		}
		sm, err := newSMIME(plugin, maxRcpts, *smimeKey, *smimeRSASigner)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchcompare:", err)
			os.Exit(1)
		}
		defer sm.close()
		smime = sm
	}
	if err := run(*posthorn, *master, ws, *reps, *scale, rate); err != nil {
		fmt.Fprintln(os.Stderr, "benchcompare:", err)
		os.Exit(1)
	}
}

// run measures every workload reps times per contender, interleaved;
// rate > 0 adds a run of each paced at that rate, rate < 0 (auto) one
// paced at autoRateFraction of the repetition's lower unpaced
// end-to-end rate, rate 0 none.
func run(posthorn, master string, ws []workload, reps int, scale, rate float64) error {
	snk, err := startSink()
	if err != nil {
		return err
	}
	defer snk.close()
	type key struct {
		w, mta string
		paced  bool
	}
	results := map[key][]sample{}
	// Two contenders: Postfix and posthorn, or with -smime posthorn and
	// posthorn signing and encrypting everything.
	names := []string{"postfix", "posthorn"}
	heads := []string{"Postfix", "posthorn"}
	starters := []func() (mta, error){
		func() (mta, error) { return startPostfix(master, snk.addr()) },
		func() (mta, error) { return startPosthorn(posthorn, snk, nil) },
	}
	if smime != nil {
		names = []string{"posthorn", "posthorn+smime"}
		heads = []string{"posthorn", "posthorn + S/MIME sign+encrypt (" + smime.keyName + ")"}
		starters[0] = starters[1]
		starters[1] = func() (mta, error) { return startPosthorn(posthorn, snk, smime) }
	}
	modes := []bool{false}
	if rate != 0 {
		modes = append(modes, true)
	}
	for _, w := range ws {
		w.n = max(1, int(float64(w.n)*scale))
		for rep := 0; rep < reps; rep++ {
			// Interleaved: alternate which MTA goes first.
			order := []int{0, 1}
			if rep%2 == 1 {
				order = []int{1, 0}
			}
			// The lower unpaced end-to-end rate of this repetition
			// (-rate auto).
			slowest := math.Inf(1)
			for _, paced := range modes {
				r := 0.0
				if paced {
					r = rate
					if r < 0 {
						r = autoRateFraction * slowest
					}
				}
				for _, i := range order {
					if skipPostfix && i == 0 && smime == nil {
						continue
					}
					s, err := measureOne(starters[i], snk, w, rep, r)
					if err != nil {
						return err
					}
					if !paced {
						slowest = min(slowest, s.e2e)
					}
					results[key{w.name, names[i], paced}] = append(results[key{w.name, names[i], paced}], s)
				}
			}
		}
	}
	mode := "one message per connection"
	if reuse {
		mode = "many messages per session"
	}
	fmt.Printf("\n%s; %d repetitions each, median [min–max]; ratio = %s/%s of the medians (CPU and PSS: lower is better)\n\n", mode, reps, heads[1], heads[0])
	fmt.Printf("| workload | metric | %s | %s | ratio |\n|---|---|---|---|---|\n", heads[0], heads[1])
	for _, w := range ws {
		for _, paced := range modes {
			pf, ph := results[key{w.name, names[0], paced}], results[key{w.name, names[1], paced}]
			n := max(1, int(float64(w.n)*scale))
			label := fmt.Sprintf("%d × %d KiB × %d rcpt, c=%d", n, w.size, w.rcpts, w.conc)
			switch {
			case paced:
				label += fmt.Sprintf(", paced at %.0f/s", stats(append(slices.Clone(pf), ph...), func(s sample) float64 { return s.rate }).med)
			case len(modes) > 1:
				label += ", unpaced"
			}
			table(label, pf, ph)
		}
	}
	return nil
}

// measureOne starts one contender, measures one run of w (paced at rate
// if > 0), stops it and prints the run's line.
func measureOne(start func() (mta, error), snk *sink, w workload, rep int, rate float64) (sample, error) {
	m, err := start()
	if err != nil {
		return sample{}, err
	}
	s, err := measure(m, snk, w, rate)
	m.stop()
	if err != nil {
		return sample{}, fmt.Errorf("%s %s: %w", m.name(), w.name, err)
	}
	pace := "unpaced"
	if rate > 0 {
		pace = fmt.Sprintf("paced %.0f/s", rate)
		if s.e2e < 0.95*rate {
			pace += " (delivery did not keep up)"
		}
	}
	fmt.Fprintf(os.Stderr, "%-10s %-8s rep %d %s: accept %.0f/s e2e %.0f/s cpu %.2f ms/msg (main process system %.2f, child processes %.2f) pss %.1f MiB (load+sink cpu %.2f ms/msg) data→reply p50 %v p90 %v\n",
		w.name, m.name(), rep+1, pace, s.accept, s.e2e, s.cpuMS, s.sysMS, s.pluginMS, s.pssMiB, s.harnessMS,
		s.p50.Round(10*time.Microsecond), s.p90.Round(10*time.Microsecond))
	return s, nil
}

// table prints the rows of one workload (and pacing mode): pf and ph are
// the samples of the two contenders.
func table(label string, pf, ph []sample) {
	for _, m := range []struct {
		name string
		f    func(sample) float64
		fmt  string
	}{
		{"accept msgs/s", func(s sample) float64 { return s.accept }, "%.0f"},
		{"end-to-end msgs/s", func(s sample) float64 { return s.e2e }, "%.0f"},
		{"MTA CPU ms/msg", func(s sample) float64 { return s.cpuMS }, "%.2f"},
		{"peak PSS MiB", func(s sample) float64 { return s.pssMiB }, "%.1f"},
		{"load+sink CPU ms/msg", func(s sample) float64 { return s.harnessMS }, "%.2f"},
	} {
		a, b := stats(pf, m.f), stats(ph, m.f)
		fmt.Printf("| %s | %s | %s | %s | %.2f× |\n", label, m.name, a.format(m.fmt), b.format(m.fmt), b.med/a.med)
	}
	if smime != nil {
		for _, m := range []struct {
			name string
			f    func(sample) float64
		}{
			{"of the MTA CPU: posthorn's system time, ms/msg", func(s sample) float64 { return s.sysMS }},
			{"of the MTA CPU: plugin processes, ms/msg", func(s sample) float64 { return s.pluginMS }},
		} {
			a, b := stats(pf, m.f), stats(ph, m.f)
			fmt.Printf("| %s | %s | %s | %s | |\n", label, m.name, a.format("%.2f"), b.format("%.2f"))
		}
		cpu := func(s sample) float64 { return s.cpuMS }
		fmt.Printf("| %s | CPU added by S/MIME, ms/msg (median of each) | | %.2f | |\n", label, stats(ph, cpu).med-stats(pf, cpu).med)
	}
}

type stat struct{ med, lo, hi float64 }

func (s stat) format(f string) string {
	return fmt.Sprintf(f+" ["+f+"–"+f+"]", s.med, s.lo, s.hi)
}

func stats(ss []sample, f func(sample) float64) stat {
	if len(ss) == 0 {
		return stat{}
	}
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	sort.Float64s(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return stat{med, v[0], v[len(v)-1]}
}

// measure sends one workload through m and waits until the sink has
// every recipient of every accepted message.
func measure(m mta, snk *sink, w workload, rate float64) (sample, error) {
	cpu0, self0 := treeCPU(m), selfCPU()
	sys0, below0 := cpuSplit(m)
	base, sealed0 := snk.rcpts.Load(), snk.sealed.Load()
	stopPSS := make(chan struct{})
	peak := make(chan float64)
	go func() {
		var p float64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			p = max(p, treePSS(m))
			select {
			case <-stopPSS:
				peak <- max(p, treePSS(m))
				return
			case <-t.C:
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	to := make([]string, w.rcpts)
	for i := range to {
		to[i] = fmt.Sprintf("r%d@sink.test", i)
	}
	var profDone chan struct{}
	if pm, ok := m.(*proc); ok && pm.metrics != "" {
		profDone = make(chan struct{})
		go func() {
			defer close(profDone)
			fetchProfile(pm.metrics, fmt.Sprintf("profile?seconds=%d", int(profFor.Seconds())), filepath.Join(profDir, profName(m, w, rate)+"-cpu.pb.gz"))
		}()
	}
	start := time.Now()
	res, err := loadgen.Run(ctx, loadgen.Config{Addr: m.addr(), N: w.n, Concurrency: w.conc, SizeKB: w.size,
		From: "load@bench.test", To: to, OnePerConnection: !reuse, Rate: rate})
	if err != nil {
		close(stopPSS)
		<-peak
		return sample{}, err
	}
	want := int64(res.Sent * w.rcpts)
	for snk.rcpts.Load()-base < want {
		if ctx.Err() != nil {
			close(stopPSS)
			<-peak
			return sample{}, fmt.Errorf("only %d of %d recipients reached the sink", snk.rcpts.Load()-base, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	e2e := time.Since(start)
	cpu1, self1 := treeCPU(m), selfCPU()
	sys1, below1 := cpuSplit(m)
	if profDone != nil {
		<-profDone
		fetchProfile(m.(*proc).metrics, "allocs", filepath.Join(profDir, profName(m, w, rate)+"-allocs.pb.gz"))
	}
	close(stopPSS)
	pss := <-peak
	if res.Sent == 0 {
		return sample{}, errors.New("no message accepted: " + strings.Join(res.Errors, "; "))
	}
	if m.name() == "posthorn+smime" {
		if n := snk.sealed.Load() - sealed0; n != int64(res.Sent) {
			return sample{}, fmt.Errorf("only %d of %d messages reached the sink encrypted", n, res.Sent)
		}
	}
	if res.Failed > 0 {
		fmt.Fprintf(os.Stderr, "  %s: %d messages refused: %v\n", m.name(), res.Failed, res.Errors)
	}
	return sample{
		accept:    res.Rate,
		e2e:       float64(res.Sent) / e2e.Seconds(),
		cpuMS:     float64((cpu1 - cpu0).Microseconds()) / 1000 / float64(res.Sent),
		harnessMS: float64((self1 - self0).Microseconds()) / 1000 / float64(res.Sent),
		sysMS:     float64((sys1 - sys0).Microseconds()) / 1000 / float64(res.Sent),
		pluginMS:  float64((below1 - below0).Microseconds()) / 1000 / float64(res.Sent),
		pssMiB:    pss / 1024,
		p50:       res.P50,
		p90:       res.P90,
		rate:      rate,
	}, nil
}

// profName names a run's profiles in the -profile directory: workload,
// contender, "-paced" for a paced run (the last run of each kind wins).
func profName(m mta, w workload, rate float64) string {
	n := w.name + "-" + m.name()
	if rate > 0 {
		n += "-paced"
	}
	return n
}

// fetchProfile saves one /debug/pprof/ profile of posthorn.
func fetchProfile(addr, what, file string) {
	resp, err := http.Get("http://" + addr + "/debug/pprof/" + what)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(file, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
	}
}

// waitExit waits for cmd with a deadline, then kills it.
func waitExit(cmd *exec.Cmd, d time.Duration) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
	}
}
