//go:build unix

package hostside_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
	"github.com/posthorn/posthorn/sdk/plugintest"
)

const testPlugin = "github.com/posthorn/posthorn/sdk/internal/testplugin"

// binPath is the test plugin, built once in TestMain.
var binPath string

func binary(testing.TB) string { return binPath }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ptb")
	if err != nil {
		panic(err)
	}
	binPath, err = plugintest.BuildIn(dir, testPlugin)
	if err != nil {
		os.RemoveAll(dir)
		panic(err)
	}
	code := m.Run()
	hostside.KillAll()
	os.RemoveAll(dir)
	os.Exit(code)
}

type fixture struct {
	c    *hostside.Client
	host *plugintest.RecordingHost
	info *hostside.Info
}

func start(t testing.TB, opts hostside.Options) *fixture {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = plugintest.TestLogger(t, slog.LevelWarn)
	}
	if opts.Name == "" {
		opts.Name = "testplugin"
	}
	c := plugintest.Start(t, binary(t), opts)
	ctx := context.Background()
	info, err := c.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	host := &plugintest.RecordingHost{}
	if err := c.Configure(ctx, nil, t.TempDir(), host); err != nil {
		t.Fatal(err)
	}
	return &fixture{c: c, host: host, info: info}
}

func env(from string, rcpts ...string) *sdk.Envelope {
	e := &sdk.Envelope{ID: "Q1", MailFrom: from + "@example.test"}
	for _, r := range rcpts {
		e.Recipients = append(e.Recipients, sdk.Recipient{Address: r})
	}
	if len(rcpts) == 0 {
		e.Recipients = []sdk.Recipient{{Address: "rcpt@example.test"}}
	}
	return e
}

func sum(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func TestConformanceOfTestPlugin(t *testing.T) {
	plugintest.Run(t, binary(t), plugintest.Options{LargeMessageMB: 8})
}

func TestDescribe(t *testing.T) {
	f := start(t, hostside.Options{})
	want := []sdk.Hook{sdk.HookInbound, sdk.HookOutbound, sdk.HookEvents}
	if f.info.Name != "testplugin" || f.info.Version != "0.1.0" || len(f.info.Hooks) != 3 || f.info.ProtocolMinor != sdk.ProtocolMinor {
		t.Fatalf("info %+v, want hooks %v", f.info, want)
	}
	for _, h := range want {
		if !f.info.Has(h) {
			t.Errorf("missing hook %s", h)
		}
	}
}

// TestEnvelopeRoundTrip checks that the host-side and plugin-side
// converters agree on every field.
func TestEnvelopeRoundTrip(t *testing.T) {
	f := start(t, hostside.Options{})
	e := &sdk.Envelope{
		ID: "Q42", MailFrom: "envelope@example.test",
		Recipients: []sdk.Recipient{{Address: "a@example.test"}, {Address: "b@example.test"}},
		ClientAddr: "192.0.2.7:4567", Helo: "mx.example.test", AuthUser: "alice",
		TLS:  &sdk.TLSInfo{Version: "TLS1.3", CipherSuite: "TLS_AES_128_GCM_SHA256", ServerName: "mx.example.test", ClientSubject: "CN=client"},
		Size: 1234, SMTPUTF8: true,
	}
	v, _, err := f.c.Inspect(context.Background(), e, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	var got sdk.Envelope
	if err := json.Unmarshal([]byte(v.Headers[0].Value), &got); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(e)
	b, _ := json.Marshal(&got)
	if !bytes.Equal(a, b) {
		t.Fatalf("plugin saw\n%s\nwant\n%s", b, a)
	}
}

func TestInboundVerdicts(t *testing.T) {
	f := start(t, hostside.Options{})
	ctx := context.Background()
	body := "Subject: x\r\n\r\nhello\r\n"

	v, repl, err := f.c.Inspect(ctx, env("plain"), strings.NewReader(body))
	if err != nil || v.Action != sdk.ActionAccept || repl != nil {
		t.Fatalf("accept: %+v %v %v", v, repl, err)
	}
	v, _, err = f.c.Inspect(ctx, env("reject"), strings.NewReader(body))
	if err != nil || v.Action != sdk.ActionReject || v.Code != 550 || v.EnhancedCode != "5.7.1" || v.Text != "rejected by testplugin" {
		t.Fatalf("reject: %+v %v", v, err)
	}
	v, _, err = f.c.Inspect(ctx, env("count"), strings.NewReader(body))
	if err != nil || v.Action != sdk.ActionAddHeaders || v.Headers[0].Value != strconv.Itoa(len(body)) {
		t.Fatalf("count: %+v %v", v, err)
	}
	// Output on stdout is logged by the host and breaks nothing.
	v, _, err = f.c.Inspect(ctx, env("stdout"), strings.NewReader(body))
	if err != nil || v.Action != sdk.ActionAccept {
		t.Fatalf("stdout: %+v %v", v, err)
	}
	if err := f.c.Ping(); err != nil {
		t.Fatal(err)
	}
}

// TestLarge streams 50 MB through Inbound (REPLACE echo) and Outbound
// (TRANSFORMED echo) and checks the bytes that come back.
func TestLarge(t *testing.T) { bothWays(t, testLarge) }

func testLarge(t *testing.T, chunks bool) {
	if testing.Short() {
		t.Skip("short")
	}
	const size = 50 << 20
	f := start(t, hostside.Options{MaxMessageSize: 64 << 20, NoBodyFiles: chunks})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want, _, _ := sum(plugintest.NewMessage(size))

	v, repl, err := f.c.Inspect(ctx, env("echo"), plugintest.NewMessage(size))
	if err != nil || v.Action != sdk.ActionReplace {
		t.Fatalf("Inspect: %+v %v", v, err)
	}
	got, n, err := sum(repl)
	repl.Close()
	if err != nil || got != want || n != size {
		t.Fatalf("replacement: %d bytes, sum %s, err %v; want %d bytes, %s", n, got, err, size, want)
	}

	res, err := f.c.Transform(ctx, env("echo"), env("echo").Recipients, plugintest.NewMessage(size))
	if err != nil || res.Action != sdk.OutboundTransformed {
		t.Fatalf("Transform: %v", err)
	}
	defer res.Close()
	out, err := res.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, n, err = sum(out.Body)
	if err != nil || got != want || n != size {
		t.Fatalf("output: %d bytes, sum %s, err %v", n, got, err)
	}
	if _, err := res.Next(); err != io.EOF {
		t.Fatalf("after the only output: %v", err)
	}
}

func TestMessageSizeLimits(t *testing.T) {
	f := start(t, hostside.Options{MaxMessageSize: 1 << 20})
	ctx := context.Background()
	_, repl, err := f.c.Inspect(ctx, env("echo"), plugintest.NewMessage(3<<20))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, repl)
	repl.Close()
	if !errors.Is(err, sdk.ErrMessageTooLarge) {
		t.Fatalf("oversized replacement: %v, want ErrMessageTooLarge", err)
	}
	// The plugin is told the host's limit and stops sending too; it still
	// serves.
	if err := f.c.Ping(); err != nil {
		t.Fatal(err)
	}
}

func TestOutbound(t *testing.T) { bothWays(t, testOutbound) }

func testOutbound(t *testing.T, chunks bool) {
	f := start(t, hostside.Options{NoBodyFiles: chunks})
	ctx := context.Background()
	e := env("split", "a@example.test", "no@example.test", "b@example.test")
	answers, err := f.c.CanHandle(ctx, e, e.Recipients)
	if err != nil {
		t.Fatal(err)
	}
	if !answers[0].CanHandle || answers[1].CanHandle || !answers[2].CanHandle {
		t.Fatalf("answers %+v", answers)
	}
	group := []sdk.Recipient{e.Recipients[0], e.Recipients[2]}

	res, err := f.c.Transform(ctx, e, group, strings.NewReader("Subject: s\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := outputs(t, res)
	res.Close()
	if want := splitAB; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("outputs\n%q\nwant\n%q", got, want)
	}

	res, err = f.c.Transform(ctx, env("decline"), group, strings.NewReader("x"))
	if err != nil || res.Action != sdk.OutboundDeclined || res.Reason != "asked to decline" {
		t.Fatalf("decline: %+v %v", res, err)
	}
	if _, err := res.Next(); err != io.EOF {
		t.Fatalf("Next after decline: %v", err)
	}
	res.Close()
}

// fileBody is a body in a file after a header, as the host's queue
// hands it (bodyfile.FileSource: SendTo gives the file itself).
type fileBody struct {
	*io.SectionReader
	f   *os.File
	off int64
}

func (b *fileBody) SendTo(w io.ReaderFrom) (int64, error) {
	if _, err := b.f.Seek(b.off, io.SeekStart); err != nil {
		return 0, err
	}
	return w.ReadFrom(&io.LimitedReader{R: b.f, N: b.Size()})
}

// TestFileSourceBody: a body that is a file (a queued message) reaches
// the plugin byte for byte, copied by the kernel into the body file — or
// read as a stream when bodies travel in chunks.
func TestFileSourceBody(t *testing.T) { bothWays(t, testFileSourceBody) }

func testFileSourceBody(t *testing.T, chunks bool) {
	f := start(t, hostside.Options{NoBodyFiles: chunks})
	body := []byte(strings.Repeat("Subject: s\r\n\r\n", 1) + strings.Repeat("0123456789abcdef\r\n", 20000))
	file, err := os.CreateTemp(t.TempDir(), "q")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	head := "QUEUE HEADER\n"
	if _, err := file.WriteString(head + string(body) + "TRAILER"); err != nil {
		t.Fatal(err)
	}
	src := &fileBody{SectionReader: io.NewSectionReader(file, int64(len(head)), int64(len(body))), f: file, off: int64(len(head))}
	e := env("plain", "a@example.test")
	res, err := f.c.Transform(context.Background(), e, e.Recipients, src)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	out, err := res.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(out.Body)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("the plugin's copy: %d bytes (want %d), %v", len(got), len(body), err)
	}
}

// splitAB is what the test plugin's "split" mode makes of
// "Subject: s\r\n\r\nbody\r\n" for a@ and b@example.test.
var splitAB = []string{
	"a@example.test|To: <a@example.test>\r\nSubject: s\r\n\r\nbody\r\n",
	"b@example.test|To: <b@example.test>\r\nSubject: s\r\n\r\nbody\r\n",
}

// outputs reads every output of res as "rcpt,rcpt|body".
func outputs(t *testing.T, res *hostside.TransformResult) []string {
	t.Helper()
	var got []string
	for {
		out, err := res.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(out.Body)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.Join(out.Recipients, ",")+"|"+string(b))
	}
}

// TestTransformDecide: CanHandle and Transform in one call (protocol
// minor 6) and, with NoDecide, in two as with an older plugin: the same
// answers and outputs either way, bodies as files or in chunks.
func TestTransformDecide(t *testing.T) {
	t.Run("one-call", func(t *testing.T) {
		bothWays(t, func(t *testing.T, chunks bool) { testTransformDecide(t, chunks, false) })
	})
	t.Run("two-calls", func(t *testing.T) {
		bothWays(t, func(t *testing.T, chunks bool) { testTransformDecide(t, chunks, true) })
	})
}

func testTransformDecide(t *testing.T, chunks, noDecide bool) {
	f := start(t, hostside.Options{NoBodyFiles: chunks, NoDecide: noDecide})
	ctx := context.Background()
	answers := func(res *hostside.TransformResult) string {
		var s []string
		for _, a := range res.Answers {
			s = append(s, fmt.Sprintf("%s=%v", a.Recipient, a.CanHandle))
		}
		return strings.Join(s, " ")
	}
	// The plugin transforms for the recipients it can handle only.
	e := env("split", "a@example.test", "no@example.test", "b@example.test")
	res, err := f.c.TransformDecide(ctx, e, e.Recipients, strings.NewReader("Subject: s\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := answers(res), "a@example.test=true no@example.test=false b@example.test=true"; got != want || res.Action != sdk.OutboundTransformed {
		t.Fatalf("answers %q action %v, want %q transformed", got, res.Action, want)
	}
	got := outputs(t, res)
	res.Close()
	if want := splitAB; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("outputs\n%q\nwant\n%q", got, want)
	}

	// None it can handle: declined, with the answers.
	e = env("split", "no@example.test")
	res, err = f.c.TransformDecide(ctx, e, e.Recipients, strings.NewReader("x"))
	if err != nil || res.Action != sdk.OutboundDeclined || answers(res) != "no@example.test=false" {
		t.Fatalf("none: %+v %v", res, err)
	}
	if _, err := res.Next(); err != io.EOF {
		t.Fatalf("Next after decline: %v", err)
	}
	res.Close()

	// Declined after saying yes.
	e = env("decline", "a@example.test", "no@example.test")
	res, err = f.c.TransformDecide(ctx, e, e.Recipients, strings.NewReader("x"))
	if err != nil || res.Action != sdk.OutboundDeclined || res.Reason != "asked to decline" || answers(res) != "a@example.test=true no@example.test=false" {
		t.Fatalf("decline: %+v %v", res, err)
	}
	res.Close()

	// A diversion takes the recipients it said yes to, and only those.
	e = env("divert", "no@example.test", "b@example.test")
	res, err = f.c.TransformDecide(ctx, e, e.Recipients, strings.NewReader("x"))
	if err != nil || res.Action != sdk.OutboundDiverted || answers(res) != "no@example.test=false b@example.test=true" {
		t.Fatalf("divert: %+v %v", res, err)
	}
	res.Close()
	waitFor(t, func() bool { _, _, c := f.host.Snapshot(); return len(c) == 1 })
	if _, _, c := f.host.Snapshot(); c[0].Recipient != "b@example.test" {
		t.Fatalf("confirmation for %q", c[0].Recipient)
	}
}

func TestDivertAndConfirm(t *testing.T) {
	f := start(t, hostside.Options{})
	e := env("divert", "a@example.test", "b@example.test")
	res, err := f.c.Transform(context.Background(), e, e.Recipients, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	res.Close()
	if res.Action != sdk.OutboundDiverted || !res.Pending {
		t.Fatalf("result %+v", res)
	}
	waitFor(t, func() bool { _, _, c := f.host.Snapshot(); return len(c) == 2 })
	_, _, confs := f.host.Snapshot()
	for i, c := range confs {
		if c.QueueID != "Q1" || c.Recipient != e.Recipients[i].Address || c.Outcome != sdk.ConfirmDelivered || c.Reason != "stored" {
			t.Errorf("confirmation %d: %+v", i, c)
		}
	}
}

func TestHostSubmitAndEmit(t *testing.T) {
	f := start(t, hostside.Options{Name: "tp"})
	ctx := context.Background()
	for range 2 { // the same idempotency key twice: one message
		v, _, err := f.c.Inspect(ctx, env("submit"), strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		if v.Headers[0] != (sdk.Header{Name: "X-Queue-Id", Value: "PTQ0001"}) {
			t.Fatalf("verdict %+v", v)
		}
	}
	subs, _, _ := f.host.Snapshot()
	if len(subs) != 1 {
		t.Fatalf("%d submissions, want 1", len(subs))
	}
	s := subs[0]
	if s.IdempotencyKey != "submit:Q1" || s.Envelope.MailFrom != "testplugin@example.test" ||
		s.Envelope.Recipients[0].Address != "notify@example.test" || string(s.Body) != "Subject: from the plugin\r\n\r\nhello\r\n" {
		t.Fatalf("submission %+v", s)
	}

	err := f.c.DeliverEvent(ctx, sdk.Event{ID: "e1", Type: "test.ping", QueueID: "Q9", Attributes: map[string]string{"k": "v"}, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	_, evs, _ := f.host.Snapshot()
	if len(evs) != 1 || evs[0].Type != "testplugin.pong" || evs[0].SourcePlugin != "tp" || evs[0].QueueID != "Q9" ||
		evs[0].Attributes["k"] != "v" || evs[0].Time.IsZero() {
		t.Fatalf("events %+v", evs)
	}
}

// TestPanics: a panicking handler fails its call; the plugin keeps serving.
func TestPanics(t *testing.T) {
	f := start(t, hostside.Options{})
	ctx := context.Background()
	isPanic := func(what string, err error) {
		t.Helper()
		var re *hostside.RemoteError
		if !errors.As(err, &re) || !strings.Contains(re.Message, "plugin panic") {
			t.Fatalf("%s: %v, want a RemoteError about a panic", what, err)
		}
	}
	_, _, err := f.c.Inspect(ctx, env("panic"), strings.NewReader("x"))
	isPanic("Inspect", err)
	_, err = f.c.CanHandle(ctx, env("panic"), env("panic").Recipients)
	isPanic("CanHandle", err)
	_, err = f.c.Transform(ctx, env("panic"), env("panic").Recipients, strings.NewReader("x"))
	isPanic("Transform", err)
	isPanic("Deliver", f.c.DeliverEvent(ctx, sdk.Event{Type: "test.panic"}))

	v, _, err := f.c.Inspect(ctx, env("plain"), strings.NewReader("x"))
	if err != nil || v.Action != sdk.ActionAccept {
		t.Fatalf("after panics: %+v %v", v, err)
	}
	if f.c.Exited() {
		t.Fatal("plugin exited")
	}
}

func TestDeadline(t *testing.T) { bothWays(t, testDeadline) }

func testDeadline(t *testing.T, chunks bool) {
	f := start(t, hostside.Options{NoBodyFiles: chunks})
	for _, call := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"Inspect", func(ctx context.Context) error {
			_, _, err := f.c.Inspect(ctx, env("slow"), strings.NewReader("x"))
			return err
		}},
		{"Transform", func(ctx context.Context) error {
			_, err := f.c.Transform(ctx, env("slow"), env("slow").Recipients, strings.NewReader("x"))
			return err
		}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		err := call.do(ctx)
		cancel()
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s returned after %v", call.name, took)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v, want DeadlineExceeded", call.name, err)
		}
	}
	if err := f.c.Ping(); err != nil {
		t.Fatal(err)
	}
}

// TestKilledMidStream: the plugin dies while it streams a replacement; the
// host's read fails promptly instead of hanging.
func TestKilledMidStream(t *testing.T) {
	f := start(t, hostside.Options{})
	_, repl, err := f.c.Inspect(context.Background(), env("echo"), plugintest.NewMessage(1<<40))
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close()
	if _, err := io.CopyN(io.Discard, repl, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(f.c.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = io.Copy(io.Discard, repl)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("read failed only after %v", took)
	}
	if !errors.Is(err, hostside.ErrUnavailable) {
		t.Fatalf("read after kill: %v, want ErrUnavailable", err)
	}
	waitFor(t, f.c.Exited)
	_, _, err = f.c.Inspect(context.Background(), env("plain"), strings.NewReader("x"))
	if !errors.Is(err, hostside.ErrUnavailable) {
		t.Fatalf("call after the plugin died: %v, want ErrUnavailable", err)
	}
}

func TestConfigure(t *testing.T) {
	f := start(t, hostside.Options{})
	ctx := context.Background()
	err := f.c.Configure(ctx, []byte(`{"fail": true}`), t.TempDir(), f.host)
	var ce *sdk.ConfigError
	if !errors.As(err, &ce) || ce.Key != "fail" || ce.Message != "asked to fail" {
		t.Fatalf("Configure: %v", err)
	}
	err = f.c.Configure(ctx, []byte(`{"fail": "yes"}`), t.TempDir(), f.host)
	if !errors.As(err, &ce) || ce.Key != "fail" {
		t.Fatalf("Configure with a wrong type: %v", err)
	}
	if err := f.c.Configure(ctx, []byte(`[1]`), t.TempDir(), f.host); err == nil {
		t.Fatal("a JSON array was accepted as config")
	}
	// Reconfiguring keeps the host connection working.
	if err := f.c.Configure(ctx, nil, t.TempDir(), f.host); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.c.Inspect(ctx, env("submit"), strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
}

// TestDatabase: the host's [database] reaches the plugin's Config
// (protocol minor 3), and only when the host has one.
func TestDatabase(t *testing.T) {
	dsn := "postgres://posthorn:secret@db.example.net/posthorn"
	cfg := []byte(`{"want_database": "` + dsn + `"}`)
	f := start(t, hostside.Options{Database: &sdk.Database{DSN: dsn, MaxConns: 3}})
	if err := f.c.Configure(context.Background(), cfg, t.TempDir(), f.host); err != nil {
		t.Fatalf("Configure with a database: %v", err)
	}
	g := start(t, hostside.Options{})
	var ce *sdk.ConfigError
	if err := g.c.Configure(context.Background(), cfg, t.TempDir(), g.host); !errors.As(err, &ce) || ce.Key != "want_database" {
		t.Fatalf("Configure without a database: %v", err)
	}
}

// TestConfigureDNSResolver: the host's resolver reaches the plugin in its
// configuration (sdk.Config.DNSResolver).
func TestConfigureDNSResolver(t *testing.T) {
	ctx := context.Background()
	f := start(t, hostside.Options{DNSResolver: "127.0.0.1:5353"})
	if err := f.c.Configure(ctx, []byte(`{"want_dns_resolver": "127.0.0.1:5353"}`), t.TempDir(), f.host); err != nil {
		t.Fatal(err)
	}
	g := start(t, hostside.Options{})
	if err := g.c.Configure(ctx, []byte(`{"want_dns_resolver": "127.0.0.1:5353"}`), t.TempDir(), g.host); err == nil {
		t.Fatal("no resolver handed over, but the plugin saw one")
	}
}

func TestChecksum(t *testing.T) {
	bin := binary(t)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	c := plugintest.Start(t, bin, hostside.Options{SHA256: hex.EncodeToString(s[:])})
	if err := c.Ping(); err != nil {
		t.Fatal(err)
	}
	s[0] ^= 1
	_, err = hostside.Dial(bin, hostside.Options{SHA256: hex.EncodeToString(s[:]), SocketDir: plugintest.ShortTempDir(t)})
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("Dial with a wrong checksum: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}

// TestOutputsBigAndConcurrent (issue 19.4: outputs in memory are sent
// from their own bytes, outputs are written to the spool through
// WriteTo, gRPC's buffers come from a pool that is not cleared): 5 MiB
// split into two outputs, one read with Read and one copied with WriteTo,
// by four calls at once; every byte arrives, each call gets its own.
func TestOutputsBigAndConcurrent(t *testing.T) { bothWays(t, testOutputsBigAndConcurrent) }

func testOutputsBigAndConcurrent(t *testing.T, chunks bool) {
	f := start(t, hostside.Options{MaxMessageSize: 16 << 20, NoBodyFiles: chunks})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan error, 4)
	for k := 0; k < 4; k++ {
		go func() {
			body := make([]byte, 5<<20+k*sdk.ChunkSize+k)
			for i := range body {
				body[i] = byte(i*31 + k)
			}
			e := env("split", "a@example.test", "b@example.test")
			res, err := f.c.Transform(ctx, e, e.Recipients, bytes.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			defer res.Close()
			for i, a := range []string{"a@example.test", "b@example.test"} {
				out, err := res.Next()
				if err != nil {
					errs <- err
					return
				}
				var got []byte
				if i == 0 {
					got, err = io.ReadAll(out.Body)
				} else {
					var buf bytes.Buffer
					_, err = io.Copy(&buf, out.Body) // WriteTo
					got = buf.Bytes()
				}
				want := append([]byte("To: <"+a+">\r\n"), body...)
				if err != nil || !bytes.Equal(got, want) {
					errs <- fmt.Errorf("call %d output %d: %d bytes, want %d, %v", k, i, len(got), len(want), err)
					return
				}
			}
			if _, err := res.Next(); err != io.EOF {
				errs <- fmt.Errorf("call %d after the outputs: %v", k, err)
				return
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestOutputWriteToLimit: an output larger than the host's limit fails
// WriteTo with ErrMessageTooLarge, as Read does.
func TestOutputWriteToLimit(t *testing.T) { bothWays(t, testOutputWriteToLimit) }

func testOutputWriteToLimit(t *testing.T, chunks bool) {
	f := start(t, hostside.Options{MaxMessageSize: 1 << 20, NoBodyFiles: chunks})
	e := env("split", "a@example.test")
	res, err := f.c.Transform(context.Background(), e, e.Recipients, strings.NewReader(strings.Repeat("x", 900<<10)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	out, err := res.Next()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, out.Body); err != nil {
		t.Fatalf("900 KiB under a 1 MiB limit: %v", err)
	}
	e = env("split", "a@example.test")
	res2, err := f.c.Transform(context.Background(), e, e.Recipients, strings.NewReader(strings.Repeat("x", 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer res2.Close()
	out, err = res2.Next()
	if err == nil {
		_, err = io.Copy(io.Discard, out.Body)
	}
	if !errors.Is(err, sdk.ErrMessageTooLarge) {
		t.Fatalf("output over the limit: %v, want ErrMessageTooLarge", err)
	}
}

// bothWays runs a test with bodies passed as sealed memory files (protocol
// minor 5, where the platform has them) and streamed in chunks.
func bothWays(t *testing.T, test func(t *testing.T, chunks bool)) {
	t.Run("files", func(t *testing.T) { test(t, false) })
	t.Run("chunks", func(t *testing.T) { test(t, true) })
}

// fdCount counts the open descriptors of process pid ("self" for us).
func fdCount(t *testing.T, pid string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFDCount waits until pid has at most want descriptors open.
func waitFDCount(t *testing.T, pid string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for fdCount(t, pid) > want {
		if time.Now().After(deadline) {
			t.Fatalf("process %s: %d descriptors open, want at most %d", pid, fdCount(t, pid), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBodyFiles: on Linux a plugin built with this SDK takes the body
// channel (Describe says so) and Transform outputs come back as sealed
// files the caller may keep; files nobody takes are closed, in the host
// and in the plugin, however the call ends. With NoBodyFiles everything
// goes in chunks.
func TestBodyFiles(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs Linux /proc")
	}
	f := start(t, hostside.Options{MaxMessageSize: 8 << 20})
	if !f.info.BodyFiles {
		t.Fatal("Describe: the plugin did not take the body channel")
	}
	ctx := context.Background()
	body := bytes.Repeat([]byte("0123456789 body file\r\n"), 5000)

	// A kept output outlives its call.
	res, err := f.c.Transform(ctx, env("echo"), env("echo").Recipients, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out, err := res.Next()
	if err != nil {
		t.Fatal(err)
	}
	file, size := out.TakeFile()
	if file == nil || size != int64(len(body)) {
		t.Fatalf("TakeFile: %v, %d bytes; want the %d-byte output", file, size, len(body))
	}
	if g, _ := out.TakeFile(); g != nil {
		t.Fatal("an output was handed over twice")
	}
	if _, err := res.Next(); err != io.EOF {
		t.Fatalf("after the only output: %v", err)
	}
	res.Close()
	got, err := io.ReadAll(io.NewSectionReader(file, 0, size))
	file.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("kept output: %d bytes, %v", len(got), err)
	}

	// An output read through Body is not handed over afterwards.
	res, err = f.c.Transform(ctx, env("echo"), env("echo").Recipients, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out, _ = res.Next()
	io.CopyN(io.Discard, out.Body, 10)
	if g, _ := out.TakeFile(); g != nil {
		t.Fatal("TakeFile after Body was read from")
	}
	res.Close()

	// Outputs nobody takes, calls ended early, declined and failing
	// calls: no descriptor stays open on either side.
	pid := strconv.Itoa(f.c.Pid())
	hostBefore, pluginBefore := fdCount(t, "self"), fdCount(t, pid)
	for i := 0; i < 20; i++ {
		e := env("split", "a@example.test", "b@example.test")
		res, err := f.c.Transform(ctx, e, e.Recipients, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := res.Next(); err != nil { // one of two, untaken
				t.Fatal(err)
			}
		}
		res.Close()
		res, err = f.c.Transform(ctx, env("decline"), env("decline").Recipients, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Close()
	}
	waitFDCount(t, "self", hostBefore)
	waitFDCount(t, pid, pluginBefore)

	// Chunks when asked.
	c := start(t, hostside.Options{NoBodyFiles: true})
	if c.info.BodyFiles {
		t.Fatal("NoBodyFiles: Describe still says body files")
	}
	res, err = c.c.Transform(ctx, env("echo"), env("echo").Recipients, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	out, err = res.Next()
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := out.TakeFile(); g != nil {
		t.Fatal("a chunked output offered as a file")
	}
	got, err = io.ReadAll(out.Body)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("chunked output: %d bytes, %v", len(got), err)
	}
}
