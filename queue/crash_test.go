package queue

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashEnv = "POSTHORN_QUEUE_CRASH_CHILD"

// crashSlots is the crash child's number of slot files.
const crashSlots = 32

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashBody is the content the crash child enqueues under id: 1 to ~200
// KiB of bytes derived from the ID (bodies past 128 KiB do not go into a
// slot: ID-named files).
func crashBody(id string) []byte {
	h := fnv.New64a()
	h.Write([]byte(id))
	seed := h.Sum64()
	r := rand.New(rand.NewPCG(seed, seed>>7))
	b := make([]byte, 1024+int(seed%(200<<10)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// crashChild enqueues in a loop and prints each ID once Enqueue has
// returned, while other goroutines lease (more slowly), defer (the
// message leaves its slot) and hold messages so the
// kill also lands in journal appends, and deliver every third one (its
// slot is marked free, or its file becomes a spare, and later Enqueues
// overwrite it), printing "R ID"
// before and "D ID" after that Report. It runs until it is killed.
func crashChild(dir string) {
	// Few slots: both slots and (once they are all busy) ID-named files
	// are in use at the kill.
	q, err := Open(Options{Dir: dir, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond,
		Logger: quiet, maxSlots: crashSlots})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var out sync.Mutex
	for range 4 {
		go func() {
			for {
				// Bursts: no Enqueue for 25 ms of every 60, so that slots
				// deliveries free also sit free (not yet reused) at the
				// kill, and a backlog fills the slots in between.
				if time.Now().UnixMilli()%60 < 25 {
					time.Sleep(time.Millisecond)
					continue
				}
				id := q.NewID()
				env := &Envelope{ID: id, From: "crash@example.org",
					Recipients: []*Recipient{{Addr: "a@x"}, {Addr: "b@x"}}}
				if _, err := q.Enqueue(env, bytes.NewReader(crashBody(id))); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				q.mu.Lock()
				inSlot := q.msgs[id] != nil && q.msgs[id].slot
				q.mu.Unlock()
				out.Lock()
				os.Stdout.WriteString(id + "\n") // one write: a line is printed whole or not at all
				if !inSlot {
					os.Stdout.WriteString("F " + id + "\n")
				}
				out.Unlock()
				// Pace the load a little, so that slots freed by deliveries
				// also sit free (not yet reused) at the kill.
				if rand.IntN(4) == 0 {
					time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
				}
			}
		}()
	}
	for i := range 2 {
		go func() {
			for n := 0; ; n++ {
				env, err := q.Lease(context.Background())
				if err != nil {
					os.Exit(4)
				}
				// Deliver more slowly than messages come in: a deferred
				// message leaves its slot, so only a backlog of fresh ones
				// keeps slots in use at the kill.
				time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond)
				if n%21 == i {
					// Held, it is not leased again, and stays where it is
					// (in its slot, if it is in one): slots are in use at
					// every kill.
					q.Hold(env.ID)
					q.SetAttr(env.ID, "crash.n", fmt.Sprint(n))
					q.Release(env.ID)
					q.mu.Lock()
					inSlot := q.msgs[env.ID] != nil && q.msgs[env.ID].slot
					q.mu.Unlock()
					if inSlot {
						out.Lock()
						os.Stdout.WriteString("H " + env.ID + "\n")
						out.Unlock()
					}
					continue
				}
				if n%3 == 0 {
					out.Lock()
					os.Stdout.WriteString("R " + env.ID + "\n")
					out.Unlock()
					if q.Report(env.ID, []Result{{Index: 0, State: Delivered}, {Index: 1, State: Delivered}}) == nil {
						out.Lock()
						os.Stdout.WriteString("D " + env.ID + "\n")
						out.Unlock()
					}
					continue
				}
				q.Report(env.ID, []Result{{Index: 0, State: Pending, Diagnostic: "try later"}, {Index: 1, State: Pending}})
			}
		}()
	}
	select {}
}

func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for round := range 3 {
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1<<16)
		go func() {
			br := bufio.NewReader(stdout)
			for {
				l, err := br.ReadString('\n')
				if err != nil { // a line without its newline was not printed whole
					close(lines)
					return
				}
				lines <- strings.TrimSuffix(l, "\n")
			}
		}()
		// Let it get going, then kill it at a random moment.
		var ids []string
		reporting, delivered, fallback, heldInSlot := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
		// note records one line of the child: "R ID" (reporting), "D ID"
		// (delivered), "F ID" (not in a slot), "H ID" (held in its slot),
		// else an acknowledged ID.
		note := func(l string) {
			switch {
			case strings.HasPrefix(l, "R "):
				reporting[l[2:]] = true
			case strings.HasPrefix(l, "D "):
				delivered[l[2:]] = true
			case strings.HasPrefix(l, "F "):
				fallback[l[2:]] = true
			case strings.HasPrefix(l, "H "):
				heldInSlot[l[2:]] = true
			default:
				ids = append(ids, l)
			}
		}
		deadline := time.After(20 * time.Second)
		// A held message is not leased again: one held in its slot is
		// still there at the kill.
		for len(ids) < 20 || len(delivered) < 5 || len(fallback) == 0 || len(heldInSlot) == 0 {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("child ended early: %s", stderr.String())
				}
				note(l)
			case <-deadline:
				cmd.Process.Kill()
				t.Fatalf("child too slow: %s", stderr.String())
			}
		}
		// The crash point is random on purpose: not a wait.
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		for l := range lines {
			note(l)
		}

		q := open(t, dir, nil, withSlots(crashSlots))
		list := q.List()
		inSlots := 0
		q.mu.Lock()
		for _, m := range q.msgs {
			if m.slot {
				inSlots++
			}
		}
		for id := range heldInSlot {
			if m := q.msgs[id]; m == nil || !m.slot || !m.env.Held {
				t.Errorf("round %d: %s, held in its slot before the kill, not recovered there held", round, id)
			}
		}
		q.mu.Unlock()
		for _, id := range ids {
			if reporting[id] {
				continue // delivered (gone, checked below) or on its way out
			}
			env, err := q.Get(id)
			if err != nil {
				t.Fatalf("round %d: acknowledged message %s lost: %v", round, id, err)
			}
			if env.From != "crash@example.org" || len(env.Recipients) != 2 || !env.Recovered {
				t.Fatalf("round %d: %s: envelope %+v", round, id, env)
			}
			if got := body(t, q, id); got != string(crashBody(id)) {
				t.Fatalf("round %d: %s: body differs (%d bytes)", round, id, len(got))
			}
		}
		for id := range delivered {
			if _, err := q.Get(id); err == nil {
				t.Fatalf("round %d: %s was reported delivered, and came back", round, id)
			}
		}
		// Messages not (yet) acknowledged may be there, but whole.
		for _, env := range list {
			if err := q.Verify(env.ID); err != nil || body(t, q, env.ID) != string(crashBody(env.ID)) {
				t.Fatalf("round %d: half-written message %s recovered: %v", round, env.ID, err)
			}
		}
		if ents, _ := os.ReadDir(dir + "/quarantine"); len(ents) != 0 {
			t.Errorf("round %d: %d entries quarantined", round, len(ents))
		}
		t.Logf("round %d: %d acknowledged (%d not in a slot), %d delivered, %d recovered (%d in slots)",
			round, len(ids), len(fallback), len(delivered), len(list), inSlots)
		q.Close()
	}
}
