package queue

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

const recoverCrashEnv = "POSTHORN_QUEUE_RECOVER_CRASH"

func init() {
	// The child of TestCrashDuringRecovery: open the spool and die by
	// SIGKILL at the k-th step of recovery ("DIR:k").
	v := os.Getenv(recoverCrashEnv)
	if v == "" {
		return
	}
	dir, ks, _ := strings.Cut(v, ":")
	k, _ := strconv.Atoi(ks)
	var n atomic.Int64
	Open(Options{Dir: dir, Logger: quiet, recoverStep: func() {
		if n.Add(1) == int64(k) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}})
	os.Exit(7) // k was past the end of recovery
}

// messySpool builds a spool with every case recovery handles: pending
// messages (some with a longer journal), a message whose last record
// left no recipient pending, a tombstoned one, torn tails, temp files,
// a corrupt record, a truncated body and a file that is no queue file.
func messySpool(t *testing.T, dir string) {
	c := newClock()
	q := open(t, dir, c, noSlots)
	var ids []string
	for i := range 60 {
		env := enqueue(t, q, strings.Repeat(fmt.Sprintf("line %d\r\n", i), 1+i*40), "a@x", "b@x")
		ids = append(ids, env.ID)
		if i%3 == 0 {
			q.Hold(env.ID)
			q.SetAttr(env.ID, "n", strconv.Itoa(i))
		}
	}
	envs := map[string]*Envelope{}
	for _, e := range q.List() {
		envs[e.ID] = e
	}
	q.Close()
	messySlots(t, dir, c)
	msgDir := filepath.Join(dir, msgDirName)
	appendTo := func(id string, b []byte) {
		f, err := os.OpenFile(filepath.Join(msgDir, id), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(b)
		f.Close()
	}
	envOf := func(id string) *Envelope {
		e := envs[id]
		e.Recovered = false
		return e
	}
	for i, id := range ids {
		switch i % 10 {
		case 1: // finished: the last record has no pending recipient
			e := envOf(id)
			for _, r := range e.Recipients {
				r.State = Delivered
			}
			rec, _ := encodeEnvelopeRecord(e)
			appendTo(id, rec)
		case 2: // deleted
			appendTo(id, encodeRecord(recDeleted, nil))
		case 4, 7: // torn tail
			e := envOf(id)
			e.Held = !e.Held
			rec, _ := encodeEnvelopeRecord(e)
			appendTo(id, rec[:len(rec)/2])
		case 5: // corrupt envelope record: quarantined
			p := filepath.Join(msgDir, id)
			raw, _ := os.ReadFile(p)
			raw[len(raw)-3] ^= 0x40
			os.WriteFile(p, raw, 0o600)
		case 8: // body cut short: quarantined
			os.Truncate(filepath.Join(msgDir, id), headerSize+5)
		}
	}
	for i := range 5 {
		os.WriteFile(filepath.Join(msgDir, fmt.Sprintf("%s%d", tmpPrefix, i)), []byte("half"), 0o600)
	}
	os.WriteFile(filepath.Join(msgDir, "no-queue-file"), []byte("junk"), 0o600)
}

// messySlots adds slot files to a spool: pending ones (one with a longer
// journal, one with a torn tail), deleted and delivered ones (marked
// free), one whose body no longer matches its header (a torn overwrite:
// freed), and messages that found every slot busy (ID-named files).
func messySlots(t *testing.T, dir string, c *clock) {
	q, err := Open(Options{Dir: dir, Logger: quiet, Now: c.Now, maxSlots: 6})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 10 {
		env := &Envelope{From: "s@x", Recipients: []*Recipient{{Addr: "a@x"}}}
		if _, err := q.Enqueue(env, strings.NewReader(strings.Repeat(fmt.Sprintf("slot %d\r\n", i), 1+i*300))); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, env.ID)
	}
	q.SetAttr(ids[0], "k", "v")
	q.Hold(ids[0])
	q.Delete(ids[1])
	q.SetAttr(ids[2], "k", "v")
	paths := map[string]string{}
	q.mu.Lock()
	for _, id := range ids {
		if m := q.msgs[id]; m != nil && m.slot {
			paths[id] = m.path
		}
	}
	q.mu.Unlock()
	if len(paths) != 5 {
		t.Fatalf("%d messages in slots, want 5", len(paths))
	}
	q.Close()
	// ids[2]: torn tail.
	f, _ := os.OpenFile(paths[ids[2]], os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{40, 0, 0, 0, 1, 2, 3, 4, 'E', '{'})
	f.Close()
	// ids[3]: one body byte differs: not the message that was written.
	raw, _ := os.ReadFile(paths[ids[3]])
	raw[headerSize+7] ^= 1
	os.WriteFile(paths[ids[3]], raw, 0o600)
}

// spoolState is what a recovered spool holds: the envelopes (as JSON,
// without Recovered), the message files' sizes, and the names in msg/
// and quarantine/ (the quarantine's without a collision suffix).
func spoolState(t *testing.T, dir string) string {
	q := open(t, dir, nil)
	var b strings.Builder
	for _, e := range q.List() {
		if err := q.Verify(e.ID); err != nil {
			t.Errorf("%s: %v", e.ID, err)
		}
		e.Recovered = false
		rec, _ := encodeEnvelopeRecord(e)
		q.mu.Lock()
		p := q.msgs[e.ID].path
		q.mu.Unlock()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %d\n", rec[recHeaderSize:], fi.Size())
	}
	q.Close()
	for _, d := range []string{msgDirName, quarDirName} {
		ents, _ := os.ReadDir(filepath.Join(dir, d))
		var names []string
		for _, e := range ents {
			n, _, _ := strings.Cut(e.Name(), ".")
			if n == "" {
				n = e.Name()
			}
			names = append(names, n)
		}
		slices.Sort(names)
		fmt.Fprintf(&b, "%s: %v\n", d, names)
	}
	return b.String()
}

func copySpool(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(to, lockName))
}

// TestCrashDuringRecovery kills a process by SIGKILL in the middle of
// recovering a messy spool (after the k-th file it loaded, removed,
// truncated or quarantined; several workers are between steps at that
// moment), sometimes twice, and checks that the next recovery ends in
// exactly the state of an uninterrupted one.
func TestCrashDuringRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	orig := t.TempDir()
	messySpool(t, orig)
	ref := t.TempDir()
	copySpool(t, orig, ref)
	want := spoolState(t, ref)
	if !strings.Contains(want, "quarantine: [") || !strings.Contains(want, "slot-005") || strings.Count(want, "\n") < 40 {
		t.Fatalf("reference state looks wrong:\n%s", want)
	}
	for _, ks := range [][]int{{1}, {3}, {9}, {20}, {37}, {55}, {62}, {66}, {3, 2}, {30, 12}, {64, 60}} {
		dir := t.TempDir()
		copySpool(t, orig, dir)
		for _, k := range ks {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d", recoverCrashEnv, dir, k))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("k=%d: child did not die by SIGKILL: %v %s", k, err, out.String())
			}
		}
		if got := spoolState(t, dir); got != want {
			t.Errorf("crash at steps %v: state differs from an uninterrupted recovery\n got:\n%s\nwant:\n%s", ks, got, want)
		}
	}
}

// TestRecoverPartialFiles cuts a message file (header, body, two
// records) at every length, for bodies that put the file's end before,
// at and after recovery's first read of readAhead bytes, and checks what
// load makes of each: a cut in the header, body or first record is an
// error (quarantine); a cut in the second record gives the first
// record's state and truncates the file to its end; the whole file gives
// the second record's state.
func TestRecoverPartialFiles(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil, noSlots)
	defer q.Close()
	buf := make([]byte, readAhead)
	n := 0
	for _, bodyLen := range []int{0, 1000, readAhead - 560, readAhead - 300, readAhead - 32, 3 * readAhead} {
		body := bytes.Repeat([]byte("x"), bodyLen)
		env := enqueue(t, q, string(body), "a@x")
		id := env.ID
		p := filepath.Join(dir, msgDirName, id)
		first, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Hold(id); err != nil {
			t.Fatal(err)
		}
		full, _ := os.ReadFile(p)
		end1 := len(first)
		cuts := map[int]bool{}
		for c := 0; c <= len(full); c++ {
			// Every cut near the interesting offsets, a sample elsewhere.
			near := func(o int) bool { return c >= o-12 && c <= o+12 }
			if near(headerSize) || near(headerSize+bodyLen) || near(end1) || near(len(full)) ||
				near(readAhead) || c%251 == 0 {
				cuts[c] = true
			}
		}
		for c := range cuts {
			n++
			cid := fmt.Sprintf("Cut%013d", n)
			// The envelope must name the file: rewrite the ID in place
			// (same length, so the records keep their offsets), and
			// recompute their checksums.
			data := retarget(t, full, id, cid)
			cp := filepath.Join(dir, msgDirName, cid)
			if err := os.WriteFile(cp, data[:c], 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := q.load(cid, buf)
			switch {
			case c < end1:
				if err == nil {
					t.Errorf("body %d, cut %d/%d: loaded, want an error", bodyLen, c, len(full))
				}
			case c < len(full):
				if err != nil || m.env.Held {
					t.Errorf("body %d, cut %d/%d: %v, held %v; want the first record", bodyLen, c, len(full), err, m != nil && m.env.Held)
					break
				}
				if fi, _ := os.Stat(cp); fi.Size() != int64(end1) || m.validLen != int64(end1) {
					t.Errorf("body %d, cut %d: file %d bytes, validLen %d; want both %d", bodyLen, c, fi.Size(), m.validLen, end1)
				}
			default:
				if err != nil || !m.env.Held || m.validLen != int64(len(full)) || m.bodyLen != int64(bodyLen) {
					t.Errorf("body %d, whole file: %v %+v", bodyLen, err, m)
				}
			}
			os.Remove(cp)
		}
	}
}

// retarget returns a copy of a message file whose envelope records name
// id instead of old (same length).
func retarget(t *testing.T, file []byte, old, id string) []byte {
	out := slices.Clone(file)
	hdrEnd := headerSize
	bodyLen, _, _, err := decodeHeader(out)
	if err != nil {
		t.Fatal(err)
	}
	off := hdrEnd + int(bodyLen)
	for off+recHeaderSize <= len(out) {
		n := int(uint32(out[off]) | uint32(out[off+1])<<8 | uint32(out[off+2])<<16 | uint32(out[off+3])<<24)
		rec := out[off : off+recHeaderSize+n]
		p := bytes.Replace(rec[recHeaderSize:], []byte(`"id":"`+old+`"`), []byte(`"id":"`+id+`"`), 1)
		copy(rec, encodeRecord(rec[8], p))
		off += len(rec)
	}
	return out
}
