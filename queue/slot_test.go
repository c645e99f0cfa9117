package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func withSlots(n int) func(*Options) { return func(o *Options) { o.maxSlots = n } }

// pathOf is the file that holds message id.
func pathOf(t testing.TB, q *Queue, id string) (string, bool) {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	m := q.msgs[id]
	if m == nil {
		t.Fatalf("%s not queued", id)
	}
	return m.path, m.slot
}

func headerMagic(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 8)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// slotFreed reports whether the free table says the message now in the
// slot at path is finished.
func slotFreed(t testing.TB, q *Queue, p string) bool {
	t.Helper()
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw[:8]) == freeMagic {
		return true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	s, ok := q.freed[slotIndex(p)]
	return ok && string(raw[:8]) == slotMagic && s == binary.LittleEndian.Uint32(raw[24:])
}

func slotFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, msgDirName))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if isSlotName(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

func deliver(t testing.TB, q *Queue, id string) {
	t.Helper()
	reportAll(t, q, id, Result{State: Delivered})
}

// reportAll leases message id and reports res for every recipient.
func reportAll(t testing.TB, q *Queue, id string, res Result) {
	t.Helper()
	env := lease(t, q)
	if env.ID != id {
		t.Fatalf("leased %s, want %s", env.ID, id)
	}
	var all []Result
	for i := range env.Recipients {
		res.Index = i
		all = append(all, res)
	}
	if err := q.Report(id, all); err != nil {
		t.Fatal(err)
	}
}

// TestSlotLifecycle: a message goes into a slot (no ID-named file, one
// file fsync and no directory fsync once the slot exists), is delivered
// (free header on disk when Report returns), and the next message
// overwrites the same slot; Hold, SetAttr and Delete work on slot
// messages and survive a Close/Open round trip.
func TestSlotLifecycle(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	q := open(t, dir, c, withSlots(2))
	a := enqueue(t, q, "Subject: a\r\n\r\n"+strings.Repeat("a", 5000)+"\r\n", "a@x")
	pa, slot := pathOf(t, q, a.ID)
	if !slot || !isSlotName(filepath.Base(pa)) || headerMagic(t, pa) != slotMagic {
		t.Fatalf("first message in %s (slot %v)", pa, slot)
	}
	if _, err := os.Stat(filepath.Join(dir, msgDirName, a.ID)); !os.IsNotExist(err) {
		t.Fatalf("ID-named file exists: %v", err)
	}
	d0, f0 := q.dirSyncs.Load(), q.fileSyncs.Load()
	deliver(t, q, a.ID)
	if !slotFreed(t, q, pa) {
		t.Fatal("after delivery the slot is not marked free")
	}
	// The free table was fsynced before Report returned (and so before
	// the slot could be handed out again).
	if d, f := q.dirSyncs.Load()-d0, q.fileSyncs.Load()-f0; d != 0 || f != 1 {
		t.Errorf("delivery from a slot: %d directory and %d file fsyncs, want 0 and 1", d, f)
	}
	q.mu.Lock()
	free := slices.Clone(q.slotFree)
	q.mu.Unlock()
	if len(free) != 1 || free[0] != pa {
		t.Fatalf("free slots %v after delivery", free)
	}
	d0, f0 = q.dirSyncs.Load(), q.fileSyncs.Load()
	const bodyB = "Subject: b\r\n\r\nb\r\n"
	b := enqueue(t, q, bodyB, "b@x", "c@x")
	if d, f := q.dirSyncs.Load()-d0, q.fileSyncs.Load()-f0; d != 0 || f != 1 {
		t.Errorf("Enqueue into a free slot: %d directory and %d file fsyncs, want 0 and 1", d, f)
	}
	if pb, _ := pathOf(t, q, b.ID); pb != pa {
		t.Fatalf("second message in %s, not the free slot %s", pb, pa)
	}
	if fi, _ := os.Stat(pa); fi.Size() >= 1000 {
		t.Fatalf("slot not cut to the shorter message: %d bytes", fi.Size())
	}
	if err := q.Hold(b.ID); err != nil {
		t.Fatal(err)
	}
	if err := q.SetAttr(b.ID, "k", "v"); err != nil {
		t.Fatal(err)
	}
	cc := enqueue(t, q, "Subject: c\r\n\r\nc\r\n", "d@x")
	pc, _ := pathOf(t, q, cc.ID)
	if err := q.Delete(cc.ID); err != nil {
		t.Fatal(err)
	}
	if !slotFreed(t, q, pc) {
		t.Fatal("after Delete the slot is not marked free")
	}
	q.Close()

	q = open(t, dir, c, withSlots(2))
	l := q.List()
	if len(l) != 1 || l[0].ID != b.ID || !l[0].Held || l[0].Attrs["k"] != "v" || !l[0].Recovered || len(l[0].Recipients) != 2 {
		t.Fatalf("after reopen: %+v", l)
	}
	if body(t, q, b.ID) != bodyB {
		t.Fatal("body differs")
	}
	if err := q.Verify(b.ID); err != nil {
		t.Fatal(err)
	}
	if got := slotFiles(t, dir); len(got) != 2 {
		t.Fatalf("slot files %v", got)
	}
	// The freed slot is used again; the pool does not grow.
	d := enqueue(t, q, "Subject: d\r\n\r\nd\r\n", "d@x")
	if pd, slot := pathOf(t, q, d.ID); pd != pc || !slot {
		t.Fatalf("after reopen the message went to %s, not the free slot %s", pd, pc)
	}
	if err := q.Unhold(b.ID); err != nil {
		t.Fatal(err)
	}
	deliver(t, q, b.ID)
	deliver(t, q, d.ID)
	q.Close()
	q = open(t, dir, c, withSlots(2))
	if l := q.List(); len(l) != 0 {
		t.Fatalf("delivered messages came back: %+v", l)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, quarDirName)); len(ents) != 0 {
		t.Fatalf("%d entries quarantined", len(ents))
	}
}

// TestSlotFallback: with every slot holding a (held) message, Enqueue
// writes an ID-named file as before; once a slot is free again it is
// used again.
func TestSlotFallback(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, withSlots(2))
	var ids []string
	for i := range 4 {
		env := &Envelope{From: "f@x", Held: true, Recipients: []*Recipient{{Addr: "a@x"}}}
		if _, err := q.Enqueue(env, strings.NewReader(fmt.Sprintf("message %d\r\n", i))); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, env.ID)
	}
	for i, id := range ids {
		p, slot := pathOf(t, q, id)
		if slot != (i < 2) {
			t.Fatalf("message %d: slot %v (%s)", i, slot, p)
		}
		if !slot && p != filepath.Join(dir, msgDirName, id) {
			t.Fatalf("message %d in %s", i, p)
		}
	}
	if err := q.Delete(ids[0]); err != nil {
		t.Fatal(err)
	}
	env := enqueue(t, q, "again\r\n", "a@x")
	if _, slot := pathOf(t, q, env.ID); !slot {
		t.Fatal("a freed slot was not used again")
	}
	q.Close()
	q = open(t, dir, nil, withSlots(2))
	if n := len(q.List()); n != 4 {
		t.Fatalf("%d messages after reopen, want 4", n)
	}
	for _, id := range append(ids[1:], env.ID) {
		if err := q.Verify(id); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSlotReaderBlocksReuse: a slot whose message is delivered while a
// BodyReader has it open is marked free but not overwritten until the
// reader is closed.
func TestSlotReaderBlocksReuse(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, withSlots(1))
	const bodyA = "Subject: a\r\n\r\nthe first message\r\n"
	a := enqueue(t, q, bodyA, "a@x")
	pa, _ := pathOf(t, q, a.ID)
	rc, err := q.Body(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, q, a.ID)
	b := enqueue(t, q, strings.Repeat("new ", 100), "b@x")
	if pb, slot := pathOf(t, q, b.ID); slot || pb == pa {
		t.Fatalf("message written to %s (slot %v) while the slot was read", pb, slot)
	}
	got, err := io.ReadAll(rc)
	if err != nil || string(got) != bodyA {
		t.Fatalf("reader got %q, %v", got, err)
	}
	rc.Close()
	rc.Close()
	c := enqueue(t, q, "c\r\n", "c@x")
	if pc, _ := pathOf(t, q, c.ID); pc != pa {
		t.Fatalf("slot not reused after the reader closed: %s", pc)
	}
}

// TestSlotCompaction: a slot message's journal is compacted like any
// other (rewritten under the slot's name); its later records are found
// after a reopen.
func TestSlotCompaction(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, withSlots(1), func(o *Options) { o.compactMin = 4 << 10 })
	const bodyA = "Subject: a\r\n\r\ncompact me\r\n"
	a := enqueue(t, q, bodyA, "a@x")
	pa, _ := pathOf(t, q, a.ID)
	d0 := q.dirSyncs.Load()
	for i := range 200 {
		if err := q.SetAttr(a.ID, "n", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if q.dirSyncs.Load() == d0 {
		t.Fatal("the slot was not rewritten")
	}
	if p, slot := pathOf(t, q, a.ID); p != pa || !slot {
		t.Fatalf("compacted into %s", p)
	}
	q.Close()
	q = open(t, dir, nil, withSlots(1))
	env, err := q.Get(a.ID)
	if err != nil || env.Attrs["n"] != "199" || body(t, q, a.ID) != bodyA {
		t.Fatalf("after reopen: %+v %v", env, err)
	}
	deliver(t, q, a.ID)
	if !slotFreed(t, q, pa) {
		t.Fatal("compacted slot not freed")
	}
	q.Close()
	q = open(t, dir, nil, withSlots(1))
	if n := len(q.List()); n != 0 {
		t.Fatalf("%d messages after reopen", n)
	}
}

// TestSlotLargeBody: a body longer than slotMaxBody leaves its slot as an
// ID-named file (the slot's name is gone; a new slot is made later), so
// recovery reads at most maxSlots × slotMaxBody of slots.
func TestSlotLargeBody(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, withSlots(1), func(o *Options) { o.slotMaxBody = 100 << 10 })
	big := strings.Repeat("0123456789abcde\n", 20<<10) // 320 KiB
	a := enqueue(t, q, big, "a@x")
	if p, slot := pathOf(t, q, a.ID); slot || p != filepath.Join(dir, msgDirName, a.ID) {
		t.Fatalf("large message in %s (slot %v)", p, slot)
	}
	if got := slotFiles(t, dir); len(got) != 0 {
		t.Fatalf("slot files %v", got)
	}
	b := enqueue(t, q, strings.Repeat("x", 90<<10), "b@x")
	if _, slot := pathOf(t, q, b.ID); !slot {
		t.Fatal("a new slot was not made")
	}
	q.Close()
	q = open(t, dir, nil, withSlots(1), func(o *Options) { o.slotMaxBody = 100 << 10 })
	if body(t, q, a.ID) != big || q.Verify(b.ID) != nil {
		t.Fatal("bodies differ after reopen")
	}
}

// TestSlotIDTaken: a slot's ID already taken by an
// ID-named file (never made by the queue itself) is copied to quarantine
// and the slot freed; the ID-named message is kept.
func TestSlotIDTaken(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, withSlots(1))
	a := enqueue(t, q, "a\r\n", "a@x")
	pa, _ := pathOf(t, q, a.ID)
	q.Close()
	// Another message under the same ID, as an ID-named file.
	q2 := open(t, t.TempDir(), nil, noSlots)
	env := &Envelope{ID: a.ID, From: "x@x", Recipients: []*Recipient{{Addr: "a@x"}}}
	if _, err := q2.Enqueue(env, strings.NewReader("other\r\n")); err != nil {
		t.Fatal(err)
	}
	p2, _ := pathOf(t, q2, a.ID)
	other, _ := os.ReadFile(p2)
	q2.Close()
	os.WriteFile(filepath.Join(dir, msgDirName, a.ID), other, 0o600)
	q = open(t, dir, nil, withSlots(1))
	if body(t, q, a.ID) != "other\r\n" {
		t.Fatal("the ID-named file's message was not kept")
	}
	if headerMagic(t, pa) != freeMagic {
		t.Fatal("slot not freed")
	}
	ents, _ := os.ReadDir(filepath.Join(dir, quarDirName))
	if len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), "slot-000."+a.ID) {
		t.Fatalf("quarantine: %v", ents)
	}
}

// tornPair is one slot file before and after Enqueue overwrote it.
type tornPair struct {
	old, new []byte
	oldID    string
	newID    string
	newBody  []byte
	newRcpts int
	oldSeed  uint32 // A's seed, which the free table holds for the slot
}

// withFreeHeader is the pair with A's slot marked free by its header
// (as recovery marks slots) instead of by the free table.
func (p tornPair) withFreeHeader() tornPair {
	p.old = slices.Clone(p.old)
	copy(p.old, freeHeader)
	return p
}

// makeTornPair enqueues message A (body of lenA bytes) into a one-slot
// queue, gives it several more records, delivers it (its slot is marked
// free), snapshots the slot, enqueues B (lenB bytes) into the same slot
// and snapshots it again.
func makeTornPair(t *testing.T, r *rand.Rand, lenA, lenB int) tornPair {
	dir := t.TempDir()
	c := newClock()
	q := open(t, dir, c, withSlots(1))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + r.IntN(26))
		}
		return b
	}
	envA := &Envelope{From: "old@x", Recipients: []*Recipient{{Addr: "a@x"}, {Addr: "b@x"}}}
	if _, err := q.Enqueue(envA, bytes.NewReader(rnd(lenA))); err != nil {
		t.Fatal(err)
	}
	for i := range 1 + r.IntN(4) {
		q.SetAttr(envA.ID, "n", strings.Repeat("v", r.IntN(300))+fmt.Sprint(i))
	}
	env := lease(t, q)
	q.Report(env.ID, []Result{{Index: 0, State: Delivered}, {Index: 1, State: Pending}})
	c.Add(time.Hour)
	env = lease(t, q)
	q.Report(env.ID, []Result{{Index: 1, State: Delivered}})
	p, _ := filepath.Glob(filepath.Join(dir, msgDirName, slotPrefix+"*"))
	if len(p) != 1 {
		t.Fatalf("slots %v", p)
	}
	old, _ := os.ReadFile(p[0])
	if !slotFreed(t, q, p[0]) {
		t.Fatal("A's slot not marked free")
	}
	nb := rnd(lenB)
	envB := &Envelope{From: "new@x", Recipients: []*Recipient{{Addr: "c@x"}}}
	if r.IntN(3) != 0 { // mostly as many recipients (and as long a first record) as A
		envB.Recipients = append(envB.Recipients, &Recipient{Addr: "d@x"})
	}
	if _, err := q.Enqueue(envB, bytes.NewReader(nb)); err != nil {
		t.Fatal(err)
	}
	if pb, slot := pathOf(t, q, envB.ID); !slot || pb != p[0] {
		t.Fatalf("B not in the slot: %s", pb)
	}
	nw, _ := os.ReadFile(p[0])
	q.Close()
	if string(old[:8]) != slotMagic || string(nw[:8]) != slotMagic {
		t.Fatalf("magics %q %q", old[:8], nw[:8])
	}
	return tornPair{old: old, new: nw, oldID: envA.ID, newID: envB.ID, newBody: nb, newRcpts: len(envB.Recipients),
		oldSeed: binary.LittleEndian.Uint32(old[24:])}
}

// mix builds a file of size bytes whose 512-byte sector i comes from
// the new content if fromNew(i), else from the old (zeros past the old
// end). The new content is the new file written over the old one: past
// its end the old bytes remain, as they do on disk while the cut to the
// new length is not durable.
func (p tornPair) mix(size int, fromNew func(i int) bool) []byte {
	over := make([]byte, max(len(p.old), len(p.new)))
	copy(over, p.old)
	copy(over, p.new)
	out := make([]byte, size)
	for off := 0; off < size; off += 512 {
		src := p.old
		if fromNew(off / 512) {
			src = over
		}
		end := min(off+512, size)
		if off < len(src) {
			copy(out[off:end], src[off:min(end, len(src))])
		}
	}
	return out
}

// TestSlotTornOverwrite is the slot's safety property: whatever mix of
// old and new 512-byte sectors (and old or new file length) a crash
// leaves of an overwrite, recovery never loads the finished old message
// and never loads anything but the new message byte for byte; the new
// message fully written is loaded, the old (free) content is free. Old
// messages have several records and were finished through the free
// table (half of the pairs: by the free header recovery writes); new
// ones are shorter, as long, and longer, including lengths that put the
// new first record where one of the old records starts.
func TestSlotTornOverwrite(t *testing.T) {
	r := rand.New(rand.NewPCG(19, uint64(os.Getpid())))
	// Equal lengths of 512k−32 bytes put the first record at a sector
	// boundary, where a torn write can leave the old first record behind
	// a new header and body.
	lens := [][2]int{{10240, 300}, {10240, 10240}, {3000, 10240}, {700, 700}, {5000, 4000}, {60000, 60000}, {200, 40000},
		{10208, 10208}, {10208, 10208}, {992, 992}, {992, 992}, {4064, 4064}}
	for range 4 {
		a := 100 + r.IntN(20000)
		lens = append(lens, [2]int{a, a}, [2]int{a, r.IntN(30000)})
	}
	// A queue whose readSlot (recovery's check of one slot) classifies
	// the mixes; a sample goes through a full Open as well.
	qdir := t.TempDir()
	q := open(t, qdir, nil, withSlots(1))
	probe := filepath.Join(qdir, msgDirName, "slot-900")
	buf := make([]byte, readAhead)
	checked, loaded := 0, 0
	check := func(p tornPair, data []byte, what string, full bool) bool {
		t.Helper()
		if err := os.WriteFile(probe, data, 0o600); err != nil {
			t.Fatal(err)
		}
		m, _, err := q.readSlot(probe, buf)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		checked++
		if m == nil {
			return false
		}
		loaded++
		if m.id != p.newID || m.env.ID != p.newID {
			t.Fatalf("%s: loaded message %s (old %s, new %s)", what, m.id, p.oldID, p.newID)
		}
		got := make([]byte, m.bodyLen)
		f, _ := os.Open(probe)
		_, err = f.ReadAt(got, headerSize)
		f.Close()
		if err != nil || !bytes.Equal(got, p.newBody) || m.env.From != "new@x" || len(m.env.Recipients) != p.newRcpts {
			t.Fatalf("%s: loaded content differs from what was enqueued", what)
		}
		for _, rc := range m.env.Recipients {
			if rc.State != Pending || rc.Attempts != 0 {
				t.Fatalf("%s: recipient %+v", what, rc)
			}
		}
		return true
	}
	for pi, l := range lens {
		p := makeTornPair(t, r, l[0], l[1])
		q.freed[900] = p.oldSeed
		if pi%2 == 1 {
			p = p.withFreeHeader()
			delete(q.freed, 900)
		}
		sectors := (max(len(p.old), len(p.new)) + 511) / 512
		sizes := []int{len(p.new)}
		if len(p.old) != len(p.new) {
			sizes = append(sizes, len(p.old))
		}
		// Clean cases.
		if !check(p, p.new, "new", false) {
			t.Fatalf("pair %d: the fully written new message is not loaded", pi)
		}
		if check(p, p.old, "old", false) {
			t.Fatalf("pair %d: the free slot loaded a message", pi)
		}
		for _, size := range sizes {
			// Written in order and cut off (prefix new), and the reverse.
			for k := 0; k <= sectors; k++ {
				check(p, p.mix(size, func(i int) bool { return i < k }), fmt.Sprintf("pair %d size %d prefix %d", pi, size, k), false)
				check(p, p.mix(size, func(i int) bool { return i >= k }), fmt.Sprintf("pair %d size %d suffix %d", pi, size, k), false)
			}
			// All new but one sector, all old but one.
			for k := 0; k < sectors; k++ {
				check(p, p.mix(size, func(i int) bool { return i != k }), fmt.Sprintf("pair %d size %d hole %d", pi, size, k), false)
				check(p, p.mix(size, func(i int) bool { return i == k }), fmt.Sprintf("pair %d size %d only %d", pi, size, k), false)
			}
			// Random mixes, with a bias so that most sectors are new.
			for range 20 {
				bias := r.Float64()
				check(p, p.mix(size, func(int) bool { return r.Float64() < bias }), fmt.Sprintf("pair %d size %d random", pi, size), false)
			}
		}
		// A small-file pair gets every mix.
		if sectors <= 8 {
			for _, size := range sizes {
				for mask := range 1 << sectors {
					check(p, p.mix(size, func(i int) bool { return mask>>i&1 == 1 }), fmt.Sprintf("pair %d size %d mask %b", pi, size, mask), false)
				}
			}
		}
	}
	q.Close()
	if loaded == 0 || loaded == checked {
		t.Fatalf("%d of %d mixes loaded", loaded, checked)
	}
	t.Logf("%d mixes checked, %d loaded the new message, the rest were free", checked, loaded)

	// Through Open: a sample of mixes as the only slot of a spool.
	for range 3 {
		p := makeTornPair(t, r, 5000+r.IntN(5000), 5000+r.IntN(5000))
		for range 8 {
			k := r.IntN(len(p.new)/512 + 2)
			data := p.mix(len(p.new), func(i int) bool { return i < k })
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, msgDirName), 0o700)
			os.WriteFile(filepath.Join(dir, msgDirName, "slot-000"), data, 0o600)
			os.WriteFile(filepath.Join(dir, freeTableName), encodeFreeEntry(0, p.oldSeed), 0o600)
			q := open(t, dir, nil)
			l := q.List()
			switch {
			case len(l) == 0:
				if !slotFreed(t, q, filepath.Join(dir, msgDirName, "slot-000")) {
					t.Fatal("a free slot was left unmarked")
				}
			case len(l) == 1 && l[0].ID == p.newID && body(t, q, p.newID) == string(p.newBody):
			default:
				t.Fatalf("recovered %+v from a torn slot", l)
			}
			if _, err := q.Get(p.oldID); !errors.Is(err, ErrNotFound) {
				t.Fatal("the finished message came back")
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, quarDirName)); len(ents) != 0 {
				t.Fatal("a torn slot was quarantined")
			}
			q.Close()
		}
	}
}

// TestSlotUnopenable: a free slot whose file has gone (removed behind
// the queue's back) is taken out of use and the message is written as an
// ID-named file instead of failing.
func TestSlotUnopenable(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, withSlots(1))
	a := enqueue(t, q, "a\r\n", "a@x")
	pa, _ := pathOf(t, q, a.ID)
	deliver(t, q, a.ID)
	if err := os.Remove(pa); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		b := enqueue(t, q, "b\r\n", "b@x")
		if p, slot := pathOf(t, q, b.ID); slot || p != filepath.Join(dir, msgDirName, b.ID) {
			t.Fatalf("message in %s (slot %v)", p, slot)
		}
	}
}

// TestSlotDamagedRecord: a slot whose header and first record belong
// together but whose later record is damaged (no torn write can do that)
// is copied to quarantine before the slot is reused.
func TestSlotDamagedRecord(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, withSlots(1))
	a := enqueue(t, q, "a\r\n", "a@x")
	if err := q.SetAttr(a.ID, "k", "v"); err != nil {
		t.Fatal(err)
	}
	pa, _ := pathOf(t, q, a.ID)
	q.Close()
	raw, _ := os.ReadFile(pa)
	d, err := decodeMessage(bytes.NewReader(raw), int64(len(raw)), "")
	if err != nil {
		t.Fatal(err)
	}
	// The second record: damage its JSON, then seal it again.
	rec := raw[d.validLen-int64(d.lastRec):]
	rec[recHeaderSize] = '['
	sealRecord(rec, d.seed)
	os.WriteFile(pa, raw, 0o600)
	q = open(t, dir, nil, withSlots(1))
	if n := len(q.List()); n != 0 {
		t.Fatalf("%d messages loaded", n)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, quarDirName))
	if len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), "slot-000.damaged") {
		t.Fatalf("quarantine: %v", ents)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, quarDirName, ents[0].Name())); !bytes.Equal(got, raw) {
		t.Fatal("the quarantined copy differs")
	}
	if headerMagic(t, pa) != freeMagic {
		t.Fatal("slot not freed")
	}
}

// TestSlotSeedCollision: a message whose seed is the one the free table
// holds for its slot (recovery would take it for the finished message)
// is written as an ID-named file instead.
func TestSlotSeedCollision(t *testing.T) {
	c := newClock()
	mk := func() *Envelope {
		return &Envelope{ID: "8E75AAAAAAAAAAAA", From: "f@x", Recipients: []*Recipient{{Addr: "a@x"}}}
	}
	q1 := open(t, t.TempDir(), c, withSlots(1))
	e1 := mk()
	if _, err := q1.Enqueue(e1, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	p1, _ := pathOf(t, q1, e1.ID)
	raw, _ := os.ReadFile(p1)
	q1.Close()
	dir := t.TempDir()
	q2 := open(t, dir, c, withSlots(1))
	q2.mu.Lock()
	q2.freed[0] = binary.LittleEndian.Uint32(raw[24:])
	q2.mu.Unlock()
	e2 := mk()
	if _, err := q2.Enqueue(e2, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	if p2, slot := pathOf(t, q2, e2.ID); slot || p2 != filepath.Join(dir, msgDirName, e2.ID) {
		t.Fatalf("message with the freed seed in %s (slot %v)", p2, slot)
	}
}
