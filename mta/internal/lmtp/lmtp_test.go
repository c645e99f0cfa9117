package lmtp

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// store is the LMTP server side: it records what arrives and answers per
// recipient by local part.
type store struct {
	mu       sync.Mutex
	helo     []string
	from     []string
	rcpts    [][]string
	data     []string
	mailErr  error
	utf8     []bool
	eightBit []bool
}

type session struct {
	s     *store
	conn  *smtp.Conn
	from  string
	rcpts []string
}

func (s *store) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: s, conn: c}, nil
}

func (s *session) Reset()        { s.from, s.rcpts = "", nil }
func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.s.mu.Lock()
	defer s.s.mu.Unlock()
	if s.s.mailErr != nil {
		return s.s.mailErr
	}
	s.from = from
	s.s.helo = append(s.s.helo, s.conn.Hostname())
	s.s.utf8 = append(s.s.utf8, opts.UTF8)
	s.s.eightBit = append(s.s.eightBit, opts.Body == smtp.Body8BitMIME)
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "nouser@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *session) Data(r io.Reader) error { return errors.New("not used") }

func (s *session) LMTPData(r io.Reader, st smtp.StatusCollector) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.s.mu.Lock()
	s.s.from = append(s.s.from, s.from)
	s.s.rcpts = append(s.s.rcpts, append([]string(nil), s.rcpts...))
	s.s.data = append(s.s.data, string(b))
	s.s.mu.Unlock()
	for _, rc := range s.rcpts {
		switch {
		case strings.HasPrefix(rc, "full@"):
			st.SetStatus(rc, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"})
		case strings.HasPrefix(rc, "gone@"):
			st.SetStatus(rc, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 2, 1}, Message: "mailbox disabled"})
		default:
			st.SetStatus(rc, nil)
		}
	}
	return nil
}

func serve(t testing.TB, network, addr string, utf8 bool) (*store, string) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	st := &store{}
	srv := smtp.NewServer(st)
	srv.LMTP = true
	srv.Domain = "store.test"
	srv.EnableSMTPUTF8 = utf8
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return st, network + ":" + l.Addr().String()
}

const testMsg = "From: a@example.org\nSubject: test\n\nline one\n.dotted line\nlast\n"

func checkResults(t *testing.T, res []Result, want []Result) {
	t.Helper()
	if len(res) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(res), len(want), res)
	}
	for i := range want {
		g, w := res[i], want[i]
		if g.Addr != w.Addr || g.Code != w.Code || g.Enhanced != w.Enhanced || g.OK != w.OK || g.Temporary != w.Temporary ||
			!strings.Contains(g.Text, w.Text) {
			t.Errorf("result %d = %+v, want %+v", i, g, w)
		}
	}
}

func testDeliver(t *testing.T, network, addr string) {
	st, target := serve(t, network, addr, false)
	rcpts := []string{"ok@store.test", "full@store.test", "gone@store.test", "nouser@store.test", "ok2@store.test"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := Deliver(ctx, target, "sender@example.org", rcpts, Options{LHLO: "mx.posthorn.test", EightBit: true}, strings.NewReader(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	checkResults(t, res, []Result{
		{Addr: "ok@store.test", Code: 250, Enhanced: "2.0.0", OK: true},
		{Addr: "full@store.test", Code: 452, Enhanced: "4.2.2", Text: "mailbox full", Temporary: true},
		{Addr: "gone@store.test", Code: 550, Enhanced: "5.2.1", Text: "mailbox disabled"},
		{Addr: "nouser@store.test", Code: 550, Enhanced: "5.1.1", Text: "no such user"},
		{Addr: "ok2@store.test", Code: 250, Enhanced: "2.0.0", OK: true},
	})
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.data) != 1 {
		t.Fatalf("server got %d messages", len(st.data))
	}
	want := strings.ReplaceAll(testMsg, "\n", "\r\n")
	if st.data[0] != want {
		t.Errorf("data %q, want %q", st.data[0], want)
	}
	if st.from[0] != "sender@example.org" || st.helo[0] != "mx.posthorn.test" || !st.eightBit[0] {
		t.Errorf("from %q helo %q 8bit %v", st.from[0], st.helo[0], st.eightBit[0])
	}
	if got := strings.Join(st.rcpts[0], ","); got != "ok@store.test,full@store.test,gone@store.test,ok2@store.test" {
		t.Errorf("server rcpts %s", got)
	}
}

func TestDeliverTCP(t *testing.T) { testDeliver(t, "tcp", "127.0.0.1:0") }

func TestDeliverUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "lm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	testDeliver(t, "unix", filepath.Join(dir, "s"))
}

func TestAllRejectedAtRcpt(t *testing.T) {
	st, target := serve(t, "tcp", "127.0.0.1:0", false)
	res, err := Deliver(context.Background(), target, "", []string{"nouser@a", "nouser@b"}, Options{}, strings.NewReader(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.OK || r.Temporary || r.Code != 550 || r.Enhanced != "5.1.1" {
			t.Errorf("%+v", r)
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.data) != 0 {
		t.Fatal("DATA was sent")
	}
}

func TestDuplicateRecipients(t *testing.T) {
	st, target := serve(t, "tcp", "127.0.0.1:0", false)
	res, err := Deliver(context.Background(), target, "s@x", []string{"ok@a", "full@a", "ok@a"}, Options{}, strings.NewReader(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	checkResults(t, res, []Result{
		{Addr: "ok@a", Code: 250, Enhanced: "2.0.0", OK: true},
		{Addr: "full@a", Code: 452, Enhanced: "4.2.2", Temporary: true},
		{Addr: "ok@a", Code: 250, Enhanced: "2.0.0", OK: true},
	})
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.rcpts[0]) != 2 {
		t.Fatalf("server rcpts %v", st.rcpts[0])
	}
}

func TestMailRejected(t *testing.T) {
	st, target := serve(t, "tcp", "127.0.0.1:0", false)
	st.mailErr = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	res, err := Deliver(context.Background(), target, "s@x", []string{"a@x", "b@x"}, Options{}, strings.NewReader(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.OK || !r.Temporary || r.Code != 451 || r.Enhanced != "4.3.0" {
			t.Errorf("%+v", r)
		}
	}
}

func TestSMTPUTF8(t *testing.T) {
	_, target := serve(t, "tcp", "127.0.0.1:0", false)
	res, err := Deliver(context.Background(), target, "s@x", []string{"ok@x"}, Options{SMTPUTF8: true}, strings.NewReader(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	if res[0].OK || res[0].Temporary || res[0].Enhanced != "5.6.7" {
		t.Errorf("without SMTPUTF8: %+v", res[0])
	}

	st, target := serve(t, "tcp", "127.0.0.1:0", true)
	res, err = Deliver(context.Background(), target, "s@x", []string{"ok@x"}, Options{SMTPUTF8: true}, strings.NewReader(testMsg))
	if err != nil || !res[0].OK {
		t.Fatalf("with SMTPUTF8: %+v %v", res, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.utf8[0] {
		t.Error("SMTPUTF8 not sent")
	}
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	res, err := Deliver(context.Background(), "tcp:"+addr, "s@x", []string{"a@x"}, Options{}, strings.NewReader(testMsg))
	if err == nil {
		t.Fatalf("no error: %+v", res)
	}
	if _, err := Deliver(context.Background(), "unix:/nonexistent/lmtp", "s@x", []string{"a@x"}, Options{}, strings.NewReader(testMsg)); err == nil {
		t.Fatal("no error for missing socket")
	}
}

func TestBadTarget(t *testing.T) {
	for _, target := range []string{"tcp:", "unix:", "tcp:nohostport"} {
		if _, err := Deliver(context.Background(), target, "", []string{"a@x"}, Options{}, strings.NewReader("")); err == nil {
			t.Errorf("%q: no error", target)
		}
	}
}

// scripted runs a fake LMTP server that follows script: lines starting
// with "<" are expected from the client (prefix match), others are sent.
// "BODY" swallows the message up to the dot; "CLOSE" hangs up; "HANG"
// stops answering.
func scripted(t *testing.T, script []string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close(); <-finished })
	go func() {
		defer close(finished)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for _, step := range script {
			switch {
			case step == "CLOSE":
				return
			case step == "HANG":
				<-done
				return
			case step == "BODY":
				for {
					line, err := r.ReadString('\n')
					if err != nil || line == ".\r\n" {
						break
					}
				}
			case strings.HasPrefix(step, "<"):
				line, err := r.ReadString('\n')
				if err != nil || !strings.HasPrefix(line, step[1:]) {
					t.Errorf("expected %q, got %q (%v)", step[1:], line, err)
					return
				}
			default:
				io.WriteString(c, step+"\r\n")
			}
		}
	}()
	return "tcp:" + l.Addr().String()
}

func TestConnectionLostAfterPartialData(t *testing.T) {
	target := scripted(t, []string{
		"220 fake LMTP",
		"<LHLO", "250-fake", "250 ENHANCEDSTATUSCODES",
		"<MAIL FROM:<s@x>", "250 2.1.0 ok",
		"<RCPT TO:<a@x>", "250 2.1.5 ok",
		"<RCPT TO:<b@x>", "250 2.1.5 ok",
		"<DATA", "354 go ahead",
		"BODY", "250 2.0.0 <a@x> saved",
		"CLOSE",
	})
	res, err := Deliver(context.Background(), target, "s@x", []string{"a@x", "b@x"}, Options{}, strings.NewReader(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	checkResults(t, res, []Result{
		{Addr: "a@x", Code: 250, Enhanced: "2.0.0", Text: "saved", OK: true},
		{Addr: "b@x", Code: 451, Enhanced: "4.4.2", Text: "connection lost", Temporary: true},
	})
}

func TestConnectionLostBeforeResults(t *testing.T) {
	target := scripted(t, []string{
		"220 fake LMTP",
		"<LHLO", "250-fake", "250 ENHANCEDSTATUSCODES",
		"<MAIL FROM:<s@x>", "250 2.1.0 ok",
		"<RCPT TO:<a@x>", "250 2.1.5 ok",
		"<DATA", "354 go ahead",
		"BODY",
		"CLOSE",
	})
	if res, err := Deliver(context.Background(), target, "s@x", []string{"a@x"}, Options{}, strings.NewReader(testMsg)); err == nil {
		t.Fatalf("no error: %+v", res)
	}
}

func TestGreetingRefused(t *testing.T) {
	target := scripted(t, []string{"554 go away"})
	if res, err := Deliver(context.Background(), target, "s@x", []string{"a@x"}, Options{}, strings.NewReader(testMsg)); err == nil {
		t.Fatalf("no error: %+v", res)
	}
}

func TestContextDeadline(t *testing.T) {
	target := scripted(t, []string{"220 fake LMTP", "<LHLO", "HANG"})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Deliver(ctx, target, "s@x", []string{"a@x"}, Options{}, strings.NewReader(testMsg))
	if err == nil {
		t.Fatal("no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestContextCancel(t *testing.T) {
	target := scripted(t, []string{"220 fake LMTP", "<LHLO", "HANG"})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := Deliver(ctx, target, "s@x", []string{"a@x"}, Options{}, strings.NewReader(testMsg))
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestOptionsTimeout(t *testing.T) {
	target := scripted(t, []string{"220 fake LMTP", "<LHLO", "HANG"})
	start := time.Now()
	_, err := Deliver(context.Background(), target, "s@x", []string{"a@x"}, Options{Timeout: 300 * time.Millisecond}, strings.NewReader(testMsg))
	if err == nil {
		t.Fatal("no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestSplitEnhanced(t *testing.T) {
	for in, want := range map[string][2]string{
		"2.1.5 Ok":      {"2.1.5", "Ok"},
		"Ok":            {"", "Ok"},
		"1.2.3 x":       {"", "1.2.3 x"},
		"5.7.10 no TLS": {"5.7.10", "no TLS"},
	} {
		e, tx := splitEnhanced(in)
		if e != want[0] || tx != want[1] {
			t.Errorf("%q: %q %q", in, e, tx)
		}
	}
}

// BenchmarkDeliver1MB: one LMTP delivery of a 1 MB message (every tenth
// line starting with a dot) over loopback, client and server in this
// process; cpu-µs/op is the process's CPU per delivery (issue 19: the
// client's dot-stuffing).
func BenchmarkDeliver1MB(b *testing.B) {
	st, target := serve(b, "tcp", "127.0.0.1:0", false)
	var msg strings.Builder
	msg.WriteString("Subject: benchmark\r\n\r\n")
	for i := 0; msg.Len() < 1<<20; i++ {
		if i%10 == 0 {
			msg.WriteByte('.')
		}
		msg.WriteString(strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", 3)[:76] + "\r\n")
	}
	body := msg.String()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		res, err := Deliver(context.Background(), target, "a@example.org", []string{"ok@store.test"},
			Options{LHLO: "bench.test", Timeout: time.Minute}, strings.NewReader(body))
		if err != nil || len(res) != 1 || !res[0].OK {
			b.Fatal(res, err)
		}
		st.mu.Lock()
		st.data = nil
		st.mu.Unlock()
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
