package queue

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrent runs enqueuers, deliverers and an operator side by side
// (meant for -race) and checks that every message is finished exactly once.
func TestConcurrent(t *testing.T) {
	q := open(t, t.TempDir(), nil, func(o *Options) {
		o.MinBackoff, o.MaxBackoff = time.Millisecond, 3*time.Millisecond
		o.Jitter = nil
	})
	const enqueuers, perEnqueuer, workers = 8, 25, 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var finished sync.Map // id -> true, set when a Report ends the message
	var finishedN atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				env, err := q.Lease(ctx)
				if err != nil {
					return
				}
				if _, dup := finished.Load(env.ID); dup {
					t.Errorf("%s leased after it was finished", env.ID)
				}
				if got := body(t, q, env.ID); got != "body of "+env.From {
					t.Errorf("%s: body %q", env.ID, got)
				}
				var res []Result
				done := true
				for i, rc := range env.Recipients {
					if rc.State != Pending {
						continue
					}
					st := []RcptState{Delivered, Failed, Pending, Pending}[r.IntN(4)]
					if st == Pending {
						done = false
					}
					res = append(res, Result{Index: i, State: st})
				}
				if r.IntN(10) == 0 {
					q.Release(env.ID)
					continue
				}
				if err := q.Report(env.ID, res); err != nil {
					t.Error(err)
				}
				if done {
					finished.Store(env.ID, true)
					finishedN.Add(1)
				}
			}
		}()
	}
	stopOps := make(chan struct{})
	var opsWG sync.WaitGroup
	opsWG.Add(1)
	go func() { // operator: inspect, flush, toggle holds
		defer opsWG.Done()
		for {
			select {
			case <-stopOps:
				return
			default:
			}
			for _, env := range q.List() {
				q.Hold(env.ID)
				q.SetAttr(env.ID, "seen", "1")
				q.Unhold(env.ID)
				break
			}
			q.Stats()
			q.Flush("")
			time.Sleep(time.Millisecond) // pacing of the interfering operations, not a wait
		}
	}()
	var ewg sync.WaitGroup
	var ids sync.Map
	for e := range enqueuers {
		ewg.Add(1)
		go func() {
			defer ewg.Done()
			for i := range perEnqueuer {
				from := fmt.Sprintf("s%d-%d@x", e, i)
				env := &Envelope{From: from, Recipients: []*Recipient{{Addr: "a@x"}, {Addr: "b@x"}, {Addr: "c@x"}}}
				id, err := q.Enqueue(env, strings.NewReader("body of "+from))
				if err != nil {
					t.Error(err)
					return
				}
				if _, dup := ids.LoadOrStore(id, true); dup {
					t.Errorf("duplicate ID %s", id)
				}
			}
		}()
	}
	ewg.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for finishedN.Load() < enqueuers*perEnqueuer && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(stopOps)
	opsWG.Wait()
	cancel()
	wg.Wait()
	if n := finishedN.Load(); n != enqueuers*perEnqueuer {
		t.Fatalf("%d of %d messages finished; stats %+v", n, enqueuers*perEnqueuer, q.Stats())
	}
	if s := q.Stats(); s != (Stats{}) {
		t.Fatalf("queue not empty: %+v", s)
	}
}
