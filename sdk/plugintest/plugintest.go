// Package plugintest is the conformance kit for Posthorn plugins. Run it
// from a plugin's own tests against the built binary:
//
//	func TestConformance(t *testing.T) {
//		bin := plugintest.Build(t, ".")
//		plugintest.Run(t, bin, plugintest.Options{
//			Config: map[string]any{"tag": "[x]"},
//		})
//	}
//
// Run checks, each as a subtest: the handshake and Describe (name, semantic
// version, hooks matching the services actually served); that a bad
// configuration is rejected with a config error, not a crash; that a large
// message (50 MB by default) streams through Inbound and Outbound without
// hitting gRPC limits; that a hook whose deadline passes returns promptly
// with the context error and leaves the plugin serving; that events are
// accepted; that the plugin exits when killed and when its host dies.
package plugintest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
)

// Options tune Run. The zero value works for a plugin that accepts an
// empty configuration.
type Options struct {
	// Config is a configuration the plugin accepts: anything encoding/json
	// turns into an object, or the JSON itself as json.RawMessage, []byte or
	// string. nil: {}.
	Config any
	// BadConfig is a configuration the plugin must reject. nil: an object
	// with an unknown key, {"plugintest_unknown_key": true}.
	BadConfig any
	// LargeMessageMB is the size of the large-message tests. 0: 50.
	// Negative: skip them.
	LargeMessageMB int
	// Envelope used for hook calls. nil: from sender@example.test to
	// rcpt@example.test.
	Envelope *sdk.Envelope
	// Timeout per hook call. 0: 60s.
	Timeout time.Duration
	// Deadline for the deadline test. 0: 500ms.
	Deadline time.Duration
	// Host is served to the plugin. nil: a RecordingHost.
	Host hostside.HostServer
	// Logger receives the plugin's log. nil: t.Log, warnings and up.
	Logger *slog.Logger
	// FilterCases pin which mail the plugin's inbound filter (protocol
	// minor 2) selects, evaluated the way the host does (sdk.ReadFilterInput
	// and sdk.InboundFilter.Match) on the filter in effect after Configure.
	FilterCases []FilterCase
	// LocalDomains are the host's local domains for FilterCases.
	LocalDomains []string
}

// FilterCase is a message and whether the plugin's inbound filter must
// select it.
type FilterCase struct {
	Name       string
	Recipients []string // envelope recipients
	Message    string   // at least the header
	Want       bool
}

func (o *Options) defaults(t *testing.T) {
	if o.LargeMessageMB == 0 {
		o.LargeMessageMB = 50
	}
	if o.Envelope == nil {
		o.Envelope = &sdk.Envelope{
			ID:         "PT0001",
			MailFrom:   "sender@example.test",
			Recipients: []sdk.Recipient{{Address: "rcpt@example.test"}},
			ClientAddr: "192.0.2.1:40000",
			Helo:       "client.example.test",
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Deadline <= 0 {
		o.Deadline = 500 * time.Millisecond
	}
	if o.Host == nil {
		o.Host = &RecordingHost{}
	}
	if o.Logger == nil {
		o.Logger = TestLogger(t, slog.LevelWarn)
	}
}

func configJSON(t testing.TB, v any, def string) []byte {
	t.Helper()
	switch v := v.(type) {
	case nil:
		return []byte(def)
	case json.RawMessage:
		return v
	case []byte:
		return v
	case string:
		return []byte(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("plugintest: encoding config: %v", err)
	}
	return b
}

// Start dials the plugin binary for a test and kills it at the end of the
// test. The socket directory is short, whatever TMPDIR is.
func Start(t testing.TB, binary string, opts hostside.Options) *hostside.Client {
	t.Helper()
	if opts.SocketDir == "" {
		opts.SocketDir = ShortTempDir(t)
	}
	if opts.Name == "" {
		opts.Name = filepath.Base(binary)
	}
	c, err := hostside.Dial(binary, opts)
	if err != nil {
		t.Fatalf("plugintest: starting %s: %v", binary, err)
	}
	t.Cleanup(c.Kill)
	return c
}

// Run runs the conformance suite against the plugin binary.
func Run(t *testing.T, binary string, opts Options) {
	t.Helper()
	opts.defaults(t)
	good := configJSON(t, opts.Config, "{}")
	bad := configJSON(t, opts.BadConfig, `{"plugintest_unknown_key": true}`)
	hopts := hostside.Options{Logger: opts.Logger, StartTimeout: 20 * time.Second}

	c := Start(t, binary, hopts)
	ctx := context.Background()
	var info *hostside.Info

	ok := t.Run("Describe", func(t *testing.T) {
		var err error
		info, err = c.Describe(ctx)
		if err != nil {
			t.Fatalf("Describe: %v", err)
		}
		t.Logf("plugin %s %s, hooks %v, protocol 1.%d, events %v", info.Name, info.Version, info.Hooks, info.ProtocolMinor, info.EventTypes)
		if info.ProtocolMinor > sdk.ProtocolMinor {
			t.Logf("plugin speaks protocol minor %d, this kit %d: newer fields are not tested", info.ProtocolMinor, sdk.ProtocolMinor)
		}
	})
	if !ok {
		return
	}

	t.Run("BadConfig", func(t *testing.T) {
		err := c.Configure(ctx, bad, t.TempDir(), opts.Host)
		var ce *sdk.ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("Configure(%s) = %v, want a *sdk.ConfigError", bad, err)
		}
		t.Logf("rejected as expected: %v", err)
		if err := c.Ping(); err != nil {
			t.Fatalf("plugin does not answer after a bad config: %v", err)
		}
	})
	ok = t.Run("Configure", func(t *testing.T) {
		if err := c.Configure(ctx, good, t.TempDir(), opts.Host); err != nil {
			t.Fatalf("Configure(%s): %v", good, err)
		}
	})
	if !ok {
		return
	}

	t.Run("HooksMatchServices", func(t *testing.T) { checkHooks(t, c, info, opts) })
	t.Run("InboundFilter", func(t *testing.T) { inboundFilter(t, c, info, opts) })

	if info.Has(sdk.HookInbound) {
		t.Run("InboundLarge", func(t *testing.T) { inboundLarge(t, c, info, opts) })
	}
	if info.Has(sdk.HookOutbound) {
		t.Run("OutboundLarge", func(t *testing.T) { outboundLarge(t, c, info, opts) })
	}
	if info.Has(sdk.HookInbound) || info.Has(sdk.HookOutbound) {
		t.Run("Deadline", func(t *testing.T) { deadline(t, c, info, opts) })
	}
	if info.Has(sdk.HookEvents) {
		t.Run("Events", func(t *testing.T) { events(t, c, info, opts) })
	}
	t.Run("Kill", func(t *testing.T) {
		c2 := Start(t, binary, hopts)
		if _, err := c2.Describe(ctx); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { c2.Kill(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Kill did not return within 10s")
		}
		if !c2.Exited() {
			t.Fatal("plugin still running after Kill")
		}
	})
	t.Run("HostGone", func(t *testing.T) { hostGone(t, binary) })
}

func checkHooks(t *testing.T, c *hostside.Client, info *hostside.Info, opts Options) {
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	if !info.Has(sdk.HookInbound) {
		_, _, err := c.Inspect(ctx, opts.Envelope, strings.NewReader(""))
		if !errors.Is(err, hostside.ErrNotImplemented) {
			t.Errorf("inbound hook not declared, but Inspect gave %v, want ErrNotImplemented", err)
		}
	}
	_, err := c.CanHandle(ctx, opts.Envelope, opts.Envelope.Recipients)
	if info.Has(sdk.HookOutbound) && err != nil {
		t.Errorf("outbound hook declared, but CanHandle: %v", err)
	}
	if !info.Has(sdk.HookOutbound) && !errors.Is(err, hostside.ErrNotImplemented) {
		t.Errorf("outbound hook not declared, but CanHandle gave %v, want ErrNotImplemented", err)
	}
	if !info.Has(sdk.HookEvents) {
		err := c.DeliverEvent(ctx, sdk.Event{ID: "pt-1", Type: sdk.EventDelivered, Time: time.Now()})
		if !errors.Is(err, hostside.ErrNotImplemented) {
			t.Errorf("events hook not declared, but DeliverEvent gave %v, want ErrNotImplemented", err)
		}
	}
}

// inboundFilter checks the filter in effect after Configure: declared
// only with the inbound hook, well formed (hostside has validated it), a
// message the filter selects gets a verdict from Inspect, and the
// FilterCases hold.
func inboundFilter(t *testing.T, c *hostside.Client, info *hostside.Info, opts Options) {
	f := c.InboundFilter()
	if f == nil {
		if len(opts.FilterCases) > 0 {
			t.Fatal("FilterCases given, but the plugin declares no inbound filter")
		}
		t.Skip("no inbound filter: the plugin sees every message")
	}
	if !info.Has(sdk.HookInbound) {
		t.Fatal("an inbound filter without the inbound hook")
	}
	if info.ProtocolMinor < 2 {
		t.Errorf("an inbound filter from a plugin of protocol minor %d (filters are minor 2)", info.ProtocolMinor)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	local := map[string]bool{}
	for _, d := range opts.LocalDomains {
		local[strings.ToLower(d)] = true
	}
	for _, fc := range opts.FilterCases {
		in := sdk.ReadFilterInput(strings.NewReader(fc.Message), fc.Recipients, func(d string) bool { return local[d] })
		if got := f.Match(in); got != fc.Want {
			t.Errorf("%s: filter selects = %v, want %v", fc.Name, got, fc.Want)
		}
	}
	t.Logf("filter: %+v", *f)
}

func largeSize(info *hostside.Info, opts Options) int64 {
	n := int64(opts.LargeMessageMB) << 20
	if info.MaxMessageSize > 0 && info.MaxMessageSize < n {
		n = info.MaxMessageSize
	}
	return n
}

func inboundLarge(t *testing.T, c *hostside.Client, info *hostside.Info, opts Options) {
	if opts.LargeMessageMB < 0 {
		t.Skip("large-message tests disabled")
	}
	size := largeSize(info, opts)
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	env := *opts.Envelope
	env.Size = size
	msg := NewMessage(size)
	start := time.Now()
	v, repl, err := c.Inspect(ctx, &env, msg)
	if err != nil {
		t.Fatalf("Inspect of %d MB: %v", size>>20, err)
	}
	var got int64
	if repl != nil {
		got, err = io.Copy(io.Discard, repl)
		repl.Close()
		if err != nil {
			t.Fatalf("reading the %d MB replacement: %v", size>>20, err)
		}
	}
	t.Logf("verdict %v after reading %d of %d bytes; replacement %d bytes; %v", v.Action, msg.Sent(), size, got, time.Since(start).Round(time.Millisecond))
}

func outboundLarge(t *testing.T, c *hostside.Client, info *hostside.Info, opts Options) {
	if opts.LargeMessageMB < 0 {
		t.Skip("large-message tests disabled")
	}
	size := largeSize(info, opts)
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	env := *opts.Envelope
	env.Size = size
	answers, err := c.CanHandle(ctx, &env, env.Recipients)
	if err != nil {
		t.Fatalf("CanHandle: %v", err)
	}
	var group []sdk.Recipient
	for _, a := range answers {
		if a.CanHandle {
			group = append(group, sdk.Recipient{Address: a.Recipient})
		}
	}
	if len(group) == 0 {
		t.Skipf("the plugin handles none of %v (set Options.Envelope)", sdk.Addresses(env.Recipients))
	}
	start := time.Now()
	res, err := c.Transform(ctx, &env, group, NewMessage(size))
	if err != nil {
		t.Fatalf("Transform of %d MB: %v", size>>20, err)
	}
	defer res.Close()
	var outs int
	var total int64
	for {
		out, err := res.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Transform output %d: %v", outs, err)
		}
		n, err := io.Copy(io.Discard, out.Body)
		if err != nil {
			t.Fatalf("reading output %d: %v", outs, err)
		}
		outs++
		total += n
	}
	t.Logf("%v: %d outputs, %d bytes; %v", res.Action, outs, total, time.Since(start).Round(time.Millisecond))
}

func deadline(t *testing.T, c *hostside.Client, info *hostside.Info, opts Options) {
	ctx, cancel := context.WithTimeout(context.Background(), opts.Deadline)
	defer cancel()
	start := time.Now()
	var err error
	body := &trickle{header: []byte("Subject: slow\r\n\r\n")}
	if info.Has(sdk.HookInbound) {
		var repl io.ReadCloser
		_, repl, err = c.Inspect(ctx, opts.Envelope, body)
		if repl != nil {
			_, err = io.Copy(io.Discard, repl)
			repl.Close()
		}
	} else {
		var res *hostside.TransformResult
		res, err = c.Transform(ctx, opts.Envelope, opts.Envelope.Recipients, body)
		if res != nil {
			for err == nil {
				var out *hostside.Output
				if out, err = res.Next(); err == nil {
					_, err = io.Copy(io.Discard, out.Body)
				}
			}
			if err == io.EOF {
				err = nil
			}
			res.Close()
		}
	}
	took := time.Since(start)
	grace := 2 * time.Second
	if took > opts.Deadline+grace {
		t.Errorf("hook returned %v after its deadline of %v", took-opts.Deadline, opts.Deadline)
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("after the deadline: %v, want context.DeadlineExceeded", err)
	}
	if err := c.Ping(); err != nil {
		t.Fatalf("plugin does not answer after a deadline: %v", err)
	}
	if _, err := c.Describe(context.Background()); err != nil {
		t.Fatalf("Describe after a deadline: %v", err)
	}
}

// trickle is a body that never ends: a header, then a byte every 10ms.
type trickle struct {
	header []byte
}

func (r *trickle) Read(p []byte) (int, error) {
	if len(r.header) > 0 {
		n := copy(p, r.header)
		r.header = r.header[n:]
		return n, nil
	}
	time.Sleep(10 * time.Millisecond)
	p[0] = 'x'
	return 1, nil
}

func events(t *testing.T, c *hostside.Client, info *hostside.Info, opts Options) {
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	types := []string{sdk.EventDelivered}
	for _, p := range info.EventTypes {
		if !strings.Contains(p, "*") {
			types = append(types, p)
		}
	}
	for i, typ := range types {
		ev := sdk.Event{
			ID: fmt.Sprintf("pt-%d", i), Type: typ, QueueID: opts.Envelope.ID,
			Sender: opts.Envelope.MailFrom, Recipient: "rcpt@example.test",
			Time: time.Now(), Attributes: map[string]string{"plugintest": "1"}, Language: "en",
		}
		if err := c.DeliverEvent(ctx, ev); err != nil {
			t.Errorf("DeliverEvent(%s): %v", typ, err)
		}
	}
}

// RecordingHost is a HostServer that keeps what the plugin sends.
type RecordingHost struct {
	mu            sync.Mutex
	Submissions   []RecordedSubmission
	Events        []sdk.Event
	Confirmations []sdk.Confirmation
	keys          map[string]string
}

// RecordedSubmission is a submitted message, body included.
type RecordedSubmission struct {
	IdempotencyKey string
	Envelope       *sdk.Envelope
	Body           []byte
	QueueID        string
}

var _ hostside.HostServer = (*RecordingHost)(nil)

// Submit reads the body and queues nothing; a repeated idempotency key
// returns the first queue id.
func (h *RecordingHost) Submit(_ context.Context, s hostside.Submission) (hostside.SubmitResult, error) {
	body, err := io.ReadAll(s.Body)
	if err != nil {
		return hostside.SubmitResult{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if id, ok := h.keys[s.IdempotencyKey]; ok {
		return hostside.SubmitResult{QueueID: id, Duplicate: true}, nil
	}
	if h.keys == nil {
		h.keys = map[string]string{}
	}
	id := fmt.Sprintf("PTQ%04d", len(h.Submissions)+1)
	h.keys[s.IdempotencyKey] = id
	h.Submissions = append(h.Submissions, RecordedSubmission{s.IdempotencyKey, s.Envelope, body, id})
	return hostside.SubmitResult{QueueID: id}, nil
}

// Emit records the event.
func (h *RecordingHost) Emit(_ context.Context, ev sdk.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.Events = append(h.Events, ev)
	return nil
}

// Confirm records the confirmation.
func (h *RecordingHost) Confirm(_ context.Context, c sdk.Confirmation) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.Confirmations = append(h.Confirmations, c)
	return nil
}

// Snapshot returns copies of what was recorded so far.
func (h *RecordingHost) Snapshot() (subs []RecordedSubmission, evs []sdk.Event, confs []sdk.Confirmation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append(subs, h.Submissions...), append(evs, h.Events...), append(confs, h.Confirmations...)
}
