//go:build linux

package bodyfile

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var errBig = errors.New("too large")

// pair returns two connected channels.
func pair(t *testing.T) (*Channel, *Channel) {
	t.Helper()
	a, child, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(child)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFDs waits until the descriptor count is back at want (closing is
// done by other goroutines).
func waitFDs(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) > want {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open, want %d", openFDs(t), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCreateSealsAndReads(t *testing.T) {
	for _, size := range []int{0, 1, 4095, 4096, 100 << 10, 3<<20 + 7} {
		body := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		f, n, err := Create(bytes.NewReader(body), 0, errBig)
		if err != nil || n != int64(size) {
			t.Fatalf("%d: Create: %d, %v", size, n, err)
		}
		if err := Check(f, n, 0, errBig); err != nil {
			t.Fatalf("%d: Check: %v", size, err)
		}
		// Sealed: no writing, growing or shrinking, not even by its maker.
		if _, err := f.WriteAt([]byte("x"), 0); err == nil {
			t.Fatalf("%d: write to a sealed file succeeded", size)
		}
		if err := f.Truncate(int64(size) + 1); err == nil {
			t.Fatalf("%d: grew a sealed file", size)
		}
		if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, 0); err == nil {
			// F_SEAL_SEAL: adding (even no) seals fails.
			t.Fatalf("%d: seals can still be changed", size)
		}
		// Read from 0 whatever the offset (it is at the end after Create).
		got, err := io.ReadAll(Reader(f, n))
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("%d: read back %d bytes, %v", size, len(got), err)
		}
		f.Close()
	}
}

func TestCreateLimit(t *testing.T) {
	if f, n, err := Create(strings.NewReader(strings.Repeat("x", 1000)), 1000, errBig); err != nil || n != 1000 {
		t.Fatalf("exactly the limit: %v", err)
	} else {
		f.Close()
	}
	if _, _, err := Create(strings.NewReader(strings.Repeat("x", 1001)), 1000, errBig); err != errBig {
		t.Fatalf("one byte over the limit: %v, want errBig", err)
	}
	readErr := errors.New("disk gone")
	if _, _, err := Create(io.MultiReader(strings.NewReader("abc"), iotestErr{readErr}), 0, errBig); !errors.Is(err, readErr) {
		t.Fatalf("failing reader: %v", err)
	}
}

// fileSource is a body in a file after a header of its own, as a queued
// message is (FileSource).
type fileSource struct {
	f      *os.File
	off, n int64
	plain  bool // hand ReadFrom a plain reader, not the file
}

func (s *fileSource) Size() int64 { return s.n }

func (s *fileSource) SendTo(w io.ReaderFrom) (int64, error) {
	if s.plain {
		return w.ReadFrom(io.NewSectionReader(s.f, s.off, s.n))
	}
	if _, err := s.f.Seek(s.off, io.SeekStart); err != nil {
		return 0, err
	}
	return w.ReadFrom(&io.LimitedReader{R: s.f, N: s.n})
}

func newFileSource(t *testing.T, body []byte) *fileSource {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "q")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	head := []byte("QUEUE HEADER, not part of the body\n")
	if _, err := f.Write(append(append(head, body...), "TRAILER"...)); err != nil {
		t.Fatal(err)
	}
	return &fileSource{f: f, off: int64(len(head)), n: int64(len(body))}
}

// CreateFrom: a body that is a file goes into the memory file by
// sendfile, exactly its bytes, sealed; or by copying when the source
// hands over no file.
func TestCreateFrom(t *testing.T) {
	for _, plain := range []bool{false, true} {
		for _, size := range []int{0, 1, 4095, 4096, 100 << 10, 3<<20 + 7} {
			body := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
			src := newFileSource(t, body)
			src.plain = plain
			f, n, err := CreateFrom(src, 0, errBig)
			if err != nil || n != int64(size) {
				t.Fatalf("plain=%v %d: CreateFrom: %d, %v", plain, size, n, err)
			}
			if err := Check(f, n, 0, errBig); err != nil {
				t.Fatalf("plain=%v %d: Check: %v", plain, size, err)
			}
			got, err := io.ReadAll(Reader(f, n))
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("plain=%v %d: read back %d bytes, %v", plain, size, len(got), err)
			}
			f.Close()
		}
	}
	src := newFileSource(t, bytes.Repeat([]byte("x"), 1000))
	if f, n, err := CreateFrom(src, 1000, errBig); err != nil || n != 1000 {
		t.Fatalf("exactly the limit: %d, %v", n, err)
	} else {
		f.Close()
	}
	src = newFileSource(t, bytes.Repeat([]byte("x"), 1001))
	if _, _, err := CreateFrom(src, 1000, errBig); err != errBig {
		t.Fatalf("one byte over the limit: %v, want errBig", err)
	}
}

type iotestErr struct{ err error }

func (r iotestErr) Read([]byte) (int, error) { return 0, r.err }

// TestCheckRefuses: what a hostile or broken peer might pass instead of a
// sealed body file of the announced size.
func TestCheckRefuses(t *testing.T) {
	good, n, err := Create(strings.NewReader("hello"), 0, errBig)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if err := Check(good, n+1, 0, errBig); err == nil {
		t.Fatal("wrong size accepted")
	}
	if err := Check(good, n, n-1, errBig); err != errBig {
		t.Fatalf("over the limit: %v, want errBig", err)
	}

	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	unsealed := os.NewFile(uintptr(fd), "unsealed")
	defer unsealed.Close()
	unsealed.WriteString("hello")
	if err := Check(unsealed, 5, 0, errBig); err == nil {
		t.Fatal("unsealed memory file accepted")
	}
	// Sealed against growing and shrinking but still writable.
	if _, err := unix.FcntlInt(unsealed.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		t.Fatal(err)
	}
	if err := Check(unsealed, 5, 0, errBig); err == nil {
		t.Fatal("writable memory file accepted")
	}

	plain, err := os.CreateTemp(t.TempDir(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.WriteString("hello")
	if err := Check(plain, 5, 0, errBig); err == nil {
		t.Fatal("ordinary file accepted")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := Check(r, 0, 0, errBig); err == nil {
		t.Fatal("pipe accepted")
	}
}

func TestSendTake(t *testing.T) {
	a, b := pair(t)
	before := openFDs(t)
	// Many at once, taken in another order than sent, from both sides.
	var wg sync.WaitGroup
	for k := 0; k < 40; k++ {
		from, to := a, b
		if k%2 == 1 {
			from, to = b, a
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := strings.Repeat(string(rune('a'+k%26)), 1000+k)
			f, n, err := Create(strings.NewReader(body), 0, errBig)
			if err != nil {
				t.Error(err)
				return
			}
			token, err := from.Send(f)
			f.Close()
			if err != nil {
				t.Error(err)
				return
			}
			if k%3 == 0 {
				time.Sleep(time.Millisecond) // the file waits for its taker
			}
			g, err := to.Take(context.Background(), token)
			if err != nil {
				t.Error(err)
				return
			}
			defer g.Close()
			if err := Check(g, n, 0, errBig); err != nil {
				t.Error(err)
				return
			}
			got, _ := io.ReadAll(Reader(g, n))
			if string(got) != body {
				t.Errorf("call %d: got %d bytes of another body", k, len(got))
			}
		}()
	}
	wg.Wait()
	waitFDs(t, before)
}

func TestTakeWaitsAndGivesUp(t *testing.T) {
	a, b := pair(t)
	// Taken before it arrives.
	f, _, _ := Create(strings.NewReader("late"), 0, errBig)
	defer f.Close()
	sent := make(chan error, 1)
	go func() {
		time.Sleep(20 * time.Millisecond)
		sent <- a.conn.send(555, f)
	}()
	g, err := b.Take(context.Background(), 555)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}

	// A token that never comes: the context ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.Take(ctx, 12345); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("missing file: %v", err)
	}
}

// waitPending waits until c has exactly n slots pending.
func waitPending(t *testing.T, c *Channel, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.pending)
		c.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d slots pending, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestUnclaimedFilesAreClosed: files nobody takes (a call that failed
// after its body was sent) are closed by the sweep, not kept forever.
func TestUnclaimedFilesAreClosed(t *testing.T) {
	a, b := pair(t)
	before := openFDs(t)
	for i := 0; i < 10; i++ {
		f, _, _ := Create(strings.NewReader("nobody wants me"), 0, errBig)
		if _, err := a.Send(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	waitPending(t, b, 10) // b holds all ten
	b.sweep(time.Now().Add(time.Second))
	waitFDs(t, before)
}

// TestHostileDatagrams: datagrams without exactly one descriptor and an
// 8-byte token are dropped, their descriptors closed, and the channel
// keeps working.
func TestHostileDatagrams(t *testing.T) {
	hostEnd, child, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer hostEnd.Close()
	defer child.Close()
	raw := int(child.Fd())
	f1, _, _ := Create(strings.NewReader("a"), 0, errBig)
	f2, _, _ := Create(strings.NewReader("b"), 0, errBig)
	defer f1.Close()
	defer f2.Close()
	before := openFDs(t)
	tok := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	for _, m := range []struct {
		data []byte
		oob  []byte
	}{
		{tok, nil}, // no descriptor
		{tok, unix.UnixRights(int(f1.Fd()), int(f2.Fd()))}, // two
		{[]byte{1, 2, 3}, unix.UnixRights(int(f1.Fd()))},   // short token
		{append(tok, 9), unix.UnixRights(int(f1.Fd()))},    // long token
	} {
		if err := unix.Sendmsg(raw, m.data, m.oob, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	// A good one after them still arrives.
	if err := unix.Sendmsg(raw, []byte{2, 0, 0, 0, 0, 0, 0, 0}, unix.UnixRights(int(f1.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	g, err := hostEnd.Take(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	hostEnd.mu.Lock()
	n := len(hostEnd.pending)
	hostEnd.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d dropped datagrams left pending files", n)
	}
	waitFDs(t, before)
}

// TestPeerGone: when the peer's end closes, a waiting Take fails at once
// with ErrClosed instead of waiting out its time.
func TestPeerGone(t *testing.T) {
	a, child, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := a.Take(context.Background(), 77)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	child.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Take after the peer went: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Take still waits after the peer went away")
	}
}

// TestDiscardRacesArrival: a call ended early discards its outputs while
// the plugin is still sending them. Whichever comes first, the file is
// closed at once and nothing is left pending (a file that arrived between
// the receiver making its slot and the discard used to stay open until
// the garbage collector found it).
func TestDiscardRacesArrival(t *testing.T) {
	a, b := pair(t)
	before := openFDs(t)
	const n = 3000
	files := make([]*os.File, n)
	for i := range files {
		f, _, err := Create(strings.NewReader("an output nobody waits for"), 0, errBig)
		if err != nil {
			t.Fatal(err)
		}
		files[i] = f
	}
	// Each discard as soon as the receiver has a slot for the file: it
	// meets the file on its way into the slot or just after.
	for i, f := range files {
		token := uint64(i + 1)
		if err := a.SendAs(token, f); err != nil {
			t.Fatal(err)
		}
		for {
			b.mu.Lock()
			s := b.pending[token]
			b.mu.Unlock()
			if s != nil {
				break
			}
			runtime.Gosched()
		}
		b.Discard(token)
	}
	for _, f := range files {
		f.Close()
	}
	waitPending(t, b, 0)
	waitFDs(t, before)
}
