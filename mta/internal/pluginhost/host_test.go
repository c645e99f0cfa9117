package pluginhost

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/plugintest"
)

var testBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pl")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testBin, err = plugintest.BuildIn(dir, "./internal/testplugin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testAPI is a HostAPI recording what plugins submit and confirm.
type testAPI struct {
	mu    sync.Mutex
	subs  []submission
	keys  map[string]string
	confs []string
	got   chan submission
}

type submission struct {
	key, id string
	env     *sdk.Envelope
	body    string
}

func newTestAPI() *testAPI {
	return &testAPI{keys: map[string]string{}, got: make(chan submission, 100)}
}

func (a *testAPI) Submit(_ context.Context, env *sdk.Envelope, body io.Reader, key string) (string, error) {
	a.mu.Lock()
	if id, ok := a.keys[key]; ok {
		a.mu.Unlock()
		return id, ErrDuplicate
	}
	a.mu.Unlock()
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	id := fmt.Sprintf("Q%03d", len(a.subs)+1)
	a.keys[key] = id
	s := submission{key: key, id: id, env: env, body: string(b)}
	a.subs = append(a.subs, s)
	a.got <- s
	return id, nil
}

func (a *testAPI) Confirm(_ context.Context, plugin, queueID, rcpt, outcome, reason string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.confs = append(a.confs, strings.Join([]string{plugin, queueID, rcpt, outcome, reason}, " "))
	return nil
}

func (a *testAPI) wait(t *testing.T, n int) []submission {
	t.Helper()
	var out []submission
	timeout := time.After(15 * time.Second)
	for len(out) < n {
		select {
		case s := <-a.got:
			out = append(out, s)
		case <-timeout:
			t.Fatalf("got %d of %d submissions: %+v", len(out), n, out)
		}
	}
	return out
}

func pluginConf(t *testing.T, name string) conf.Plugin {
	return conf.Plugin{
		Name: name, Path: testBin, Timeout: conf.Duration(20 * time.Second), OnFailure: "tempfail",
		DataDir: filepath.Join(t.TempDir(), name), Config: conf.PluginConfig{"name": name},
	}
}

func startHost(t *testing.T, api HostAPI, cfg []conf.Plugin, opts ...Option) (*Host, error) {
	t.Helper()
	opts = append([]Option{WithSocketDir(plugintest.ShortTempDir(t)), WithBackoff(50*time.Millisecond, 2*time.Second)}, opts...)
	h := New(cfg, api, plugintest.TestLogger(t, slog.LevelWarn), opts...)
	t.Cleanup(h.Stop)
	return h, h.Start(context.Background())
}

func env(from string, rcpts ...string) *sdk.Envelope {
	e := &sdk.Envelope{ID: "QTEST", MailFrom: from, Helo: "client.test"}
	for _, r := range rcpts {
		e.Recipients = append(e.Recipients, sdk.Recipient{Address: r})
	}
	return e
}

const msg = "From: <a@example.test>\r\nSubject: hi\r\n\r\nhello\r\n"

func TestRoundTrip(t *testing.T) {
	api := newTestAPI()
	h, err := startHost(t, api, []conf.Plugin{pluginConf(t, "t1")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	st := h.Status()
	if len(st) != 1 || st[0].State != StateRunning || st[0].Version != "0.2.0" || len(st[0].Hooks) != 3 || st[0].Pid == 0 || st[0].Restarts != 0 {
		t.Fatalf("status %+v", st)
	}
	if got := h.Inbound(); len(got) != 1 || got[0] != "t1" {
		t.Errorf("Inbound = %v", got)
	}
	if b, err := os.ReadFile(filepath.Join(h.Plugin("t1").DataDir, "configured")); err != nil || string(b) != "t1" {
		t.Errorf("plugin not configured with its data dir and config: %q %v", b, err)
	}

	// Inbound.
	v, repl, err := h.Inspect(ctx, "t1", env("a@example.test"), strings.NewReader(msg))
	if err != nil || v.Action != sdk.ActionAccept || repl != nil {
		t.Errorf("accept: %+v %v %v", v, repl, err)
	}
	v, _, err = h.Inspect(ctx, "t1", env("reject@example.test"), strings.NewReader(msg))
	if err != nil || v.Action != sdk.ActionReject || v.Code != 550 || v.Text != "rejected by testplugin" {
		t.Errorf("reject: %+v %v", v, err)
	}
	v, _, err = h.Inspect(ctx, "t1", env("count@example.test"), strings.NewReader(msg))
	if err != nil || v.Action != sdk.ActionAddHeaders || v.Headers[0].Value != strconv.Itoa(len(msg)) {
		t.Errorf("count: %+v %v", v, err)
	}
	v, repl, err = h.Inspect(ctx, "t1", env("echo@example.test"), strings.NewReader(msg))
	if err != nil || v.Action != sdk.ActionReplace || repl == nil {
		t.Fatalf("echo: %+v %v", v, err)
	}
	b, err := io.ReadAll(repl)
	repl.Close()
	if err != nil || string(b) != msg {
		t.Errorf("replacement %q %v", b, err)
	}

	// Outbound.
	as, err := h.CanHandle(ctx, "t1", env("a@example.test"), []sdk.Recipient{{Address: "yes@x.test"}, {Address: "no@x.test"}})
	if err != nil || len(as) != 2 || !as[0].CanHandle || as[1].CanHandle {
		t.Errorf("CanHandle %+v %v", as, err)
	}
	group := []sdk.Recipient{{Address: "r1@x.test"}, {Address: "r2@x.test"}}
	res, err := h.Transform(ctx, "t1", env("split@example.test"), group, strings.NewReader(msg))
	if err != nil || res.Action != sdk.OutboundTransformed {
		t.Fatalf("split: %+v %v", res, err)
	}
	var outs []string
	for {
		out, err := res.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(out.Body)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out.Recipients[0]+"|"+string(b))
	}
	res.Close()
	if len(outs) != 2 || outs[0] != "r1@x.test|To: <r1@x.test>\r\n"+msg || outs[1] != "r2@x.test|To: <r2@x.test>\r\n"+msg {
		t.Errorf("outputs %q", outs)
	}
	res, err = h.Transform(ctx, "t1", env("divert@example.test"), group, strings.NewReader(msg))
	if err != nil || res.Action != sdk.OutboundDiverted || !res.Pending || res.Reason != "stored in the test mailbox" {
		t.Fatalf("divert: %+v %v", res, err)
	}
	if _, err := res.Next(); err != io.EOF {
		t.Errorf("Next after divert: %v", err)
	}
	res.Close()
	api.mu.Lock()
	confs := append([]string(nil), api.confs...)
	api.mu.Unlock()
	if len(confs) != 2 || confs[0] != "t1 QTEST r1@x.test delivered stored" {
		t.Errorf("confirmations %q", confs)
	}
	res, err = h.Transform(ctx, "t1", env("decline@example.test"), group, strings.NewReader(msg))
	if err != nil || res.Action != sdk.OutboundDeclined {
		t.Errorf("decline: %+v %v", res, err)
	} else {
		res.Close()
	}

	// Events, synchronously.
	if err := h.DeliverEvent(ctx, "t1", sdk.Event{ID: "e1", Type: "test.ping", Attributes: map[string]string{"a": "x"}}); err != nil {
		t.Fatal(err)
	}
	s := api.wait(t, 1)[0]
	if s.key != "t1:ping:e1" || !strings.Contains(s.body, "X-Attr: x") {
		t.Errorf("submission %+v", s)
	}

	// Unknown plugin.
	if _, _, err := h.Inspect(ctx, "nope", env("a@b"), strings.NewReader(msg)); !errors.Is(err, ErrUnknownPlugin) {
		t.Errorf("unknown plugin: %v", err)
	}
}

func TestSubmitFromPlugin(t *testing.T) {
	api := newTestAPI()
	h, err := startHost(t, api, []conf.Plugin{pluginConf(t, "sub")})
	if err != nil {
		t.Fatal(err)
	}
	e := env("submit@example.test", "r@x.test")
	v, _, err := h.Inspect(context.Background(), "sub", e, strings.NewReader(msg))
	if err != nil || v.Action != sdk.ActionAddHeaders || v.Headers[0].Value != "Q001" {
		t.Fatalf("%+v %v", v, err)
	}
	s := api.wait(t, 1)[0]
	if s.key != "sub:submit:client.test" || s.env.MailFrom != "testplugin@example.test" ||
		s.env.Recipients[0].Address != "notify@example.test" || s.body != "Subject: from sub\r\n\r\nhello\r\n" {
		t.Errorf("submission %+v", s)
	}
	// The same key again: the first queue id, nothing new queued.
	v, _, err = h.Inspect(context.Background(), "sub", e, strings.NewReader(msg))
	if err != nil || v.Headers[0].Value != "Q001" {
		t.Fatalf("duplicate: %+v %v", v, err)
	}
	api.mu.Lock()
	n := len(api.subs)
	api.mu.Unlock()
	if n != 1 {
		t.Errorf("%d submissions", n)
	}
}

// hashReader hashes what passes through it.
type hashReader struct {
	r io.Reader
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

func TestLargeMessage(t *testing.T) {
	const size = 50 << 20
	// 50 MB each way under -race on a busy 2-core machine can outlast the
	// usual 20 s hook timeout; what is tested here is streaming, not speed.
	pc := pluginConf(t, "big")
	pc.Timeout = conf.Duration(2 * time.Minute)
	h, err := startHost(t, newTestAPI(), []conf.Plugin{pc}, WithMaxMessageSize(60<<20))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	in := &hashReader{r: plugintest.NewMessage(size), h: sha256.New()}
	v, _, err := h.Inspect(ctx, "big", env("count@example.test"), in)
	if err != nil {
		t.Fatal(err)
	}
	if v.Headers[0].Value != strconv.Itoa(size) || v.Headers[1].Value != hex.EncodeToString(in.h.Sum(nil)) {
		t.Errorf("Inspect saw %v, sent %d bytes", v.Headers, in.n)
	}

	in = &hashReader{r: plugintest.NewMessage(size), h: sha256.New()}
	res, err := h.Transform(ctx, "big", env("a@example.test"), []sdk.Recipient{{Address: "r@x.test"}}, in)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	out, err := res.Next()
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, out.Body)
	if err != nil || n != size || hex.EncodeToString(got.Sum(nil)) != hex.EncodeToString(in.h.Sum(nil)) {
		t.Errorf("Transform output %d bytes, %v", n, err)
	}
	if _, err := res.Next(); err != io.EOF {
		t.Errorf("after the output: %v", err)
	}
}

// killingReader sends SIGKILL to pid after after bytes, then goes on.
type killingReader struct {
	r        io.Reader
	pid      int
	after    int64
	n        int64
	killed   bool
	killedAt time.Time
}

func (k *killingReader) Read(p []byte) (int, error) {
	if !k.killed && k.n >= k.after {
		syscall.Kill(k.pid, syscall.SIGKILL)
		k.killed, k.killedAt = true, time.Now()
	}
	n, err := k.r.Read(p)
	k.n += int64(n)
	return n, err
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCrashMidStreamAndRestart(t *testing.T) {
	h, err := startHost(t, newTestAPI(), []conf.Plugin{pluginConf(t, "k")})
	if err != nil {
		t.Fatal(err)
	}
	pid := h.Status()[0].Pid
	const size = 50 << 20
	body := &killingReader{r: plugintest.NewMessage(size), pid: pid, after: 4 << 20}
	_, _, err = h.Inspect(context.Background(), "k", env("count@example.test"), body)
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Inspect of a killed plugin: %v, want ErrNotRunning", err)
	}
	if !body.killed {
		t.Fatalf("the plugin was not killed (%d bytes read)", body.n)
	}
	// The call ends when the plugin dies: well before its timeout (20 s),
	// without streaming the rest of the message. Timed from the kill, not
	// from the start: streaming the first 4 MiB alone took 6 s with -race
	// on a loaded machine.
	took := time.Since(body.killedAt)
	if took > 10*time.Second || body.n >= size/2 {
		t.Errorf("the call ended %v after the kill, %d of %d bytes read", took, body.n, size)
	}
	t.Logf("error %v after the kill: %v", took.Round(time.Millisecond), err)

	waitFor(t, "restart", func() bool {
		st := h.Status()[0]
		return st.State == StateRunning && st.Restarts == 1
	})
	st := h.Status()[0]
	if st.Pid == pid || st.Pid == 0 || st.LastError == "" {
		t.Errorf("after restart: %+v", st)
	}
	v, _, err := h.Inspect(context.Background(), "k", env("count@example.test"), strings.NewReader(msg))
	if err != nil || v.Action != sdk.ActionAddHeaders {
		t.Fatalf("after restart: %+v %v", v, err)
	}

	// A crash inside a call, then again: restarts keep counting.
	_, _, err = h.Inspect(context.Background(), "k", env("crash@example.test"), strings.NewReader(msg))
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("crash: %v", err)
	}
	waitFor(t, "second restart", func() bool {
		st := h.Status()[0]
		return st.State == StateRunning && st.Restarts == 2
	})
	// While down, calls fail at once with ErrNotRunning.
	syscall.Kill(h.Status()[0].Pid, syscall.SIGKILL)
	waitFor(t, "crash noticed", func() bool { return h.Status()[0].State != StateRunning })
	if _, err := h.CanHandle(context.Background(), "k", env("a@b"), []sdk.Recipient{{Address: "x@y"}}); !errors.Is(err, ErrNotRunning) && err != nil {
		t.Errorf("while down: %v", err)
	}
	waitFor(t, "third restart", func() bool { return h.Status()[0].State == StateRunning })
}

func TestHang(t *testing.T) {
	c := pluginConf(t, "hang")
	c.Timeout = conf.Duration(500 * time.Millisecond)
	h, err := startHost(t, newTestAPI(), []conf.Plugin{c})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err = h.Inspect(context.Background(), "hang", env("hang@example.test"), strings.NewReader(msg))
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: %v, want ErrTimeout", err)
	}
	if took < 400*time.Millisecond || took > 2*time.Second {
		t.Errorf("returned after %v with a timeout of 500ms", took)
	}
	if !strings.Contains(err.Error(), "plugin hang: Inspect: timed out after 500ms") {
		t.Errorf("message %q", err)
	}
	start = time.Now()
	res, err := h.Transform(context.Background(), "hang", env("hang@example.test"), []sdk.Recipient{{Address: "r@x"}}, strings.NewReader(msg))
	if !errors.Is(err, ErrTimeout) || time.Since(start) > 2*time.Second {
		t.Fatalf("Transform hang: %v %v", res, err)
	}
	// The plugin is still there and answers.
	v, _, err := h.Inspect(context.Background(), "hang", env("a@example.test"), strings.NewReader(msg))
	if err != nil || v.Action != sdk.ActionAccept {
		t.Errorf("after a hang: %+v %v", v, err)
	}
	if st := h.Status()[0]; st.State != StateRunning || st.Restarts != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestChecksum(t *testing.T) {
	f, err := os.Open(testBin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.New()
	io.Copy(sum, f)
	f.Close()
	good := pluginConf(t, "good")
	good.SHA256 = hex.EncodeToString(sum.Sum(nil))
	bad := pluginConf(t, "bad")
	bad.SHA256 = strings.Repeat("ab", 32)

	h, err := startHost(t, newTestAPI(), []conf.Plugin{good, bad})
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "plugin bad: "+testBin+" has SHA-256 "+good.SHA256+", configured sha256 is "+bad.SHA256) {
		t.Fatalf("Start: %v", err)
	}
	st := h.Status()
	if st[0].State != StateRunning || st[1].State != StateDisabled || !strings.Contains(st[1].LastError, "sha256") {
		t.Errorf("status %+v", st)
	}
	if _, _, err := h.Inspect(context.Background(), "bad", env("a@b"), strings.NewReader(msg)); !errors.Is(err, ErrNotRunning) {
		t.Errorf("disabled plugin: %v", err)
	}
	if _, _, err := h.Inspect(context.Background(), "good", env("a@b"), strings.NewReader(msg)); err != nil {
		t.Errorf("pinned plugin: %v", err)
	}
	// Never retried: its supervisor parks until the host stops instead
	// of waiting out a backoff.
	waitFor(t, "the disabled plugin's supervisor to park", func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "[chan receive") && strings.Contains(g, "pluginhost.(*plugin).supervise(") {
				return true
			}
		}
		return false
	})
	if st := h.Status()[1]; st.State != StateDisabled || st.Restarts != 0 {
		t.Errorf("disabled plugin retried: %+v", st)
	}
}

func TestConfigRejected(t *testing.T) {
	c := pluginConf(t, "cfg")
	c.Config = conf.PluginConfig{"fail": true}
	h, err := startHost(t, newTestAPI(), []conf.Plugin{c})
	var ce *sdk.ConfigError
	if !errors.As(err, &ce) || ce.Key != "fail" || !strings.Contains(err.Error(), "plugin cfg: Configure: fail: asked to fail") {
		t.Fatalf("Start: %v", err)
	}
	if st := h.Status()[0]; st.State != StateDisabled {
		t.Errorf("status %+v", st)
	}
}

func TestBootFailureRetried(t *testing.T) {
	dir := plugintest.ShortTempDir(t)
	c := pluginConf(t, "late")
	c.Path = filepath.Join(dir, "late")
	h, err := startHost(t, newTestAPI(), []conf.Plugin{c}, WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatalf("a missing binary must not fail Start: %v", err)
	}
	if st := h.Status()[0]; st.State == StateRunning || st.LastError == "" {
		t.Errorf("status %+v", st)
	}
	// Inbound still names it (hooks unknown): its on_failure applies.
	if got := h.Inbound(); len(got) != 1 {
		t.Errorf("Inbound = %v", got)
	}
	if _, _, err := h.Inspect(context.Background(), "late", env("a@b"), strings.NewReader(msg)); !errors.Is(err, ErrNotRunning) {
		t.Errorf("not started: %v", err)
	}
	data, err := os.ReadFile(testBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Path+".tmp", data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Rename(c.Path+".tmp", c.Path)
	waitFor(t, "late start", func() bool { return h.Status()[0].State == StateRunning })
}

func TestEmitFanOut(t *testing.T) {
	api := newTestAPI()
	h, err := startHost(t, api, []conf.Plugin{pluginConf(t, "a"), pluginConf(t, "b")})
	if err != nil {
		t.Fatal(err)
	}
	// Not subscribed: nothing happens.
	h.Emit(sdk.Event{Type: "other.thing"})
	// A host event reaches both subscribers.
	h.Emit(sdk.Event{ID: "p1", Type: "test.ping", Attributes: map[string]string{"a": "v"}})
	subs := api.wait(t, 2)
	keys := map[string]bool{}
	for _, s := range subs {
		keys[s.key] = true
	}
	if !keys["a:ping:p1"] || !keys["b:ping:p1"] {
		t.Errorf("keys %v", keys)
	}

	// A plugin's event reaches the subscribers, stamped with its source
	// and a namespaced id: a's and b's pongs each reach a and b.
	h.Emit(sdk.Event{ID: "r1", Type: "test.relay"})
	subs = api.wait(t, 4)
	got := map[string]bool{}
	for _, s := range subs {
		sc := bufio.NewScanner(strings.NewReader(s.body))
		var plugin, source string
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "X-Plugin: "); ok {
				plugin = v
			}
			if v, ok := strings.CutPrefix(sc.Text(), "X-Source: "); ok {
				source = v
			}
		}
		got[plugin+"<"+source+" "+s.key] = true
	}
	for _, want := range []string{"a<a a:pong:a:pong-r1", "b<a b:pong:a:pong-r1", "a<b a:pong:b:pong-r1", "b<b b:pong:b:pong-r1"} {
		if !got[want] {
			t.Errorf("missing %q in %v", want, got)
		}
	}
}

func TestEmitQueueFull(t *testing.T) {
	c := pluginConf(t, "slow")
	// Each event hangs for the whole timeout: an Emit that waited for
	// room in the queue would block for seconds, far above the bound
	// below, which leaves room for a loaded machine running -race.
	c.Timeout = conf.Duration(3 * time.Second)
	h, err := startHost(t, newTestAPI(), []conf.Plugin{c}, WithEventQueue(2, 1))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 20 {
		h.Emit(sdk.Event{ID: strconv.Itoa(i), Type: "test.hang"})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Emit blocked for %v", d)
	}
	if st := h.Status()[0]; st.EventsDropped < 15 {
		t.Errorf("dropped %d of 20", st.EventsDropped)
	}
}

func TestStopKillsAll(t *testing.T) {
	h, err := startHost(t, newTestAPI(), []conf.Plugin{pluginConf(t, "s1"), pluginConf(t, "s2")})
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, st := range h.Status() {
		pids = append(pids, st.Pid)
	}
	start := time.Now()
	h.Stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %v", d)
	}
	for _, pid := range pids {
		// Reaped by go-plugin: the pid is gone.
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("plugin pid %d still there after Stop: %v", pid, err)
		}
	}
	for _, st := range h.Status() {
		if st.State != StateStopped || st.Pid != 0 {
			t.Errorf("after Stop: %+v", st)
		}
	}
	if _, _, err := h.Inspect(context.Background(), "s1", env("a@b"), strings.NewReader(msg)); !errors.Is(err, ErrNotRunning) {
		t.Errorf("after Stop: %v", err)
	}
	h.Emit(sdk.Event{Type: "test.ping"}) // no panic, no block
}

func TestHealthCheckRestartsFrozenPlugin(t *testing.T) {
	h, err := startHost(t, newTestAPI(), []conf.Plugin{pluginConf(t, "frozen")}, WithHealthInterval(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	pid := h.Status()[0].Pid
	// A stopped process neither exits nor answers: only the health check
	// notices.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	// Restarts >= 1, not == 1: the ping of the restarted plugin has 300 ms
	// too, and may miss them on a loaded machine.
	waitFor(t, "restart of the frozen plugin", func() bool {
		st := h.Status()[0]
		return st.State == StateRunning && st.Restarts >= 1 && st.Pid != pid
	})
	if st := h.Status()[0]; !strings.Contains(st.LastError, "health check failed") {
		t.Errorf("last error %q", st.LastError)
	}
	if _, _, err := h.Inspect(context.Background(), "frozen", env("a@b"), strings.NewReader(msg)); err != nil {
		t.Error(err)
	}
}
