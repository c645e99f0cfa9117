package remote

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/delivery"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/testbed/ca"
	"golang.org/x/sys/unix"
)

// rawMTA is a loopback SMTP server that records the DATA bytes exactly as
// they arrive (dot-stuffed, with the end-of-data line), so a test can
// compare them with what the dot-stuffing must produce.
type rawMTA struct {
	t    *testing.T
	ln   net.Listener
	opts rawOpts
	wg   sync.WaitGroup

	mu   sync.Mutex
	data [][]byte
	tls  []bool
}

type rawOpts struct {
	eightBit bool
	tlsCert  *tls.Certificate // offer STARTTLS
	// slow: a 32 KiB receive buffer, and the data read 512 bytes at a
	// time, so the sender's writes (and sendfile) are cut short.
	slow bool
	// dropAfter closes the connection after this many data bytes.
	dropAfter int
	// discard: read the data in large pieces and keep nothing (only
	// count messages), for benchmarks.
	discard bool
}

func startRaw(t *testing.T, o rawOpts) *rawMTA {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &rawMTA{t: t, ln: ln, opts: o}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				defer c.Close()
				m.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); m.wg.Wait() })
	return m
}

func (m *rawMTA) port() int { return m.ln.Addr().(*net.TCPAddr).Port }

// slowReader hands out at most 512 bytes per Read.
type slowReader struct{ r io.Reader }

func (s slowReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 512)]) }

func (m *rawMTA) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if m.opts.slow {
		c.(*net.TCPConn).SetReadBuffer(32 << 10)
	}
	newReader := func(c net.Conn) *bufio.Reader {
		if m.opts.slow {
			return bufio.NewReaderSize(slowReader{c}, 512)
		}
		return bufio.NewReader(c)
	}
	r := newReader(c)
	say := func(s string) { io.WriteString(c, s+"\r\n") }
	say("220 raw.test ESMTP")
	isTLS := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimRight(line, "\r\n"))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			ext := []string{"250-raw.test", "250-PIPELINING"}
			if m.opts.eightBit {
				ext = append(ext, "250-8BITMIME")
			}
			if m.opts.tlsCert != nil && !isTLS {
				ext = append(ext, "250-STARTTLS")
			}
			ext = append(ext, "250 SIZE 100000000")
			say(strings.Join(ext, "\r\n"))
		case cmd == "STARTTLS":
			say("220 go ahead")
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*m.opts.tlsCert}})
			if err := tc.Handshake(); err != nil {
				return
			}
			c, isTLS, r = tc, true, newReader(tc)
			say = func(s string) { io.WriteString(c, s+"\r\n") }
		case strings.HasPrefix(cmd, "MAIL"), strings.HasPrefix(cmd, "RCPT"), cmd == "RSET", cmd == "NOOP":
			say("250 ok")
		case cmd == "DATA" && m.opts.discard:
			say("354 go on")
			if !discardData(r) {
				return
			}
			m.mu.Lock()
			m.data = append(m.data, nil)
			m.mu.Unlock()
			say("250 2.0.0 queued")
		case cmd == "DATA":
			say("354 go on")
			var data []byte
			for {
				l, err := r.ReadBytes('\n')
				data = append(data, l...)
				if m.opts.dropAfter > 0 && len(data) >= m.opts.dropAfter {
					return
				}
				if err != nil {
					return
				}
				if string(l) == ".\r\n" {
					break
				}
			}
			m.mu.Lock()
			m.data = append(m.data, data)
			m.tls = append(m.tls, isTLS)
			m.mu.Unlock()
			say("250 2.0.0 queued")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("502 what")
		}
	}
}

// discardData reads up to and including the end-of-data line. The data
// must be dot-stuffed, so "\r\n.\r\n" is its end (a body that is only
// the end line is not expected here).
func discardData(r *bufio.Reader) bool {
	buf := make([]byte, 64<<10)
	var tail []byte
	for {
		n, err := r.Read(buf)
		tail = append(tail, buf[:n]...)
		if bytes.HasSuffix(tail, []byte("\r\n.\r\n")) {
			return true
		}
		if len(tail) > 4 {
			tail = append(tail[:0], tail[len(tail)-4:]...)
		}
		if err != nil {
			return false
		}
	}
}

func (m *rawMTA) received() ([][]byte, []bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data, m.tls
}

// refStuffed is the DATA form of body, written plainly (RFC 5321
// §4.5.2): lines end in CRLF (a bare LF gets a CR), a line that begins
// with "." gets another, and ".\r\n" ends the data (after a CRLF if the
// body does not end with a line end).
func refStuffed(body []byte) []byte {
	var out []byte
	lineStart := true
	for i, c := range body {
		if lineStart && c == '.' {
			out = append(out, '.')
		}
		if c == '\n' && (i == 0 || body[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
		lineStart = c == '\n'
	}
	switch {
	case len(body) > 0 && body[len(body)-1] == '\n':
	case len(body) > 0 && body[len(body)-1] == '\r':
		out = append(out, '\n')
	default:
		out = append(out, "\r\n"...)
	}
	return append(out, ".\r\n"...)
}

// spoolMsg queues body in a real queue and returns its envelope and the
// queue's Body function for it.
func spoolMsg(t *testing.T, q *queue.Queue, body []byte, bodyType string) (*queue.Envelope, delivery.Body) {
	t.Helper()
	env := &queue.Envelope{From: "a@example.test", BodyType: bodyType,
		Recipients: []*queue.Recipient{{Addr: "x@dest.test"}}}
	if _, err := q.Enqueue(env, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	return env, func() (io.ReadCloser, error) { return q.Body(env.ID) }
}

func openQueue(t *testing.T, dir string) *queue.Queue {
	t.Helper()
	q, err := queue.Open(queue.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func smarthost(t *testing.T, n *fakeNet, m *rawMTA, level string) *Transport {
	t.Helper()
	return n.transport(fmt.Sprintf(`
[[transport]]
domain = "*"
kind = "smarthost"
host = "127.0.0.1:%d"
tls_level = %q
`, m.port(), level))
}

func deliverSpooled(t *testing.T, tr *Transport, env *queue.Envelope, body delivery.Body) delivery.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return tr.Deliver(ctx, env, []int{0}, body)[0]
}

// bigBody is n bytes of CRLF lines of text, in DATA form already.
func bigBody(n int) []byte {
	line := "Subject: x\r\n\r\n"
	var b bytes.Buffer
	b.WriteString(line)
	for k := 0; b.Len() < n; k++ {
		fmt.Fprintf(&b, "line %d of the body, some text to fill it up; a dot. here is not at a line start\r\n", k)
	}
	return b.Bytes()
}

// TestSpooledBodies sends spooled bodies through the pipelined path to a
// real server over loopback and compares the bytes it received with the
// DATA form of each body: bodies in DATA form go out from the spool file
// (sendfile), all others through the dot-stuffing writer.
func TestSpooledBodies(t *testing.T) {
	big := bigBody(300 << 10)
	cases := []struct {
		name     string
		body     []byte
		bodyType string
		sendfile bool
	}{
		{"big, DATA form", big, "", true},
		{"big, 8BITMIME to an 8BITMIME server", append(bytes.Clone(big), "caf\xc3\xa9\r\n"...), "8BITMIME", true},
		{"exactly the threshold", sized(sendfileMin), "", true},
		{"one byte short of it", sized(sendfileMin - 1), "", false},
		{"small, DATA form", []byte("Subject: x\r\n\r\nhello\r\n"), "", false},
		{"big, a dot line in the middle", append(append(bytes.Clone(big), ".hidden\r\n"...), big...), "", false},
		{"big, the end-of-data line in it", append(append(bytes.Clone(big), ".\r\n"...), big...), "", false},
		{"big, a dot line last", append(bytes.Clone(big), "..\r\n"...), "", false},
		{"big, a dot line first", append([]byte(".first\r\n"), big...), "", false},
		{"big, no CRLF at the end", append(bytes.Clone(big), "no line end"...), "", false},
		{"big, ends in a bare CR", append(bytes.Clone(big), "x\r"...), "", false},
		{"big, a bare LF", append(append(bytes.Clone(big), "bare\n"...), big...), "", false},
	}
	n := newNet(t)
	m := startRaw(t, rawOpts{eightBit: true})
	tr := smarthost(t, n, m, "none")
	q := openQueue(t, t.TempDir())
	// Every case twice: from the queue, and as an encryption output kept
	// in the plugin's memory file (delivery.SealedBody).
	var all []struct {
		name     string
		body     []byte
		bodyType string
		sendfile bool
	}
	for _, c := range cases {
		all = append(all, c)
		c.name = "sealed output, " + c.name
		all = append(all, c)
	}
	for i, c := range all {
		before := spooledSends.Load()
		env, body := spoolMsg(t, q, c.body, c.bodyType)
		if strings.HasPrefix(c.name, "sealed output, ") {
			body = sealedOutput(t, c.body)
		}
		if out := deliverSpooled(t, tr, env, body); out.State != queue.Delivered {
			t.Fatalf("%s: %+v", c.name, out)
		}
		got, _ := m.received()
		if len(got) != i+1 {
			t.Fatalf("%s: server has %d messages, want %d", c.name, len(got), i+1)
		}
		if want := refStuffed(c.body); !bytes.Equal(got[i], want) {
			t.Errorf("%s: received %d bytes, want %d; first difference at %d", c.name, len(got[i]), len(want), firstDiff(got[i], want))
		}
		if used := spooledSends.Load() > before; used != c.sendfile {
			t.Errorf("%s: sent from the spool file: %v, want %v", c.name, used, c.sendfile)
		}
	}
}

// sized is a body in DATA form of exactly n bytes.
func sized(n int) []byte {
	b := bigBody(n - 200)
	return append(b, strings.Repeat("y", n-len(b)-2)+"\r\n"...)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestSpooledBodyConversions: a body the 7-bit conversion must rewrite
// (8BITMIME to a server without it) and a body under TLS never go out
// from the spool file.
func TestSpooledBodyConversions(t *testing.T) {
	n := newNet(t)
	q := openQueue(t, t.TempDir())
	body := append(bigBody(200<<10), "caf\xc3\xa9\r\n"...)

	m7 := startRaw(t, rawOpts{})
	before := spooledSends.Load()
	env, b := spoolMsg(t, q, body, "8BITMIME")
	if out := deliverSpooled(t, smarthost(t, n, m7, "none"), env, b); out.State != queue.Delivered {
		t.Fatalf("%+v", out)
	}
	got, _ := m7.received()
	if spooledSends.Load() != before {
		t.Error("an 8-bit body went to a 7-bit server from the spool file")
	}
	if len(got) != 1 || bytes.Equal(got[0], refStuffed(body)) || bytes.ContainsFunc(got[0], func(r rune) bool { return r > 127 }) {
		t.Errorf("the body was not converted to 7 bits")
	}

	cert, err := ca.SelfSigned("raw.test")
	if err != nil {
		t.Fatal(err)
	}
	mt := startRaw(t, rawOpts{tlsCert: &cert})
	before = spooledSends.Load()
	env, b = spoolMsg(t, q, bigBody(400<<10), "")
	if out := deliverSpooled(t, smarthost(t, n, mt, "encrypt"), env, b); out.State != queue.Delivered {
		t.Fatalf("%+v", out)
	}
	got, isTLS := mt.received()
	if spooledSends.Load() != before {
		t.Error("a body went from the spool file into a TLS connection")
	}
	if len(got) != 1 || !isTLS[0] || !bytes.Equal(got[0], refStuffed(bigBody(400<<10))) {
		t.Errorf("TLS delivery: %d messages, tls %v", len(got), isTLS)
	}
}

// TestSpooledBodySlowServer: a server that reads 512 bytes at a time with
// a 32 KiB receive buffer; 8 MiB is more than the sender's socket buffer
// takes (4 MiB at most by default), so sendfile sends the body in several
// pieces (strace showed 5 calls, 4 of them partial); the bytes must still
// be exactly the body.
func TestSpooledBodySlowServer(t *testing.T) {
	n := newNet(t)
	q := openQueue(t, t.TempDir())
	m := startRaw(t, rawOpts{slow: true})
	tr := smarthost(t, n, m, "none")
	body := bigBody(8 << 20)
	before := spooledSends.Load()
	env, b := spoolMsg(t, q, body, "")
	if out := deliverSpooled(t, tr, env, b); out.State != queue.Delivered {
		t.Fatalf("%+v", out)
	}
	got, _ := m.received()
	if spooledSends.Load() != before+1 {
		t.Error("not sent from the spool file")
	}
	if len(got) != 1 || !bytes.Equal(got[0], refStuffed(body)) {
		t.Errorf("received %d messages; bytes match: %v", len(got), len(got) == 1 && bytes.Equal(got[0], refStuffed(body)))
	}
}

// TestWrappedBodyNotFromSpool: a stage that wraps the queue's reader
// (as DKIM signing or the encryption plan do) changes the bytes: they go
// through the dot-stuffing writer, even though the spooled body is in
// DATA form.
func TestWrappedBodyNotFromSpool(t *testing.T) {
	n := newNet(t)
	q := openQueue(t, t.TempDir())
	m := startRaw(t, rawOpts{})
	body := bigBody(200 << 10)
	env, inner := spoolMsg(t, q, body, "")
	prefix := "X-Added: by a stage\r\n.a dot line the stage added\r\n"
	wrapped := func() (io.ReadCloser, error) {
		rc, err := inner()
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(strings.NewReader(prefix), rc), rc}, nil
	}
	before := spooledSends.Load()
	if out := deliverSpooled(t, smarthost(t, n, m, "none"), env, wrapped); out.State != queue.Delivered {
		t.Fatalf("%+v", out)
	}
	if spooledSends.Load() != before {
		t.Error("a wrapped body went from the spool file")
	}
	want := refStuffed(append([]byte(prefix), body...))
	if got, _ := m.received(); len(got) != 1 || !bytes.Equal(got[0], want) {
		t.Error("wrong bytes")
	}
}

// TestSpooledBodyConnectionLost: the server goes away in the middle of
// the body: a temporary failure, never a delivery, and no end-of-data
// line was sent.
func TestSpooledBodyConnectionLost(t *testing.T) {
	n := newNet(t)
	q := openQueue(t, t.TempDir())
	m := startRaw(t, rawOpts{slow: true, dropAfter: 100 << 10})
	tr := smarthost(t, n, m, "none")
	env, b := spoolMsg(t, q, bigBody(4<<20), "")
	out := deliverSpooled(t, tr, env, b)
	if out.State != queue.Pending || !strings.HasPrefix(out.Status, "4.") {
		t.Fatalf("%+v", out)
	}
	if got, _ := m.received(); len(got) != 0 {
		t.Errorf("server completed %d messages", len(got))
	}
}

// TestSpooledBodyFromOlderQueue: a message spooled before the queue
// recorded the DATA form (flags byte zero in the file header) goes
// through the dot-stuffing writer, and arrives exactly right.
func TestSpooledBodyFromOlderQueue(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir)
	body := bigBody(200 << 10)
	env, _ := spoolMsg(t, q, body, "")
	q.Close()
	// As an older posthorn wrote it: byte 20 of the header zero, the
	// header checksum (CRC-32C of bytes 0..27) recomputed. The message is
	// the only file in msg/ (a slot file, or one named by its ID).
	files, _ := filepath.Glob(filepath.Join(dir, "msg", "*"))
	if len(files) != 1 {
		t.Fatalf("msg/ holds %v", files)
	}
	p := files[0]
	f, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if f[20] != 1 {
		t.Fatalf("header flags %#x: the queue did not mark the body", f[20])
	}
	f[20] = 0
	sum := crc32.Checksum(f[:28], crc32.MakeTable(crc32.Castagnoli))
	f[28], f[29], f[30], f[31] = byte(sum), byte(sum>>8), byte(sum>>16), byte(sum>>24)
	if err := os.WriteFile(p, f, 0o600); err != nil {
		t.Fatal(err)
	}
	q = openQueue(t, dir)
	env, err = q.Get(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	n := newNet(t)
	m := startRaw(t, rawOpts{})
	before := spooledSends.Load()
	if out := deliverSpooled(t, smarthost(t, n, m, "none"), env, func() (io.ReadCloser, error) { return q.Body(env.ID) }); out.State != queue.Delivered {
		t.Fatalf("%+v", out)
	}
	if spooledSends.Load() != before {
		t.Error("a message without the flag went from the spool file")
	}
	if got, _ := m.received(); len(got) != 1 || !bytes.Equal(got[0], refStuffed(body)) {
		t.Error("wrong bytes")
	}
}

// TestRefStuffedMatchesDotWriter: the test's plain reference agrees with
// the dotWriter on the cases of its own test, so comparing with it checks
// both paths against the same thing.
func TestRefStuffedMatchesDotWriter(t *testing.T) {
	for _, in := range []string{"", "a", "a\r", "a\r\n", ".\r\n", "a\n.b\nc", "\n\n.", "a\rb\r\n", "x.\r\n.\r\n", "a\r.b\r\n"} {
		if got, want := string(refStuffed([]byte(in))), string(stuffed(t, []byte(in), []int{3}, 16)); got != want {
			t.Errorf("%q: reference %q, dotWriter %q", in, got, want)
		}
	}
}

// BenchmarkSpooledDelivery: one pipelined delivery of a spooled body in
// DATA form over loopback, from the spool file (sendfile) or through the
// dot-stuffing writer (the body wrapped so it is not the queue's reader);
// reports the process CPU per delivery (the discarding server included,
// the same for both).
func BenchmarkSpooledDelivery(b *testing.B) {
	for _, size := range []int{100 << 10, 1 << 20} {
		for _, mode := range []string{"sendfile", "copy"} {
			b.Run(fmt.Sprintf("%dKB/%s", size>>10, mode), func(b *testing.B) {
				benchDelivery(b, size, mode == "sendfile")
			})
		}
	}
}

func benchDelivery(b *testing.B, size int, direct bool) {
	q, err := queue.Open(queue.Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	body := bigBody(size)
	env := &queue.Envelope{From: "a@example.test", Recipients: []*queue.Recipient{{Addr: "x@dest.test"}}}
	if _, err := q.Enqueue(env, bytes.NewReader(body)); err != nil {
		b.Fatal(err)
	}
	open := func() (io.ReadCloser, error) {
		rc, err := q.Body(env.ID)
		if err != nil || direct {
			return rc, err
		}
		return struct {
			io.Reader
			io.Closer
		}{rc, rc}, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	m := &rawMTA{ln: ln, opts: rawOpts{discard: true}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); m.serve(c) }()
		}
	}()
	defer ln.Close()
	cfg, err := conf.Parse("bench.toml", []byte(fmt.Sprintf(`
hostname = "out.example.test"
[outbound]
tls_level = "none"
connection_reuse_time = "10s"
[[transport]]
domain = "*"
kind = "smarthost"
host = "127.0.0.1:%d"
tls_level = "none"
`, ln.Addr().(*net.TCPAddr).Port)))
	if err != nil {
		b.Fatal(err)
	}
	tr, err := New(cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	ctx := context.Background()
	before := spooledSends.Load()
	cpu0 := processCPU()
	b.ResetTimer()
	for range b.N {
		if out := tr.Deliver(ctx, env, []int{0}, open)[0]; out.State != queue.Delivered {
			b.Fatal(out)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
	if used := spooledSends.Load() > before; used != direct {
		b.Fatalf("sent from the spool file: %v", used)
	}
}

// processCPU is the user+system CPU time of this process in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// sealedOutput is body in a sealed memory file, as the daemon keeps an
// output a plugin passed that way (its offset at the end, as the plugin
// left it).
func sealedOutput(t *testing.T, body []byte) delivery.Body {
	t.Helper()
	fd, err := unix.MemfdCreate("output", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "output")
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(body); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		t.Fatal(err)
	}
	return delivery.SealedBody(f, int64(len(body)))
}
