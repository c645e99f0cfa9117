package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/posthorn/posthorn/testbed/ca"
)

// sink is a go-smtp backend that records Message-IDs.
type sink struct {
	mu       sync.Mutex
	ids      map[string]int
	sizes    []int
	sessions int
	rejectTo string // RCPT to this address gets 550
	failData bool
}

func (b *sink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.mu.Lock()
	b.sessions++
	b.mu.Unlock()
	return &sinkSession{b: b}, nil
}

type sinkSession struct {
	b     *sink
	rcpts int
}

func (s *sinkSession) Reset()        { s.rcpts = 0 }
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(string, *smtp.MailOptions) error {
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if to == s.b.rejectTo {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
	}
	s.rcpts++
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.b.failData {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
	}
	m, err := mail.ReadMessage(strings.NewReader(string(data)))
	if err != nil {
		return err
	}
	s.b.mu.Lock()
	s.b.ids[m.Header.Get("Message-ID")]++
	s.b.sizes = append(s.b.sizes, len(data))
	s.b.mu.Unlock()
	return nil
}

func startSink(t *testing.T, cert *tls.Certificate) (*sink, string) {
	t.Helper()
	b := &sink{ids: map[string]int{}}
	s := smtp.NewServer(b)
	s.Domain = "sink.test"
	s.AllowInsecureAuth = true
	if cert != nil {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return b, ln.Addr().String()
}

func TestRun(t *testing.T) {
	b, addr := startSink(t, nil)
	res, err := Run(context.Background(), Config{Addr: addr, N: 200, Concurrency: 8, SizeKB: 4,
		To: []string{"a@sink.test", "b@sink.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Sent != 200 || res.Failed != 0 || len(res.MessageIDs) != 200 || res.Rate <= 0 {
		t.Fatalf("%+v", res)
	}
	if res.P50 <= 0 || res.P50 > res.P90 || res.P90 > res.P99 || res.P99 > res.Max {
		t.Fatalf("latencies %v %v %v %v", res.P50, res.P90, res.P99, res.Max)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ids) != 200 || b.sessions != 8 {
		t.Fatalf("server saw %d ids in %d sessions", len(b.ids), b.sessions)
	}
	for _, id := range res.MessageIDs {
		if b.ids[id] != 1 || !strings.HasPrefix(id, "<loadgen-"+res.RunID+"-") || !strings.HasSuffix(id, "@posthorn.test>") {
			t.Fatalf("id %s seen %d times", id, b.ids[id])
		}
	}
	for _, n := range b.sizes {
		if n < 4096 || n > 4096+600 {
			t.Fatalf("size %d", n)
		}
	}
}

// TestOnePerConnection: every message comes in its own session.
func TestOnePerConnection(t *testing.T) {
	b, addr := startSink(t, nil)
	res, err := Run(context.Background(), Config{Addr: addr, N: 50, Concurrency: 4, SizeKB: 1,
		To: []string{"a@sink.test"}, OnePerConnection: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 50 || res.Failed != 0 {
		t.Fatalf("%+v", res)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ids) != 50 || b.sessions != 50 {
		t.Fatalf("server saw %d ids in %d sessions; want 50 in 50", len(b.ids), b.sessions)
	}
}

func TestSTARTTLS(t *testing.T) {
	c, err := ca.New("loadgen test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	b, addr := startSink(t, &cert)
	res, err := Run(context.Background(), Config{Addr: addr, N: 20, Concurrency: 2, STARTTLS: true,
		TLSConfig: &tls.Config{RootCAs: c.Pool()}, To: []string{"a@sink.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 20 || len(b.ids) != 20 {
		t.Fatalf("%+v", res)
	}
	// A server without STARTTLS fails every message.
	_, plain := startSink(t, nil)
	res, err = Run(context.Background(), Config{Addr: plain, N: 3, STARTTLS: true, To: []string{"a@sink.test"}})
	if err == nil || res.Failed != 3 || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestRejections(t *testing.T) {
	b, addr := startSink(t, nil)
	b.rejectTo = "bad@sink.test"
	res, err := Run(context.Background(), Config{Addr: addr, N: 10, Concurrency: 2, To: []string{"bad@sink.test", "good@sink.test"}})
	if err != nil || res.Sent != 10 {
		t.Fatalf("partial recipients: %v %+v", err, res)
	}
	res, err = Run(context.Background(), Config{Addr: addr, N: 10, Concurrency: 2, To: []string{"bad@sink.test"}})
	if err == nil || res.Failed != 10 || res.Sent != 0 {
		t.Fatalf("all refused: %v %+v", err, res)
	}
	b.mu.Lock()
	b.rejectTo = ""
	b.failData = true
	b.mu.Unlock()
	res, err = Run(context.Background(), Config{Addr: addr, N: 5, To: []string{"a@sink.test"}})
	if err == nil || res.Failed != 5 || !strings.Contains(res.Errors[0], "451") {
		t.Fatalf("data refused: %v %+v", err, res)
	}
}

// TestNoPipelining runs against a minimal server that does not offer
// PIPELINING and checks the commands come one at a time.
func TestNoPipelining(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var got []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		c.Write([]byte("220 x\r\n"))
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if r.Buffered() > 0 {
				got = append(got, "PIPELINED "+line)
			}
			line = strings.TrimSpace(line)
			got = append(got, line)
			switch strings.Fields(line)[0] {
			case "EHLO":
				c.Write([]byte("250-x\r\n250 8BITMIME\r\n"))
			case "DATA":
				c.Write([]byte("354 go\r\n"))
				for {
					l, err := r.ReadString('\n')
					if err != nil || l == ".\r\n" {
						break
					}
				}
				c.Write([]byte("250 ok\r\n"))
			case "QUIT":
				c.Write([]byte("221 bye\r\n"))
				return
			default:
				c.Write([]byte("250 ok\r\n"))
			}
		}
	}()
	res, err := Run(context.Background(), Config{Addr: ln.Addr().String(), N: 2, To: []string{"a@x"}})
	if err != nil || res.Sent != 2 {
		t.Fatalf("%v %+v", err, res)
	}
	<-done
	want := "EHLO loadgen.posthorn.test|MAIL FROM:<loadgen@posthorn.test>|RCPT TO:<a@x>|DATA|RSET|MAIL FROM:<loadgen@posthorn.test>|RCPT TO:<a@x>|DATA|QUIT"
	if strings.Join(got, "|") != want {
		t.Fatalf("got %v", got)
	}
}

func TestCancel(t *testing.T) {
	// A server that greets and then never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("220 x\r\n"))
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = Run(ctx, Config{Addr: ln.Addr().String(), N: 5, Concurrency: 2, To: []string{"a@x"}})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 5*time.Second {
		t.Fatalf("%v after %v", err, time.Since(t0))
	}
}

// TestRate: a paced run of N messages at rate R cannot end before the
// schedule's last slot, (N-1)/R after the start, whatever the sessions
// and the server do (a lower bound only: a loaded machine may be
// slower, never faster).
func TestRate(t *testing.T) {
	b, addr := startSink(t, nil)
	for _, one := range []bool{false, true} {
		const n, rate = 40, 200.0
		res, err := Run(context.Background(), Config{Addr: addr, N: n, Concurrency: 4, SizeKB: 1,
			To: []string{"a@sink.test"}, OnePerConnection: one, Rate: rate})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(res)
		if res.Sent != n || res.Failed != 0 {
			t.Fatalf("%+v", res)
		}
		if min := time.Duration(float64(n-1) / rate * float64(time.Second)); res.Duration < min {
			t.Fatalf("one per connection %v: %d messages at %v/s in %v, want at least %v", one, n, rate, res.Duration, min)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ids) != 80 {
		t.Fatalf("server saw %d ids", len(b.ids))
	}
}

// TestRateCancel: a run waiting for its next slot ends with its context,
// and a bad rate is refused.
func TestRateCancel(t *testing.T) {
	_, addr := startSink(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	t0 := time.Now()
	// Slots at 0, 2 s, 4 s, ...: at most the first message goes.
	res, err := Run(ctx, Config{Addr: addr, N: 100, Concurrency: 2, To: []string{"a@sink.test"}, Rate: 0.5})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 30*time.Second {
		t.Fatalf("%v after %v", err, time.Since(t0))
	}
	if res.Sent > 1 {
		t.Fatalf("sent %d at 0.5/s in %v", res.Sent, time.Since(t0))
	}
	for _, r := range []float64{-1, math.NaN(), math.Inf(1)} {
		if _, err := Run(context.Background(), Config{Addr: addr, To: []string{"a@sink.test"}, Rate: r}); err == nil {
			t.Fatalf("rate %v accepted", r)
		}
	}
}
