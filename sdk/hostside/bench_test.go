//go:build linux

package hostside_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
)

// BenchmarkOutboundCall is the protocol's own cost of one outbound
// message of 100 KiB (issue 19.4): CanHandle then Transform, or both in
// one call (TransformDecide), the body as a file and the output back as
// one, against the test plugin that returns the body unchanged. It
// reports the CPU of the host (this process) and of the plugin process
// per message, as fast as possible and paced (one message every 2 ms, so
// that both sides fall idle in between, as under a real load).
func BenchmarkOutboundCall(b *testing.B) {
	body := []byte("Subject: s\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 100<<10/64))
	for _, mode := range []string{"two-calls", "one-call"} {
		for _, pace := range []time.Duration{0, 2 * time.Millisecond} {
			name := mode + "/unpaced"
			if pace > 0 {
				name = mode + "/paced"
			}
			b.Run(name, func(b *testing.B) {
				f := start(b, hostside.Options{Name: "bench", NoDecide: mode == "two-calls"})
				benchOutbound(b, f.c, body, mode == "one-call", pace)
			})
		}
	}
}

func benchOutbound(b *testing.B, c *hostside.Client, body []byte, oneCall bool, pace time.Duration) {
	ctx := context.Background()
	e := env("plain", "a@example.test")
	one := func() {
		var res *hostside.TransformResult
		var err error
		if oneCall {
			res, err = c.TransformDecide(ctx, e, e.Recipients, bytes.NewReader(body))
		} else {
			var ans []sdk.Answer
			ans, err = c.CanHandle(ctx, e, e.Recipients)
			if err == nil && ans[0].CanHandle {
				res, err = c.Transform(ctx, e, e.Recipients, bytes.NewReader(body))
			}
		}
		if err != nil {
			b.Fatal(err)
		}
		out, err := res.Next()
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, out.Body); err != nil || n != int64(len(body)) {
			b.Fatal(n, err)
		}
		res.Close()
	}
	one() // warm up both sides
	pid := c.Pid()
	hostStart, pluginStart := cpuSelf(), cpuOf(b, pid)
	b.ResetTimer()
	next := time.Now()
	for i := 0; i < b.N; i++ {
		if pace > 0 {
			next = next.Add(pace)
			time.Sleep(time.Until(next))
		}
		one()
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuSelf()-hostStart)/float64(b.N), "host-cpu-ns/op")
	b.ReportMetric(float64(cpuOf(b, pid)-pluginStart)/float64(b.N), "plugin-cpu-ns/op")
}

func cpuSelf() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuOf is process pid's CPU time (user and system, all threads), from
// /proc/PID/stat in clock ticks (1/100 s).
func cpuOf(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15.
	rest := string(data[bytes.LastIndexByte(data, ')')+2:])
	fields := strings.Fields(rest)
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
