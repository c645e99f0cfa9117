package queue

import (
	"bytes"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"
)

var scaleN = flag.Int("queue-scale-n", 100000, "messages for BenchmarkQueueScale")

// BenchmarkQueueScale (issue 19.3) fills an empty spool to -queue-scale-n
// messages (1 KiB, 20 concurrent writers, fsync as in production) and
// reports the enqueue rate of each tenth of the fill, so that a rate
// falling with the spool's size shows; then it closes the spool and times
// the recovery of all of them by Open. Run with -benchtime 1x.
func BenchmarkQueueScale(b *testing.B) {
	n := *scaleN
	for range b.N {
		dir := b.TempDir()
		q := open(b, dir, nil)
		body := bytes.Repeat([]byte("0123456789abcde\n"), 64)
		step := max(1, n/10)
		var rates []float64
		for done := 0; done < n; {
			todo := min(step, n-done)
			start := time.Now()
			var wg sync.WaitGroup
			next := make(chan struct{}, todo)
			for range todo {
				next <- struct{}{}
			}
			close(next)
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						env := &Envelope{From: "bench@example.org", Recipients: []*Recipient{{Addr: "rcpt@example.net"}}}
						if _, err := q.Enqueue(env, bytes.NewReader(body)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			rates = append(rates, float64(todo)/time.Since(start).Seconds())
			done += todo
		}
		if err := q.Close(); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		q2, err := Open(Options{Dir: dir, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		rec := time.Since(start)
		got := len(q2.msgs)
		q2.Close()
		if got != n {
			b.Fatalf("recovered %d of %d", got, n)
		}
		for i, r := range rates {
			b.ReportMetric(r, fmt.Sprintf("msgs/s@%03d%%", (i+1)*10))
		}
		b.ReportMetric(rec.Seconds(), "recovery-s")
		b.ReportMetric(float64(rec.Microseconds())/float64(n), "recovery-µs/msg")
	}
}
