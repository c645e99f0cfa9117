package queue

import (
	"bytes"
	"runtime"
	"testing"
	"time"
)

// benchEnqueue enqueues 10 KiB messages and reports messages per second
// and directory fsyncs per message.
func benchEnqueue(b *testing.B, parallel, group bool) {
	q := open(b, b.TempDir(), nil, func(o *Options) { o.noGroupCommit = !group })
	body := bytes.Repeat([]byte("0123456789abcde\n"), 640) // 10 KiB
	one := func() {
		env := &Envelope{From: "bench@example.org", Recipients: []*Recipient{{Addr: "rcpt@example.net"}}}
		if _, err := q.Enqueue(env, bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(body)))
	d0, f0 := q.dirSyncs.Load(), q.fileSyncs.Load()
	start := time.Now()
	b.ResetTimer()
	if parallel {
		// 20 concurrent SMTP sessions.
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((20 + procs - 1) / procs)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				one()
			}
		})
	} else {
		for range b.N {
			one()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	b.ReportMetric(float64(q.dirSyncs.Load()-d0)/float64(b.N), "dirsyncs/msg")
	b.ReportMetric(float64(q.fileSyncs.Load()-f0)/float64(b.N), "filesyncs/msg")
}

func BenchmarkEnqueue10KSerial(b *testing.B) {
	b.Run("group-commit", func(b *testing.B) { benchEnqueue(b, false, true) })
	b.Run("no-group-commit", func(b *testing.B) { benchEnqueue(b, false, false) })
}

func BenchmarkEnqueue10KParallel(b *testing.B) {
	b.Run("group-commit", func(b *testing.B) { benchEnqueue(b, true, true) })
	b.Run("no-group-commit", func(b *testing.B) { benchEnqueue(b, true, false) })
}
