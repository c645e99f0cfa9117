// Package pluginhost runs the plugins declared in [[plugin]]: it starts
// each binary (refusing one whose SHA-256 does not match the configured
// sha256), describes and configures it, serves it the Host service
// (Submit, Emit, Confirm) and supervises it — a goroutine per plugin
// watches the process and health-checks it every few seconds, and when it
// exits or stops answering builds a new client (go-plugin clients cannot
// be restarted) after an exponential backoff of 100ms doubling up to 30s.
//
// The MTA calls hooks through the Host by plugin name, each call bounded
// by the plugin's timeout. A call to a plugin that is down, crashes
// mid-call or times out returns promptly with an *Error wrapping
// ErrNotRunning or ErrTimeout, so the caller can apply the plugin's
// on_failure (inbound) or the encryption policy (outbound: a plugin that
// is down cannot handle anything).
//
//	h := pluginhost.New(cfg.Plugins, api, log, pluginhost.WithMaxMessageSize(max))
//	if err := h.Start(ctx); err != nil { … } // checksum mismatch or rejected config
//	defer h.Stop()
//	for _, name := range h.Inbound() {
//		v, repl, err := h.Inspect(ctx, name, env, body)
//	}
//	h.Emit(sdk.Event{Type: sdk.EventDelivered, …})
//
// Events go out asynchronously: Emit puts an event on a bounded queue per
// subscribed plugin and never blocks; a full queue drops the event with a
// log line. A queue's workers wait for the plugin to run and retry a
// failed delivery a few times with the same event ID.
//
// Plugin stderr goes to the Host's logger with the attribute plugin=NAME.
// Stop kills every plugin process; the daemon should also defer
// hostside.KillAll() so that a panic leaves no orphans.
package pluginhost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/sdk"
)

// HostAPI is what the MTA offers plugins: the queue. The daemon implements
// it over the real queue.
type HostAPI interface {
	// Submit queues a new message from a plugin and returns its queue id
	// once it is on disk. idempotencyKey is "PLUGIN:KEY" (the plugin's
	// key, prefixed with its name): a key seen before returns the earlier
	// queue id (with ErrDuplicate, or nil) and queues nothing. body need
	// not be read to the end on a duplicate.
	Submit(ctx context.Context, env *sdk.Envelope, body io.Reader, idempotencyKey string) (queueID string, err error)
	// Confirm settles a recipient that plugin diverted with pending =
	// true: outcome "delivered" or "failed" (then bounce with reason).
	// The implementation checks that rcpt of queueID is pending for that
	// plugin.
	Confirm(ctx context.Context, plugin, queueID, rcpt, outcome, reason string) error
}

// ErrDuplicate may be returned by HostAPI.Submit, with the earlier queue
// id, for a known idempotency key; the plugin then learns that nothing new
// was queued.
var ErrDuplicate = errors.New("duplicate submission")

// Errors of hook calls, tested with errors.Is on an *Error.
var (
	// ErrUnknownPlugin: no [[plugin]] has that name.
	ErrUnknownPlugin = errors.New("no such plugin")
	// ErrNotRunning: the plugin is starting, crashed (also during the
	// call), disabled or stopped.
	ErrNotRunning = errors.New("plugin not running")
	// ErrTimeout: the call took longer than the plugin's timeout.
	ErrTimeout = errors.New("plugin timed out")
	// ErrChecksum: the binary does not match the configured sha256.
	ErrChecksum = errors.New("plugin binary does not match its sha256")
)

// Error is the error of a hook call.
type Error struct {
	Plugin string
	Hook   string // "Inspect", "CanHandle", "Transform", "DeliverEvent"
	// Kind is ErrUnknownPlugin, ErrNotRunning, ErrTimeout or nil (the
	// plugin answered with an error or broke the protocol).
	Kind error
	// Err is the underlying error, often a *hostside.Error.
	Err error
	// Detail is the message.
	Detail string
	// NotCalled: the plugin was not called at all (unknown, or not
	// running when the call was to start), so it did nothing.
	NotCalled bool
}

func (e *Error) Error() string { return fmt.Sprintf("plugin %s: %s: %s", e.Plugin, e.Hook, e.Detail) }

// Unwrap gives Kind and Err.
func (e *Error) Unwrap() []error {
	var out []error
	if e.Kind != nil {
		out = append(out, e.Kind)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// States of a plugin.
const (
	StateStarting = "starting" // being started (at boot or after a crash)
	StateRunning  = "running"
	StateCrashed  = "crashed"  // down; a restart is scheduled
	StateDisabled = "disabled" // checksum mismatch or config rejected: not retried
	StateStopped  = "stopped"  // after Stop
)

// PluginStatus is one plugin's state, for `posthorn plugin list`.
type PluginStatus struct {
	Name    string
	Path    string
	State   string
	Version string     // from Describe; "" before the first start
	Hooks   []sdk.Hook // from Describe
	Events  []string   // event subscriptions
	// Restarts counts starts after the first attempt.
	Restarts  int
	LastError string
	Pid       int // 0 when not running
	// Since is when the plugin entered its state.
	Since time.Time
	// EventsDropped counts events dropped because its queue was full.
	EventsDropped int64
}

// Option tunes a Host.
type Option func(*options)

type options struct {
	maxMessageSize int64
	socketDir      string
	health         time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration
	eventQueue     int
	eventWorkers   int
	eventAttempts  int
	startTimeout   time.Duration
	database       *sdk.Database
	dnsResolver    string
}

// WithDatabase hands the shared [database] to every plugin at Configure
// (protocol minor 3); an empty DSN hands none.
func WithDatabase(d conf.Database) Option {
	return func(o *options) {
		o.database = nil
		if d.DSN != "" {
			o.database = &sdk.Database{DSN: d.DSN, MaxConns: d.MaxConns, TLS: d.TLS, CAFile: d.CAFile}
		}
	}
}

// WithDNSResolver hands the host's DNS resolver ("HOST:PORT") to every
// plugin at Configure, so that plugins look names up where the MTA does.
func WithDNSResolver(addr string) Option { return func(o *options) { o.dnsResolver = addr } }

// WithMaxMessageSize limits what plugins may hand back (replacements,
// transformed outputs, submissions); use [smtp] max_message_size.
func WithMaxMessageSize(n int64) Option { return func(o *options) { o.maxMessageSize = n } }

// WithSocketDir is where plugins create their unix sockets; keep the path
// short (under ~60 bytes). Default: the system's temporary directory.
func WithSocketDir(dir string) Option { return func(o *options) { o.socketDir = dir } }

// WithHealthInterval sets how often running plugins are pinged (default
// 5s). Exited processes are noticed within a fraction of a second anyway.
func WithHealthInterval(d time.Duration) Option { return func(o *options) { o.health = d } }

// WithBackoff sets the restart backoff: min doubling up to max (default
// 100ms to 30s).
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.minBackoff, o.maxBackoff = min, max }
}

// WithEventQueue sets the per-plugin event queue length (default 1024)
// and the number of concurrent deliveries per plugin (default 4).
func WithEventQueue(length, workers int) Option {
	return func(o *options) { o.eventQueue, o.eventWorkers = length, workers }
}

// Host runs and supervises the configured plugins. Its methods are safe
// for concurrent use.
type Host struct {
	api  HostAPI
	log  *slog.Logger
	opts options

	mu      sync.RWMutex // guards plugins and byName (Reconfigure replaces them)
	plugins []*plugin
	byName  map[string]*plugin
	reMu    sync.Mutex // one Reconfigure at a time

	stopOnce sync.Once
	stop     chan struct{}
	wg       sync.WaitGroup
	startMu  sync.Mutex
	started  bool

	// maxSize is max_message_size now (SetMaxMessageSize); each plugin
	// was started with its own (plugin.maxSize).
	maxSize atomic.Int64
}

// SetMaxMessageSize changes what plugins may hand back (a reload of
// max_message_size): the next Reconfigure restarts the plugins that were
// started with another limit.
func (h *Host) SetMaxMessageSize(n int64) { h.maxSize.Store(n) }

// New returns a Host for the configured plugins; nothing runs before
// Start. api may be nil in tests (Submit and Confirm then fail).
func New(cfg []conf.Plugin, api HostAPI, log *slog.Logger, opts ...Option) *Host {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Host{
		api:    api,
		log:    log,
		byName: map[string]*plugin{},
		stop:   make(chan struct{}),
		opts: options{
			health: 5 * time.Second, minBackoff: 100 * time.Millisecond, maxBackoff: 30 * time.Second,
			eventQueue: 1024, eventWorkers: 4, eventAttempts: 5, startTimeout: 20 * time.Second,
		},
	}
	for _, o := range opts {
		o(&h.opts)
	}
	h.maxSize.Store(h.opts.maxMessageSize)
	for _, c := range cfg {
		p := h.newPlugin(c)
		h.plugins = append(h.plugins, p)
		h.byName[c.Name] = p
	}
	return h
}

func (h *Host) newPlugin(c conf.Plugin) *plugin {
	c = normalise(c)
	return &plugin{
		h:       h,
		cfg:     c,
		maxSize: h.maxSize.Load(),
		log:     h.log.With("plugin", c.Name),
		state:   StateStarting,
		since:   time.Now(),
		up:      make(chan struct{}),
		wake:    make(chan struct{}, 1),
		events:  make(chan sdk.Event, max(h.opts.eventQueue, 1)),
		quit:    make(chan struct{}),
	}
}

func normalise(c conf.Plugin) conf.Plugin {
	if c.Timeout <= 0 {
		c.Timeout = conf.Duration(conf.DefaultPluginTimeout)
	}
	return c
}

// list is the current plugins, in config order.
func (h *Host) list() []*plugin {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.plugins
}

func (h *Host) lookup(name string) *plugin {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.byName[name]
}

// run starts p's supervisor and event workers.
func (h *Host) run(p *plugin) {
	h.wg.Add(1 + h.opts.eventWorkers)
	go p.supervise()
	for range h.opts.eventWorkers {
		go p.dispatch()
	}
}

// Changes returns which of cfg would start anew on Reconfigure: plugins
// that are new, whose settings changed, or whose binary changed on disk.
// It checks those binaries first (present, matching a pinned sha256), so
// that a reload can be refused before anything changes.
func (h *Host) Changes(cfg []conf.Plugin) (changed []string, err error) {
	var errs []error
	for _, c := range cfg {
		c = normalise(c)
		p := h.lookup(c.Name)
		sum, verr := VerifyBinary(c)
		if verr != nil {
			errs = append(errs, verr)
			continue
		}
		if p == nil || !reflect.DeepEqual(p.cfg, c) || p.maxSize != h.maxSize.Load() {
			changed = append(changed, c.Name)
			continue
		}
		p.mu.Lock()
		old := p.binSum
		p.mu.Unlock()
		if old != "" && old != sum {
			changed = append(changed, c.Name)
		}
	}
	return changed, errors.Join(errs...)
}

// Reconfigure makes the running plugins those of cfg (a reload): a
// plugin whose settings and binary are unchanged keeps running; one that
// is new, changed or whose binary changed is started (a changed one after
// its old process is stopped: it may hold a port or files); one no longer
// configured is stopped. Events queued for a plugin that is restarted are
// dropped. It returns the names started or restarted, and like Start an
// error for plugins that will not be retried.
func (h *Host) Reconfigure(ctx context.Context, cfg []conf.Plugin) ([]string, error) {
	h.reMu.Lock()
	defer h.reMu.Unlock()
	changed, err := h.Changes(cfg)
	if err != nil {
		return nil, err
	}
	restart := map[string]bool{}
	for _, n := range changed {
		restart[n] = true
	}
	h.mu.RLock()
	old := h.byName
	h.mu.RUnlock()
	var next, fresh []*plugin
	byName := map[string]*plugin{}
	for _, c := range cfg {
		p := old[c.Name]
		if p != nil && restart[c.Name] {
			metrics.PluginRestarts.WithLabelValues(c.Name).Inc()
		}
		if p == nil || restart[c.Name] {
			p = h.newPlugin(c)
			fresh = append(fresh, p)
		}
		next = append(next, p)
		byName[c.Name] = p
	}
	var retired []*plugin
	for name, p := range old {
		if byName[name] != p {
			retired = append(retired, p)
		}
	}
	h.mu.Lock()
	h.plugins, h.byName = next, byName
	h.mu.Unlock()
	for _, p := range retired {
		p.retire()
	}
	for _, p := range retired {
		p.shutdown()
		p.log.Info("plugin stopped for reload")
	}
	if h.stopped() {
		return nil, ErrNotRunning
	}
	errs := make([]error, len(fresh))
	var wg sync.WaitGroup
	for i, p := range fresh {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.start(ctx); err != nil && p.status().State == StateDisabled {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	for _, p := range fresh {
		h.run(p)
	}
	names := make([]string, len(fresh))
	for i, p := range fresh {
		names[i] = p.cfg.Name
	}
	return names, errors.Join(errs...)
}

// Start starts every plugin once, in parallel, then supervises them. A
// plugin that fails to start is logged and retried in the background;
// Start returns an error only for plugins that will not be retried: a
// checksum mismatch or a configuration the plugin rejects. The other
// plugins run either way.
func (h *Host) Start(ctx context.Context) error {
	h.startMu.Lock()
	defer h.startMu.Unlock()
	if h.started {
		return errors.New("pluginhost: Start called twice")
	}
	h.started = true
	plugins := h.list()
	errs := make([]error, len(plugins))
	var wg sync.WaitGroup
	for i, p := range plugins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.start(ctx); err != nil && p.status().State == StateDisabled {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	for _, p := range plugins {
		h.run(p)
	}
	return errors.Join(errs...)
}

// Stop stops supervising and kills every plugin process, waiting until
// they are gone. Events still queued are dropped.
func (h *Host) Stop() {
	h.stopOnce.Do(func() { close(h.stop) })
	h.reMu.Lock() // a reload in progress finishes first
	defer h.reMu.Unlock()
	for _, p := range h.list() {
		p.retire()
	}
	h.startMu.Lock()
	started := h.started
	h.startMu.Unlock()
	if started {
		h.wg.Wait()
	}
	for _, p := range h.list() {
		p.shutdown()
	}
}

func (h *Host) stopped() bool {
	select {
	case <-h.stop:
		return true
	default:
		return false
	}
}

// Inbound returns, in config order, the plugins that serve the inbound
// hook, whatever their state — a plugin that is down must still be asked
// so that its on_failure applies. A plugin that has never started (its
// hooks are unknown) is included too, for the same reason.
func (h *Host) Inbound() []string {
	var out []string
	for _, p := range h.list() {
		p.mu.Lock()
		info := p.info
		p.mu.Unlock()
		if info == nil || info.Has(sdk.HookInbound) {
			out = append(out, p.cfg.Name)
		}
	}
	return out
}

// InboundFilter returns the named plugin's inbound filter as last
// declared (Describe, or Configure's answer), kept while the plugin is
// down, so that a host can tell which mail the plugin would have seen.
// known is false before the plugin first ran: then it must be assumed to
// want every message.
func (h *Host) InboundFilter(name string) (f *sdk.InboundFilter, known bool) {
	p := h.byName[name]
	if p == nil {
		return nil, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.info == nil {
		return nil, false
	}
	return p.info.InboundFilter, true
}

// Plugin returns the configuration of the named plugin (its on_failure,
// timeout…), or nil.
func (h *Host) Plugin(name string) *conf.Plugin {
	if p := h.lookup(name); p != nil {
		c := p.cfg
		return &c
	}
	return nil
}

// Status returns every plugin's state, in config order.
func (h *Host) Status() []PluginStatus {
	plugins := h.list()
	out := make([]PluginStatus, 0, len(plugins))
	for _, p := range plugins {
		out = append(out, p.status())
	}
	return out
}

// Emit sends an event to every plugin subscribed to its type, without
// blocking: each plugin has a bounded queue, and an event that does not
// fit is dropped with a log line. An empty ID is assigned, a zero Time
// set to now.
func (h *Host) Emit(ev sdk.Event) {
	if ev.ID == "" {
		ev.ID = newID()
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if h.stopped() {
		return
	}
	for _, p := range h.list() {
		p.mu.Lock()
		info := p.info
		p.mu.Unlock()
		if info == nil || !info.Has(sdk.HookEvents) || !sdk.MatchEventType(info.EventTypes, ev.Type) {
			continue
		}
		select {
		case p.events <- ev:
		default:
			n := p.dropped.Add(1)
			p.log.Warn("plugin event queue full: event dropped", "event_id", ev.ID, "event_type", ev.Type, "dropped_total", n)
		}
	}
}

// newID returns a random event id.
func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// configJSON is the plugin's [plugin.config] as JSON.
func configJSON(c conf.PluginConfig) ([]byte, error) {
	if c == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]any(c))
}
