package queue

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// spares lists the spare files in the msg directory.
func spares(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "msg"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), sparePrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func deliverAll(t *testing.T, q *Queue, env *Envelope) {
	t.Helper()
	got := lease(t, q)
	if got.ID != env.ID {
		t.Fatalf("leased %s, want %s", got.ID, env.ID)
	}
	var res []Result
	for i := range got.Recipients {
		res = append(res, Result{Index: i, State: Delivered, Status: "2.0.0"})
	}
	if err := q.Report(got.ID, res); err != nil {
		t.Fatal(err)
	}
}

// TestSpareFileReused: a delivered message's file is kept under a spare
// name and the next Enqueue overwrites it: same inode, cut to the new
// (shorter) length, the new body and envelope intact before and after a
// reopen; Close removes what spares are left.
func TestSpareFileReused(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, noSlots)
	big := strings.Repeat("x", 300<<10)
	a := enqueue(t, q, big, "a@example.org")
	fiA, err := os.Stat(filepath.Join(dir, "msg", a.ID))
	if err != nil {
		t.Fatal(err)
	}
	deliverAll(t, q, a)
	if _, err := os.Stat(filepath.Join(dir, "msg", a.ID)); !os.IsNotExist(err) {
		t.Fatalf("delivered message's file still there: %v", err)
	}
	if _, err := q.Body(a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Body of a delivered message: %v", err)
	}
	if s := spares(t, dir); len(s) != 1 {
		t.Fatalf("spares %v, want one", s)
	}
	const small = "Subject: b\r\n\r\nshort\r\n"
	b := enqueue(t, q, small, "b@example.org")
	fiB, err := os.Stat(filepath.Join(dir, "msg", b.ID))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(fiA, fiB) {
		t.Error("the second message did not reuse the first one's file")
	}
	if s := spares(t, dir); len(s) != 0 {
		t.Fatalf("spares %v after reuse", s)
	}
	q.mu.Lock()
	want := q.msgs[b.ID].validLen
	q.mu.Unlock()
	if fiB.Size() != want || want >= 1024 {
		t.Fatalf("reused file is %d bytes, want %d", fiB.Size(), want)
	}
	if got := body(t, q, b.ID); got != small {
		t.Fatalf("body %q", got)
	}
	c := enqueue(t, q, "Subject: c\r\n\r\nc\r\n", "c@example.org")
	deliverAll(t, q, b)
	// A longer message in the short spare: the file grows.
	bigger := strings.Repeat("y", 200<<10)
	d := enqueue(t, q, bigger, "d@example.org")
	if fiD, err := os.Stat(filepath.Join(dir, "msg", d.ID)); err != nil || !os.SameFile(fiA, fiD) {
		t.Fatalf("the longer message did not reuse the spare: %v", err)
	}
	q.Close()
	if s := spares(t, dir); len(s) != 0 {
		t.Fatalf("spares %v after Close", s)
	}
	q = open(t, dir, nil)
	if l := q.List(); len(l) != 2 {
		t.Fatalf("after reopen: %d messages", len(l))
	}
	for _, id := range []string{c.ID, d.ID} {
		if err := q.Verify(id); err != nil {
			t.Fatal(err)
		}
	}
	if body(t, q, d.ID) != bigger {
		t.Fatal("longer message's body differs after reopen")
	}
}

// TestSpareNotWhileRead: a message whose body is being read when it is
// delivered is unlinked, not kept for reuse, so the reader goes on
// reading its own bytes while new messages are written.
func TestSpareNotWhileRead(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, noSlots)
	const msgA = "Subject: a\r\n\r\nthe first message\r\n"
	a := enqueue(t, q, msgA, "a@example.org")
	rc, err := q.Body(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	deliverAll(t, q, a)
	if s := spares(t, dir); len(s) != 0 {
		t.Fatalf("file kept as spare %v while a reader had it open", s)
	}
	for i := 0; i < 3; i++ {
		enqueue(t, q, strings.Repeat("new ", 100), "b@example.org")
	}
	got, err := io.ReadAll(rc)
	if err != nil || string(got) != msgA {
		t.Fatalf("reader got %q, %v", got, err)
	}
	rc.Close()
	rc.Close() // a second Close must not count the reader twice
	// A closed reader does not hold later messages' files back.
	b := enqueue(t, q, "Subject: b\r\n\r\nb\r\n", "b@example.org")
	rc, err = q.Body(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range q.msgs {
		if m.readers != 0 {
			t.Fatalf("%s has %d readers after Close", m.id, m.readers)
		}
	}
}

// TestSparesRemovedAtOpen: spare files left by a crash are removed by
// recovery like any temp file, and never loaded.
func TestSparesRemovedAtOpen(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, noSlots)
	a := enqueue(t, q, "Subject: a\r\n\r\na\r\n", "a@example.org")
	deliverAll(t, q, a)
	if s := spares(t, dir); len(s) != 1 {
		t.Fatalf("spares %v", s)
	}
	// A crash leaves the spare behind (Close would remove it): copy it
	// aside and put it back after closing.
	p := filepath.Join(dir, "msg", spares(t, dir)[0])
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	q = open(t, dir, nil)
	if n := len(q.List()); n != 0 {
		t.Fatalf("%d messages loaded from a spare", n)
	}
	if s := spares(t, dir); len(s) != 0 {
		t.Fatalf("spares %v left after Open", s)
	}
}
