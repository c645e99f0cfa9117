package smtpd

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/queue"
)

// runPipe drives one session with input over net.Pipe (as FuzzSession
// does) and returns what the server said and how many messages it queued.
func runPipe(t *testing.T, input string) (string, int) {
	t.Helper()
	q, err := queue.Open(queue.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	cfg := &conf.Config{Domains: []conf.Domain{{Name: "example.test", Mailboxes: []string{"postmaster"}}}}
	l := &Listener{name: "t", kind: MX, hostname: "t.test", router: router.New(cfg, nil),
		acceptor: queueAcceptor{q}, log: slog.New(slog.DiscardHandler), maxSize: 1 << 16, maxRcpts: 5,
		authFailDelay: time.Millisecond, guard: NewAuthGuard(GuardConfig{}), postmaster: "postmaster@example.test"}
	client, server := net.Pipe()
	done := make(chan struct{})
	tc := &timeoutConn{Conn: server, cmd: 2 * time.Second, data: 2 * time.Second, maxCmdBytes: maxCommandBytes,
		plaintext: true, release: func() { close(done) }}
	tc.start(time.Now())
	go newServer(l, nil).Serve(&oneConnListener{c: tc})
	go func() {
		client.SetDeadline(time.Now().Add(5 * time.Second))
		client.Write([]byte(input))
	}()
	out, _ := io.ReadAll(&deadlineReader{client, time.Now().Add(5 * time.Second)})
	client.Close()
	<-done
	return string(out), len(q.List())
}

// TestPipeSession: the timeoutConn set up as in FuzzSession carries a
// whole session (the fuzz target would be worthless if every read timed
// out at once), <Postmaster> is taken, and "<CR><LF>.<CR>X" is refused.
func TestPipeSession(t *testing.T) {
	out, n := runPipe(t, "EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
	if n != 1 {
		t.Fatalf("queued %d messages; server said:\n%s", n, out)
	}
	out, n = runPipe(t, "EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\rX\r\n.\r\nQUIT\r\n")
	if n != 0 {
		t.Fatalf("<CR><LF>.<CR>X queued; server said:\n%s", out)
	}
}

// TestAuthGuard: the per-address block and its expiry, the per-account
// rule that spares clean addresses, and the memory of good logins.
func TestAuthGuard(t *testing.T) {
	now := time.Unix(1e9, 0)
	g := NewAuthGuard(GuardConfig{MaxConcurrent: 2, MaxFailuresPerIP: 3, MaxFailuresPerAccount: 4,
		Window: time.Minute, BlockTime: 10 * time.Minute})
	g.now = func() time.Time { return now }
	bad := func() (bool, error) { return false, nil }
	good := func() (bool, error) { return true, nil }
	a, b, c := net.ParseIP("192.0.2.1"), net.ParseIP("192.0.2.2"), net.ParseIP("192.0.2.3")
	for i := 1; i <= 3; i++ {
		if v, n := g.Check(a, "u@x", bad); v != authBad || n != i {
			t.Fatalf("failure %d: verdict %d count %d", i, v, n)
		}
	}
	if v, _ := g.Check(a, "u@x", good); v != authThrottled || !g.Blocked(a) {
		t.Fatalf("blocked address: verdict %d", v)
	}
	// One failure from b: the account has 4 and is under attack.
	if v, _ := g.Check(b, "u@x", bad); v != authBad {
		t.Fatal(v)
	}
	if v, _ := g.Check(b, "u@x", good); v != authThrottled {
		t.Fatalf("address that failed for an attacked account: verdict %d", v)
	}
	if v, _ := g.Check(c, "u@x", good); v != authOK {
		t.Fatalf("clean address, right password: verdict %d", v)
	}
	if !g.Privileged(c) || g.Privileged(b) {
		t.Fatal("privileged: want c only")
	}
	// The window passes, the block does not yet.
	now = now.Add(2 * time.Minute)
	if v, _ := g.Check(b, "u@x", good); v != authOK {
		t.Fatalf("after the window: verdict %d", v)
	}
	if !g.Blocked(a) {
		t.Fatal("block ended with the window")
	}
	now = now.Add(10 * time.Minute)
	if g.Blocked(a) {
		t.Fatal("block outlived block_time")
	}
}
