package main

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestCrashLosesNothing is the durability promise: several clients send
// concurrently, the daemon is SIGKILLed mid-load, restarted, and every
// message that got a 250 ends up in the Maildir exactly once (messages
// that got no 250 may or may not arrive, but never twice).
func TestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real daemon under load")
	}
	in := newInstance(t, "")
	rounds := 3
	var acked sync.Map // Message-ID -> true
	var attempted sync.Map
	for round := 0; round < rounds; round++ {
		in.start()
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < 6; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				var c *smtpConn
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if c == nil {
						var err error
						if c, err = dialSMTP(in.mx); err != nil {
							time.Sleep(10 * time.Millisecond) // redial interval while the daemon starts
							continue
						}
					}
					id := fmt.Sprintf("crash-%d-%d-%d@test", round, w, i)
					attempted.Store(id, true)
					if err := c.send("bob@example.test", id); err != nil {
						c.c.Close()
						c = nil
						continue
					}
					acked.Store(id, true)
				}
			}(w)
		}
		// Load runs for a random time before the SIGKILL: the crash
		// point is what the test varies, not a wait.
		time.Sleep(time.Duration(400+rand.Intn(600)) * time.Millisecond)
		in.kill()
		close(stop)
		wg.Wait()
	}
	in.start()
	n := 0
	acked.Range(func(any, any) bool { n++; return true })
	if n < 50 {
		t.Fatalf("only %d messages acknowledged; the load did not run", n)
	}
	maildir := filepath.Join(in.dir, "mail", "example.test", "bob")
	deadline := time.Now().Add(60 * time.Second)
	for {
		seen := messageIDs(t, maildir)
		missing := 0
		acked.Range(func(k, _ any) bool {
			if seen[k.(string)] == 0 {
				missing++
			}
			return true
		})
		if missing == 0 {
			for id, c := range seen {
				if c > 1 {
					t.Errorf("%s delivered %d times", id, c)
				}
				if _, ok := attempted.Load(id); !ok {
					t.Errorf("%s delivered but never sent", id)
				}
			}
			t.Logf("%d acknowledged over %d crashes, all delivered exactly once (%d delivered in all)", n, rounds, len(seen))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages missing after restart\n%s", missing, n, in.logText())
		}
		time.Sleep(200 * time.Millisecond)
	}
	in.stop()
}
