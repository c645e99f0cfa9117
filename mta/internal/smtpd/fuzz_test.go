package smtpd

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/queue"
)

// FuzzCheckedReader: whatever it lets through has only CRLF line endings
// and no line over the limit; whatever it refuses is refused with one of
// our SMTP errors, never a panic.
func FuzzCheckedReader(f *testing.F) {
	for _, s := range []string{"a\r\nb\r\n", "a\nb", "x\r.\r\n", "\r\n.\r\n", strings.Repeat("y", 40) + "\r\n", "\r", "ok\r\n\r\n"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		r := &checkedReader{r: &chunked{b: data, n: int(chunk%16) + 1}, maxLine: 32}
		out, err := io.ReadAll(r)
		if err != nil {
			if err != errBareNewline && err != errLineTooLong {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !bytes.Equal(out, data) {
			t.Fatal("data changed on the way through")
		}
		for i, b := range out {
			if b == '\n' && (i == 0 || out[i-1] != '\r') {
				t.Fatal("bare LF passed")
			}
			if b == '\r' && (i+1 >= len(out) || out[i+1] != '\n') {
				t.Fatal("bare CR passed")
			}
		}
		for _, line := range bytes.Split(out, []byte("\r\n")) {
			if len(line) > 32 {
				t.Fatalf("line of %d bytes passed", len(line))
			}
		}
	})
}

type chunked struct {
	b []byte
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(c.n, len(p), len(c.b))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

type queueAcceptor struct{ q *queue.Queue }

func (a queueAcceptor) NewID() string { return a.q.NewID() }
func (a queueAcceptor) Accept(_ Meta, env *queue.Envelope, body io.Reader) (string, error) {
	return a.q.Enqueue(env, body)
}

// FuzzSession drives a whole SMTP session with arbitrary client input over
// an in-memory connection: the server must never panic or hang, and every
// message it queues must be free of bare CR/LF (no smuggled content
// reaches the queue).
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO a\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"EHLO a\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\nhi\n.\r\nMAIL FROM:<x@y>\r\n.\r\n",
		"HELO a\r\nMAIL FROM:<> SIZE=10 BODY=8BITMIME\r\nRCPT TO:<postmaster@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y\r\nBDAT 5 LAST\r\nhello",
		"EHLO a\r\nAUTH PLAIN AGFAYgBj\r\nSTARTTLS\r\nRSET\r\nNOOP\r\nVRFY x\r\n",
		"EHLO a\r\nMAIL FROM:<a@b.c> SMTPUTF8\r\nRCPT TO:<pöstmaster@example.test>\r\nRCPT TO:<evil@remote.example>\r\nDATA\r\n\r\n.\r\n",
	} {
		f.Add([]byte(s))
	}
	dir, err := os.MkdirTemp("", "fzq")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	q, err := queue.Open(queue.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { q.Close() })
	cfg := &conf.Config{Domains: []conf.Domain{{Name: "example.test", Mailboxes: []string{"postmaster"}}}}
	l := &Listener{name: "fuzz", kind: MX, hostname: "fuzz.test", router: router.New(cfg, nil),
		acceptor: queueAcceptor{q}, log: slog.New(slog.DiscardHandler), maxSize: 1 << 16, maxRcpts: 5, maxLine: 200,
		authFailDelay: time.Millisecond}
	f.Fuzz(func(t *testing.T, input []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		tc := &timeoutConn{Conn: server, cmd: time.Second, data: time.Second, maxCmdBytes: maxCommandBytes,
			plaintext: true, release: func() { close(done) }}
		tc.start(time.Now())
		go newServer(l, nil).Serve(&oneConnListener{c: tc})
		go func() {
			client.SetDeadline(time.Now().Add(3 * time.Second))
			client.Write(input)
			client.Write([]byte("\r\nQUIT\r\n"))
		}()
		io.Copy(io.Discard, &deadlineReader{client, time.Now().Add(3 * time.Second)})
		client.Close()
		<-done
		for _, env := range q.List() {
			rc, err := q.Body(env.ID)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(rc)
			rc.Close()
			if bytes.Contains(bytes.ReplaceAll(b, []byte("\r\n"), nil), []byte("\n")) || bytes.Contains(bytes.ReplaceAll(b, []byte("\r\n"), nil), []byte("\r")) {
				t.Fatalf("queued message with bare CR/LF: %q", b)
			}
			q.Delete(env.ID)
		}
	})
}

type deadlineReader struct {
	c        net.Conn
	deadline time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	d.c.SetReadDeadline(d.deadline)
	return d.c.Read(p)
}

// oneConnListener hands out one connection, then fails, which ends Serve
// while the connection's session goes on.
type oneConnListener struct {
	c    net.Conn
	done bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if l.done {
		return nil, net.ErrClosed
	}
	l.done = true
	return l.c, nil
}
func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
