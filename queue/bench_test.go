package queue

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
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
	d0, f0, s0 := q.dirSyncs.Load(), q.fileSyncs.Load(), q.slotEnqueues.Load()
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
	b.ReportMetric(float64(q.slotEnqueues.Load()-s0)/float64(b.N), "inslot/msg")
}

func BenchmarkEnqueue10KSerial(b *testing.B) {
	b.Run("group-commit", func(b *testing.B) { benchEnqueue(b, false, true) })
	b.Run("no-group-commit", func(b *testing.B) { benchEnqueue(b, false, false) })
}

func BenchmarkEnqueue10KParallel(b *testing.B) {
	b.Run("group-commit", func(b *testing.B) { benchEnqueue(b, true, true) })
	b.Run("no-group-commit", func(b *testing.B) { benchEnqueue(b, true, false) })
}

// BenchmarkEnqueueDeliver10K enqueues 10 KiB messages from 20 goroutines
// while twenty deliverers (the daemon's default number of workers) lease each one, read its body and report it
// delivered, so slots (or spare files) are freed and reused as in the
// daemon. msgs/s counts messages enqueued and delivered.
func BenchmarkEnqueueDeliver10K(b *testing.B) {
	b.Run("slots", func(b *testing.B) { benchEnqueueDeliver(b, 0) })
	b.Run("no-slots", func(b *testing.B) { benchEnqueueDeliver(b, -1) })
}

func benchEnqueueDeliver(b *testing.B, slots int) {
	q := open(b, b.TempDir(), nil, func(o *Options) { o.maxSlots = slots })
	body := bytes.Repeat([]byte("0123456789abcde\n"), 640) // 10 KiB
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var delivered atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				env, err := q.Lease(ctx)
				if err != nil {
					return
				}
				if rc, err := q.Body(env.ID); err == nil {
					io.Copy(io.Discard, rc)
					rc.Close()
				}
				q.Report(env.ID, []Result{{Index: 0, State: Delivered}})
				delivered.Add(1)
			}
		}()
	}
	b.SetBytes(int64(len(body)))
	d0, f0, s0 := q.dirSyncs.Load(), q.fileSyncs.Load(), q.slotEnqueues.Load()
	start := time.Now()
	b.ResetTimer()
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((20 + procs - 1) / procs)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			env := &Envelope{From: "bench@example.org", Recipients: []*Recipient{{Addr: "rcpt@example.net"}}}
			if _, err := q.Enqueue(env, bytes.NewReader(body)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	for delivered.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	b.ReportMetric(float64(q.dirSyncs.Load()-d0)/float64(b.N), "dirsyncs/msg")
	b.ReportMetric(float64(q.fileSyncs.Load()-f0)/float64(b.N), "filesyncs/msg")
	b.ReportMetric(float64(q.slotEnqueues.Load()-s0)/float64(b.N), "inslot/msg")
}
