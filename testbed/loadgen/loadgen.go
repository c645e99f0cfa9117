// Package loadgen is an SMTP load generator for benchmarks: C concurrent
// sessions, each reusing its connection for many transactions (RSET, MAIL,
// RCPT, DATA — pipelined per RFC 2920 when the server offers PIPELINING)
// or, with OnePerConnection, sending one message per connection as
// Postfix's smtp-source does by default,
// sending N messages in total of about S KB each, every one with a unique
// Message-ID (RFC 5322) of the form <loadgen-RUNID-SEQ@posthorn.test>,
// as fast as the server takes them or, with Config.Rate, paced at an
// offered rate (messages per second, spread over the sessions).
//
// For each message it measures the time from the end of DATA (the final
// "<CRLF>.<CRLF>" written, RFC 5321 section 4.1.1.4) to the server's reply,
// which for a durable MTA is the time to make the message safe on disk.
// STARTTLS (RFC 3207) is optional.
package loadgen

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a run.
type Config struct {
	Addr        string // host:port of the SMTP server
	N           int    // messages in total (default 1)
	Concurrency int    // concurrent sessions (default 1)
	SizeKB      int    // approximate message size in KiB (default 1)
	From        string // envelope sender (default "loadgen@posthorn.test")
	To          []string
	Helo        string // default "loadgen.posthorn.test"
	STARTTLS    bool
	// TLSConfig for STARTTLS; nil means InsecureSkipVerify (a benchmark,
	// not a security test).
	TLSConfig *tls.Config
	// Timeout bounds each command/reply (default 60s).
	Timeout time.Duration
	// RunID is put in Message-IDs; a random one if empty.
	RunID string
	// OnePerConnection ends each session with QUIT after one message
	// (connect, greeting, EHLO, MAIL, RCPT, DATA, QUIT) instead of
	// reusing it for the next.
	OnePerConnection bool
	// Rate, if > 0, paces the run: message k (1-based) starts, over all
	// sessions together, no earlier than (k-1)/Rate seconds after the
	// start (an open-loop schedule: a server that falls behind gets the
	// messages it missed as soon as a session is free, Concurrency still
	// bounds how many are in flight). 0 sends as fast as the sessions go.
	Rate float64
}

// Result is the outcome of a run.
type Result struct {
	RunID    string
	Sent     int // messages accepted (2xx after DATA)
	Failed   int // messages not accepted (rejected or connection trouble)
	Duration time.Duration
	Rate     float64 // accepted messages per second
	// Latency from end of DATA to the reply, over accepted messages.
	P50, P90, P99, Max time.Duration
	MessageIDs         []string // of the accepted messages, with angle brackets
	Errors             []string // the first few distinct errors
}

func (r Result) String() string {
	return fmt.Sprintf("run %s: sent %d, failed %d in %v: %.1f msg/s; latency p50 %v p90 %v p99 %v max %v",
		r.RunID, r.Sent, r.Failed, r.Duration.Round(time.Millisecond), r.Rate,
		r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond))
}

// MessageID returns the Message-ID of message seq (1-based) of a run.
func MessageID(runID string, seq int) string {
	return "<loadgen-" + runID + "-" + strconv.Itoa(seq) + "@posthorn.test>"
}

const maxErrors = 10

type run struct {
	cfg   Config
	body  []byte // filler body, CRLF lines, no leading dots
	next  atomic.Int64
	start time.Time // of the run; with cfg.Rate the schedule's origin

	mu        sync.Mutex
	sent      int
	failed    int
	latencies []time.Duration
	ids       []string
	errs      []string
}

// Run sends cfg.N messages and reports. It returns an error for a bad
// Config, when no message at all was accepted, or when ctx ended early
// (the Result then holds what happened until then).
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Addr == "" {
		return Result{}, errors.New("loadgen: no address")
	}
	if len(cfg.To) == 0 {
		return Result{}, errors.New("loadgen: no recipients")
	}
	if cfg.N <= 0 {
		cfg.N = 1
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	cfg.Concurrency = min(cfg.Concurrency, cfg.N)
	if cfg.SizeKB <= 0 {
		cfg.SizeKB = 1
	}
	if cfg.From == "" {
		cfg.From = "loadgen@posthorn.test"
	}
	if cfg.Helo == "" {
		cfg.Helo = "loadgen.posthorn.test"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0) {
		return Result{}, fmt.Errorf("loadgen: bad rate %v", cfg.Rate)
	}
	if cfg.RunID == "" {
		var b [4]byte
		rand.Read(b[:])
		cfg.RunID = hex.EncodeToString(b[:])
	}
	start := time.Now()
	r := &run{cfg: cfg, body: filler(cfg.SizeKB * 1024), start: start}
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.worker(ctx)
		}()
	}
	wg.Wait()
	res := r.result(time.Since(start))
	switch {
	case ctx.Err() != nil:
		return res, ctx.Err()
	case res.Sent == 0:
		return res, fmt.Errorf("loadgen: no message accepted: %s", strings.Join(res.Errors, "; "))
	}
	return res, nil
}

func (r *run) result(d time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := Result{RunID: r.cfg.RunID, Sent: r.sent, Failed: r.failed, Duration: d,
		MessageIDs: r.ids, Errors: r.errs}
	if d > 0 {
		res.Rate = float64(r.sent) / d.Seconds()
	}
	if n := len(r.latencies); n > 0 {
		l := slices.Clone(r.latencies)
		slices.Sort(l)
		pct := func(p int) time.Duration { // nearest rank
			i := (p*n + 99) / 100
			return l[max(0, min(n, i)-1)]
		}
		res.P50, res.P90, res.P99, res.Max = pct(50), pct(90), pct(99), l[n-1]
	}
	return res
}

func (r *run) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed++
	if err == nil || len(r.errs) >= maxErrors {
		return
	}
	s := err.Error()
	if !slices.Contains(r.errs, s) {
		r.errs = append(r.errs, s)
	}
}

func (r *run) ok(id string, lat time.Duration) {
	r.mu.Lock()
	r.sent++
	r.latencies = append(r.latencies, lat)
	r.ids = append(r.ids, id)
	r.mu.Unlock()
}

// take returns the next message number (1-based), or 0 when done.
func (r *run) take() int {
	n := r.next.Add(1)
	if n > int64(r.cfg.N) {
		return 0
	}
	return int(n)
}

// pace waits until message seq's slot in the schedule of cfg.Rate; false
// when ctx ended first.
func (r *run) pace(ctx context.Context, seq int) bool {
	if r.cfg.Rate <= 0 {
		return true
	}
	at := r.start.Add(time.Duration(float64(seq-1) / r.cfg.Rate * float64(time.Second)))
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *run) worker(ctx context.Context) {
	var s *session
	defer func() {
		if s != nil {
			s.quit()
		}
	}()
	for ctx.Err() == nil {
		seq := r.take()
		if seq == 0 || !r.pace(ctx, seq) {
			return
		}
		if s == nil {
			var err error
			s, err = r.dial(ctx)
			if err != nil {
				r.fail(err)
				continue
			}
		}
		lat, err := s.send(r, seq)
		switch {
		case err == nil:
			r.ok(MessageID(r.cfg.RunID, seq), lat)
			if r.cfg.OnePerConnection {
				s.quit()
				s = nil
			}
		case errors.As(err, new(*replyError)):
			r.fail(err) // rejected: the session goes on
		default:
			r.fail(err) // connection trouble: start over
			s.close()
			s = nil
		}
	}
}

// replyError is a negative SMTP reply.
type replyError struct {
	cmd  string
	code int
	text string
}

func (e *replyError) Error() string {
	return fmt.Sprintf("%s: %d %s", e.cmd, e.code, e.text)
}

type session struct {
	cfg       *Config
	conn      net.Conn
	r         *bufio.Reader
	w         *bufio.Writer
	pipelined bool
	dirty     bool // not the first transaction: RSET first (pipelined)
	stop      func() bool
}

func (r *run) dial(ctx context.Context) (*session, error) {
	d := net.Dialer{Timeout: r.cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", r.cfg.Addr)
	if err != nil {
		return nil, err
	}
	s := &session{cfg: &r.cfg}
	s.setConn(conn)
	s.stop = context.AfterFunc(ctx, func() { conn.Close() })
	if err := s.expect("greeting", 220); err != nil {
		s.close()
		return nil, err
	}
	ext, err := s.ehlo()
	if err != nil {
		s.close()
		return nil, err
	}
	if r.cfg.STARTTLS {
		if _, ok := ext["STARTTLS"]; !ok {
			s.close()
			return nil, errors.New("loadgen: server does not offer STARTTLS")
		}
		if err := s.cmd("STARTTLS", 220); err != nil {
			s.close()
			return nil, err
		}
		cfg := r.cfg.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{InsecureSkipVerify: true}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(r.cfg.Addr)
		}
		tc := tls.Client(conn, cfg)
		tc.SetDeadline(time.Now().Add(r.cfg.Timeout))
		if err := tc.Handshake(); err != nil {
			s.close()
			return nil, fmt.Errorf("loadgen: TLS handshake: %w", err)
		}
		s.setConn(tc)
		if ext, err = s.ehlo(); err != nil {
			s.close()
			return nil, err
		}
	}
	_, s.pipelined = ext["PIPELINING"]
	return s, nil
}

func (s *session) setConn(c net.Conn) {
	s.conn = c
	s.r = bufio.NewReader(c)
	s.w = bufio.NewWriterSize(c, 64<<10)
}

func (s *session) close() {
	if s.stop != nil {
		s.stop()
	}
	s.conn.Close()
}

func (s *session) quit() {
	s.conn.SetDeadline(time.Now().Add(2 * time.Second))
	s.w.WriteString("QUIT\r\n")
	if s.w.Flush() == nil {
		s.readReply()
	}
	s.close()
}

// readReply reads one (possibly multi-line) reply.
func (s *session) readReply() (int, []string, error) {
	s.conn.SetReadDeadline(time.Now().Add(s.cfg.Timeout))
	var lines []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return 0, nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, nil, fmt.Errorf("loadgen: bad reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, nil, fmt.Errorf("loadgen: bad reply line %q", line)
		}
		lines = append(lines, strings.TrimSpace(line[min(4, len(line)):]))
		if len(line) == 3 || line[3] != '-' {
			return code, lines, nil
		}
	}
}

func (s *session) expect(what string, want int) error {
	code, lines, err := s.readReply()
	if err != nil {
		return fmt.Errorf("loadgen: %s: %w", what, err)
	}
	if code != want {
		return &replyError{cmd: what, code: code, text: strings.Join(lines, " ")}
	}
	return nil
}

func (s *session) flush() error {
	s.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	return s.w.Flush()
}

func (s *session) cmd(line string, want int) error {
	s.w.WriteString(line + "\r\n")
	if err := s.flush(); err != nil {
		return err
	}
	return s.expect(strings.Fields(line)[0], want)
}

func (s *session) ehlo() (map[string]string, error) {
	s.w.WriteString("EHLO " + s.cfg.Helo + "\r\n")
	if err := s.flush(); err != nil {
		return nil, err
	}
	code, lines, err := s.readReply()
	if err != nil {
		return nil, err
	}
	if code != 250 {
		return nil, &replyError{cmd: "EHLO", code: code, text: strings.Join(lines, " ")}
	}
	ext := map[string]string{}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		ext[strings.ToUpper(k)] = v
	}
	return ext, nil
}

// send runs one transaction; a *replyError means the session is usable.
func (s *session) send(r *run, seq int) (time.Duration, error) {
	cmds := make([]string, 0, len(r.cfg.To)+3)
	if s.dirty {
		cmds = append(cmds, "RSET")
	}
	cmds = append(cmds, "MAIL FROM:<"+r.cfg.From+">")
	for _, to := range r.cfg.To {
		cmds = append(cmds, "RCPT TO:<"+to+">")
	}
	cmds = append(cmds, "DATA")
	s.dirty = true

	// A message counts as accepted when the server takes it for at least
	// one recipient; refused recipients alone do not make it fail.
	var rejected error
	check := func(cmd string, code int, lines []string) {
		verb := strings.Fields(cmd)[0]
		want := 250
		if verb == "DATA" {
			want = 354
		}
		if code != want && rejected == nil && verb != "RCPT" {
			rejected = &replyError{cmd: verb, code: code, text: strings.Join(lines, " ")}
		}
	}
	var dataCode int
	if s.pipelined {
		for _, c := range cmds {
			s.w.WriteString(c + "\r\n")
		}
		if err := s.flush(); err != nil {
			return 0, err
		}
		for _, c := range cmds {
			code, lines, err := s.readReply()
			if err != nil {
				return 0, err
			}
			check(c, code, lines)
			dataCode = code
		}
	} else {
		for _, c := range cmds {
			s.w.WriteString(c + "\r\n")
			if err := s.flush(); err != nil {
				return 0, err
			}
			code, lines, err := s.readReply()
			if err != nil {
				return 0, err
			}
			check(c, code, lines)
			dataCode = code
			if c != "RSET" && code/100 != 2 && code != 354 && !strings.HasPrefix(c, "RCPT") {
				break
			}
		}
	}
	if dataCode != 354 {
		if rejected == nil {
			rejected = &replyError{cmd: "DATA", code: dataCode, text: "not accepted"}
		}
		return 0, rejected
	}
	// The server wants the message even if some recipients failed.
	s.writeMessage(r, seq)
	s.w.WriteString(".\r\n")
	if err := s.flush(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	code, lines, err := s.readReply()
	lat := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if code/100 != 2 {
		return 0, &replyError{cmd: "end of DATA", code: code, text: strings.Join(lines, " ")}
	}
	if rejected != nil {
		return 0, rejected
	}
	return lat, nil
}

func (s *session) writeMessage(r *run, seq int) {
	w := s.w
	w.WriteString("From: <" + r.cfg.From + ">\r\n")
	w.WriteString("To: <" + r.cfg.To[0] + ">\r\n")
	w.WriteString("Subject: loadgen " + r.cfg.RunID + " " + strconv.Itoa(seq) + "\r\n")
	w.WriteString("Date: " + time.Now().Format(time.RFC1123Z) + "\r\n")
	w.WriteString("Message-ID: " + MessageID(r.cfg.RunID, seq) + "\r\n")
	w.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	w.Write(r.body)
}

// filler returns about n bytes of text in 78-byte CRLF lines.
func filler(n int) []byte {
	const line = "The quick brown fox jumps over the lazy dog. Posthorn loadgen filler text...\r\n"
	b := make([]byte, 0, n+len(line))
	for len(b) < n {
		b = append(b, line...)
	}
	return b
}
