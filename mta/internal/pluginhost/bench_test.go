package pluginhost

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/plugintest"
)

// BenchmarkInspect10KB is issue 19.4's hook round trip: the host calls a
// real plugin process's Inbound Inspect hook over its gRPC socket with a
// 10 KB message, the plugin answers (accept: without reading the body;
// count: after hashing all of it and returning two headers). It reports
// the median and the 90th percentile of the round trips besides the mean
// (ns/op), and the CPU time of host and plugin together per call (from
// /proc; on a loaded machine the latencies include waiting for a CPU).
// Target: a median under 0.3 ms.
func BenchmarkInspect10KB(b *testing.B) {
	h := New([]conf.Plugin{{
		Name: "b", Path: testBin, Timeout: conf.Duration(20 * time.Second), OnFailure: "tempfail",
		DataDir: filepath.Join(b.TempDir(), "b"), Config: conf.PluginConfig{"name": "b"},
	}}, newTestAPI(), plugintest.TestLogger(b, slog.LevelWarn), WithSocketDir(plugintest.ShortTempDir(b)))
	b.Cleanup(h.Stop)
	if err := h.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789 The quick brown fox jumps over the lazy dog. 0123456789\r\n"), 10<<10/70)
	for _, mode := range []string{"accept", "count"} {
		b.Run(mode, func(b *testing.B) {
			e := env(mode+"@example.test", "rcpt@example.test")
			want := sdk.ActionAccept
			if mode == "count" {
				want = sdk.ActionAddHeaders
			}
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.SetBytes(int64(len(body)))
			pid := h.Status()[0].Pid
			cpu0 := procCPU(os.Getpid()) + procCPU(pid)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				v, repl, err := h.Inspect(ctx, "b", e, bytes.NewReader(body))
				lat = append(lat, time.Since(start))
				if err != nil || v.Action != want || repl != nil {
					b.Fatalf("%+v %v %v", v, repl, err)
				}
			}
			b.StopTimer()
			if cpu := procCPU(os.Getpid()) + procCPU(pid) - cpu0; cpu0 > 0 {
				// Both processes' CPU: meaningful on a loaded machine,
				// where the latencies are not.
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "median-µs")
			b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds()), "p90-µs")
		})
	}
}

// procCPU returns the user+system CPU time of a process so far (Linux;
// 0 elsewhere).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in parens.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
