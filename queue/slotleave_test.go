package queue

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// deferAll leases message id and reports every recipient deferred.
func deferAll(t testing.TB, q *Queue, id string) {
	t.Helper()
	reportAll(t, q, id, Result{State: Pending, Status: "4.4.1", Diagnostic: "try later"})
}

func freeSlots(q *Queue) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.slotFree)
}

// TestSlotDeferredLeavesSlot: a message reported deferred moves out of
// its slot into msg/ID (with its new state, its body byte for byte), and
// the slot is free for the next message at once; delivered on a later
// attempt, the ID-named file goes; nothing of it survives a reopen.
func TestSlotDeferredLeavesSlot(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	q := open(t, dir, c, withSlots(1))
	bodyA := "Subject: a\r\n\r\n" + strings.Repeat("deferred\r\n", 300)
	a := enqueue(t, q, bodyA, "a@x", "b@x")
	pa, slot := pathOf(t, q, a.ID)
	if !slot {
		t.Fatal("first message not in a slot")
	}
	// One recipient delivered, one deferred: still waiting.
	env := lease(t, q)
	if err := q.Report(a.ID, []Result{{Index: 0, State: Delivered}, {Index: 1, State: Pending, Status: "4.4.1"}}); err != nil {
		t.Fatal(err)
	}
	_ = env
	p, slot := pathOf(t, q, a.ID)
	if slot || p != filepath.Join(dir, msgDirName, a.ID) {
		t.Fatalf("deferred message in %s (slot %v), want its own file", p, slot)
	}
	if headerMagic(t, p) != fileMagic {
		t.Fatalf("moved file has header %q", headerMagic(t, p))
	}
	if !slotFreed(t, q, pa) || !slices.Contains(freeSlots(q), pa) {
		t.Fatal("the slot the message left is not free")
	}
	if q.leftSlots.Load() != 1 {
		t.Fatalf("leftSlots %d", q.leftSlots.Load())
	}
	if body(t, q, a.ID) != bodyA {
		t.Fatal("body changed by the move")
	}
	if err := q.Verify(a.ID); err != nil {
		t.Fatal(err)
	}
	b := enqueue(t, q, "Subject: b\r\n\r\nb\r\n", "c@x")
	if pb, slot := pathOf(t, q, b.ID); pb != pa || !slot {
		t.Fatalf("next message in %s, not the freed slot", pb)
	}
	q.Close()

	q = open(t, dir, c, withSlots(1))
	got, err := q.Get(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r := got.Recipients; r[0].State != Delivered || r[1].State != Pending || r[1].Attempts != 1 || r[1].Status != "4.4.1" {
		t.Fatalf("after reopen: %+v %+v", r[0], r[1])
	}
	if body(t, q, a.ID) != bodyA {
		t.Fatal("body differs after reopen")
	}
	if n := len(q.List()); n != 2 {
		t.Fatalf("%d messages after reopen, want 2", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, quarDirName)); len(ents) != 0 {
		t.Fatalf("quarantine holds %d entries", len(ents))
	}
	c.Add(time.Hour)
	for range 2 {
		env := lease(t, q)
		var res []Result
		for i, r := range env.Recipients {
			if r.State == Pending {
				res = append(res, Result{Index: i, State: Delivered})
			}
		}
		if err := q.Report(env.ID, res); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()
	q = open(t, dir, c, withSlots(1))
	if n := len(q.List()); n != 0 {
		t.Fatalf("%d messages after delivering both", n)
	}
	q.Close()
}

// TestSlotLeftCrashWindow: a crash after a deferred message's own file is
// durable but before its slot's end is leaves the message in both; the
// reopened queue holds it once, with the newer state of its own file, the
// slot free and nothing quarantined.
func TestSlotLeftCrashWindow(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	q := open(t, dir, c, withSlots(1))
	bodyA := "Subject: a\r\n\r\nwindow\r\n"
	a := enqueue(t, q, bodyA, "a@x")
	pa, _ := pathOf(t, q, a.ID)
	slotBytes, err := os.ReadFile(pa)
	if err != nil {
		t.Fatal(err)
	}
	table := filepath.Join(dir, freeTableName)
	tableBytes, err := os.ReadFile(table)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	deferAll(t, q, a.ID)
	q.Close()
	// Undo the slot's end: the slot and the free table as before the move.
	if err := os.WriteFile(pa, slotBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if tableBytes == nil {
		os.Remove(table)
	} else if err := os.WriteFile(table, tableBytes, 0o600); err != nil {
		t.Fatal(err)
	}

	q = open(t, dir, c, withSlots(1))
	l := q.List()
	if len(l) != 1 || l[0].ID != a.ID || l[0].Recipients[0].Attempts != 1 {
		t.Fatalf("after reopen: %d messages, %+v", len(l), l)
	}
	if p, slot := pathOf(t, q, a.ID); slot || p != filepath.Join(dir, msgDirName, a.ID) {
		t.Fatalf("loaded from %s (slot %v)", p, slot)
	}
	if !slices.Contains(freeSlots(q), pa) {
		t.Fatal("the slot is not free after recovery")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, quarDirName)); len(ents) != 0 {
		t.Fatalf("quarantine holds %d entries", len(ents))
	}
	if body(t, q, a.ID) != bodyA {
		t.Fatal("body differs")
	}
	q.Close()
	// And again: the freed slot stays free, the message stays single.
	q = open(t, dir, c, withSlots(1))
	if n := len(q.List()); n != 1 {
		t.Fatalf("%d messages on the second reopen", n)
	}
	q.Close()
}

// TestSlotLeftWhileRead: a deferred message moves out of its slot while
// a BodyReader has the slot open; the reader keeps reading the old file
// to the end, and the slot is handed to Enqueue only after it is closed.
func TestSlotLeftWhileRead(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, withSlots(1))
	bodyA := "Subject: a\r\n\r\n" + strings.Repeat("read me\r\n", 2000)
	a := enqueue(t, q, bodyA, "a@x")
	pa, _ := pathOf(t, q, a.ID)
	rc, err := q.Body(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 100)
	if _, err := rc.Read(head); err != nil {
		t.Fatal(err)
	}
	deferAll(t, q, a.ID)
	if p, slot := pathOf(t, q, a.ID); slot || p == pa {
		t.Fatalf("message still in %s", p)
	}
	if slices.Contains(freeSlots(q), pa) {
		t.Fatal("slot handed over while a reader has it open")
	}
	b := enqueue(t, q, "Subject: b\r\n\r\nb\r\n", "b@x")
	if pb, slot := pathOf(t, q, b.ID); slot || pb == pa {
		t.Fatalf("message written to %s (slot %v) while the slot was read", pb, slot)
	}
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if string(head)+string(rest) != bodyA {
		t.Fatal("reader of the slot got other bytes")
	}
	rc.Close()
	if !slices.Contains(freeSlots(q), pa) {
		t.Fatal("slot not handed over after the reader closed")
	}
	cc := enqueue(t, q, "c\r\n", "c@x")
	if pc, _ := pathOf(t, q, cc.ID); pc != pa {
		t.Fatalf("slot not reused after the reader closed: %s", pc)
	}
	q.Close()
}

// TestSlotSizeDecidedFirst: Enqueue knows a body's size before it picks a
// file: a body of exactly slotMaxBody goes into the free slot, one byte
// more goes to an ID-named file and leaves the free slot alone (no slot
// file renamed away and created anew per large message), both byte for
// byte.
func TestSlotSizeDecidedFirst(t *testing.T) {
	dir := t.TempDir()
	const limit = 50 << 10
	q := open(t, dir, nil, withSlots(1), func(o *Options) { o.slotMaxBody = limit })
	first := enqueue(t, q, "Subject: first\r\n\r\nx\r\n", "a@x")
	ps, _ := pathOf(t, q, first.ID)
	deliver(t, q, first.ID)
	for _, n := range []int{limit + 1, 3 * limit, limit, limit + 1} {
		bodyN := strings.Repeat("y", n)
		m := enqueue(t, q, bodyN, "b@x")
		p, slot := pathOf(t, q, m.ID)
		if want := n <= limit; slot != want || slot && p != ps {
			t.Fatalf("%d-byte body in %s (slot %v, want %v)", n, p, slot, want)
		}
		if got := slotFiles(t, dir); len(got) != 1 || got[0] != filepath.Base(ps) {
			t.Fatalf("%d-byte body: slot files %v", n, got)
		}
		if !slot && !slices.Contains(freeSlots(q), ps) {
			t.Fatalf("%d-byte body: the free slot is no longer free", n)
		}
		if body(t, q, m.ID) != bodyN {
			t.Fatalf("%d-byte body differs", n)
		}
		deliver(t, q, m.ID)
	}
	q.Close()
}
