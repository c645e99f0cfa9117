package smtpd

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/queue"
)

// discardAcceptor reads the message to its end and queues nothing: the
// benchmark measures the inbound path up to the queue.
type discardAcceptor struct{}

func (discardAcceptor) NewID() string { return "BENCH" }
func (discardAcceptor) Accept(_ Meta, _ *queue.Envelope, body io.Reader) (string, error) {
	buf := make([]byte, 32<<10)
	_, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, body, buf)
	return "BENCH", err
}

// benchInbound sends b.N messages of about size bytes (76-character lines,
// already dot-stuffed, as a client sends them) over one loopback session
// to a real listener (go-smtp's DATA reader, our checkedReader); issue 19.
func benchInbound(b *testing.B, size int) {
	cfg := &conf.Config{Domains: []conf.Domain{{Name: "example.test", Mailboxes: []string{"postmaster"}}}}
	l, err := Listen(Config{Kind: MX, Address: "127.0.0.1:0", Hostname: "t.test",
		Limits: conf.SMTP{MaxMessageSize: conf.Size(64 << 20), MaxRecipients: 10, MaxSessions: 10,
			MaxSessionsPerIP: 10, CommandTimeout: conf.Duration(time.Minute), DataTimeout: conf.Duration(time.Minute)},
		Router: router.New(cfg, nil), Acceptor: discardAcceptor{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	go l.Serve()
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	tp := textproto.NewReader(bufio.NewReader(c))
	expect := func(code int) {
		if got, msg, err := tp.ReadResponse(code); err != nil {
			b.Fatalf("want %d, got %d %s %v", code, got, msg, err)
		}
	}
	expect(220)
	io.WriteString(c, "EHLO bench.example\r\n")
	expect(250)

	var msg bytes.Buffer
	msg.WriteString("Subject: benchmark\r\n\r\n")
	raw := make([]byte, 38)
	for i := 0; msg.Len() < size; i++ {
		rand.Read(raw)
		if i%10 == 0 {
			msg.WriteString("..") // a stuffed dot
		}
		msg.WriteString(strings.ToUpper(hex.EncodeToString(raw)))
		msg.WriteString("\r\n")
	}
	msg.WriteString(".\r\n")
	env := []byte("MAIL FROM:<a@b.example>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n")
	b.SetBytes(int64(msg.Len()))
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		c.Write(env)
		expect(250)
		expect(250)
		expect(354)
		if _, err := c.Write(msg.Bytes()); err != nil {
			b.Fatal(err)
		}
		expect(250)
	}
	// CPU of the whole process (server and the thin client) per message:
	// less at the mercy of other load than the wall clock.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkInboundDATA10KB(b *testing.B)  { benchInbound(b, 10<<10) }
func BenchmarkInboundDATA100KB(b *testing.B) { benchInbound(b, 100<<10) }
func BenchmarkInboundDATA1MB(b *testing.B)   { benchInbound(b, 1<<20) }
