package smtpd

import (
	"net"
	"sync"
	"testing"
	"time"
)

// TestSessionCountOpenAndPeak: the open count follows accepts and closes,
// the peak keeps the most open at once, a closed session's peer sees the
// close, and a second Close gives nothing back twice.
func TestSessionCountOpenAndPeak(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var open, peak []int
	l := &limitListener{Listener: ln, max: 10, now: time.Now, SessionCount: NewSessionCount(),
		onCount: func(o, p int) {
			mu.Lock()
			open, peak = append(open, o), append(peak, p)
			mu.Unlock()
		}}
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	accept := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b, c := accept(), accept(), accept()
	a.Close()
	clients[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := clients[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("closed session still readable")
	}
	b.Close()
	b.Close() // a second Close gives nothing back twice
	d := accept()
	defer c.Close()
	defer d.Close()
	mu.Lock()
	defer mu.Unlock()
	wantOpen := []int{1, 2, 3, 2, 1, 2}
	wantPeak := []int{1, 2, 3, 3, 3, 3}
	if len(open) != len(wantOpen) {
		t.Fatalf("counts reported %v / %v; want open %v peak %v", open, peak, wantOpen, wantPeak)
	}
	for i := range wantOpen {
		if open[i] != wantOpen[i] || peak[i] != wantPeak[i] {
			t.Fatalf("counts reported open %v peak %v; want %v %v", open, peak, wantOpen, wantPeak)
		}
	}
	if n := l.Active(); n != 2 {
		t.Fatalf("Active() = %d, want 2", n)
	}
}
