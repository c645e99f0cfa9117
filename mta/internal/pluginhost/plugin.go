package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
)

// plugin is one [[plugin]] and its current process.
type plugin struct {
	h       *Host
	cfg     conf.Plugin
	log     *slog.Logger
	maxSize int64 // max_message_size it was started with

	mu       sync.Mutex
	client   *hostside.Client // nil when not running
	info     *hostside.Info   // last known description; kept while down
	state    string
	since    time.Time
	started  time.Time // when the current process started
	restarts int
	attempts int // start attempts so far
	lastErr  string
	up       chan struct{} // closed while running

	wake    chan struct{} // a call saw the plugin fail: check now
	events  chan sdk.Event
	dropped atomic.Int64

	// quit is closed when the host stops or a reload retires this
	// plugin; its goroutines end and its process is killed.
	quit     chan struct{}
	quitOnce sync.Once
	// binSum is the SHA-256 of the binary last started, so that a
	// reload can tell whether it changed on disk.
	binSum string
}

func (p *plugin) retire() { p.quitOnce.Do(func() { close(p.quit) }) }

func (p *plugin) stopped() bool {
	select {
	case <-p.quit:
		return true
	default:
		return false
	}
}

// fileSHA256 is the hex SHA-256 of the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

func (p *plugin) status() PluginStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PluginStatus{
		Name: p.cfg.Name, Path: p.cfg.Path, State: p.state, Restarts: p.restarts,
		LastError: p.lastErr, Since: p.since, EventsDropped: p.dropped.Load(),
	}
	if p.info != nil {
		st.Version = p.info.Version
		st.Hooks = append(st.Hooks, p.info.Hooks...)
		st.Events = append(st.Events, p.info.EventTypes...)
	}
	if p.client != nil {
		st.Pid = p.client.Pid()
	}
	return st
}

func (p *plugin) setState(state string, err error) {
	if p.state != state {
		p.since = time.Now()
	}
	p.state = state
	if err != nil {
		p.lastErr = err.Error()
	}
}

// verify checks the binary against the configured sha256 and returns
// its SHA-256.
func (p *plugin) verify() (string, error) {
	return VerifyBinary(p.cfg)
}

// VerifyBinary checks that c's binary is there and, when c pins it,
// that it has the configured SHA-256 (an error wrapping ErrChecksum
// otherwise). It returns the binary's SHA-256.
func VerifyBinary(c conf.Plugin) (string, error) {
	got, err := fileSHA256(c.Path)
	if err != nil {
		return "", fmt.Errorf("plugin %s: %w", c.Name, err)
	}
	if c.SHA256 != "" && got != c.SHA256 {
		return got, fmt.Errorf("plugin %s: %s has SHA-256 %s, configured sha256 is %s: %w", c.Name, c.Path, got, c.SHA256, ErrChecksum)
	}
	return got, nil
}

// start starts a new process, describes and configures it. On success the
// plugin is running; on failure it is crashed (retried) or disabled.
func (p *plugin) start(ctx context.Context) error {
	p.mu.Lock()
	p.attempts++
	first := p.attempts == 1
	p.setState(StateStarting, nil)
	p.mu.Unlock()

	c, info, err := p.dial(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		var ce *sdk.ConfigError
		if errors.Is(err, ErrChecksum) || errors.As(err, &ce) {
			p.setState(StateDisabled, err)
			p.log.Error("plugin disabled", "error", err)
		} else {
			p.setState(StateCrashed, err)
			p.log.Error("plugin failed to start; will retry", "error", err)
		}
		return err
	}
	if p.stopped() {
		go kill(c, 2*time.Second)
		p.setState(StateStopped, nil)
		return ErrNotRunning
	}
	p.client, p.info = c, info
	p.started = time.Now()
	if !first {
		p.restarts++
		metrics.PluginRestarts.WithLabelValues(p.cfg.Name).Inc()
	}
	metrics.PluginUp.WithLabelValues(p.cfg.Name).Set(1)
	p.setState(StateRunning, nil)
	close(p.up)
	p.log.Info("plugin running", "version", info.Version, "hooks", info.Hooks, "events", info.EventTypes,
		"pid", c.Pid(), "restarts", p.restarts)
	return nil
}

func (p *plugin) dial(ctx context.Context) (*hostside.Client, *hostside.Info, error) {
	sum, err := p.verify()
	if err != nil {
		return nil, nil, err
	}
	p.mu.Lock()
	p.binSum = sum
	p.mu.Unlock()
	cfgJSON, err := configJSON(p.cfg.Config)
	if err != nil {
		return nil, nil, fmt.Errorf("plugin %s: config: %w", p.cfg.Name, err)
	}
	if p.cfg.DataDir != "" {
		if err := os.MkdirAll(p.cfg.DataDir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("plugin %s: data_dir: %w", p.cfg.Name, err)
		}
	}
	c, err := hostside.Dial(p.cfg.Path, hostside.Options{
		Name:           p.cfg.Name,
		SHA256:         p.cfg.SHA256,
		Logger:         p.h.log,
		StartTimeout:   p.h.opts.startTimeout,
		MaxMessageSize: p.maxSize,
		SocketDir:      p.h.opts.socketDir,
		Database:       p.h.opts.database,
		DNSResolver:    p.h.opts.dnsResolver,
	})
	if err != nil {
		return nil, nil, err
	}
	timeout := p.cfg.Timeout.D()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	info, err := c.Describe(cctx)
	if err == nil {
		err = c.Configure(cctx, cfgJSON, p.cfg.DataDir, &hostServer{h: p.h, name: p.cfg.Name})
	}
	if err != nil {
		kill(c, 2*time.Second)
		return nil, nil, err
	}
	// The filter its configuration gave it, if any, replaces Describe's.
	eff := *info
	eff.InboundFilter = c.InboundFilter()
	return c, &eff, nil
}

// down marks a running plugin as crashed and kills its process.
func (p *plugin) down(c *hostside.Client, why error) {
	p.mu.Lock()
	if p.client != c {
		p.mu.Unlock()
		return
	}
	p.client = nil
	p.up = make(chan struct{})
	p.setState(StateCrashed, why)
	metrics.PluginUp.WithLabelValues(p.cfg.Name).Set(0)
	p.mu.Unlock()
	p.log.Error("plugin down; restarting", "error", why)
	kill(c, 0)
}

// kill stops a plugin process: go-plugin's graceful Kill first when grace
// > 0, SIGKILL when that does not end it within grace. go-plugin's Kill
// alone blocks for ever on a process that is alive but frozen (its
// shutdown RPC waits for the process to exit), so the process is killed
// by pid — unless it has exited already (its pid may be reused).
func kill(c *hostside.Client, grace time.Duration) {
	pid := c.Pid()
	done := make(chan struct{})
	go func() {
		c.Kill()
		close(done)
	}()
	if grace > 0 {
		select {
		case <-done:
			return
		case <-time.After(grace):
		}
	}
	if pid > 0 && !c.Exited() {
		if proc, err := os.FindProcess(pid); err == nil {
			_ = proc.Kill()
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// shutdown kills the process for good (Stop).
func (p *plugin) shutdown() {
	p.mu.Lock()
	c := p.client
	p.client = nil
	if p.state == StateRunning {
		p.up = make(chan struct{})
	}
	p.setState(StateStopped, nil)
	p.mu.Unlock()
	metrics.PluginUp.WithLabelValues(p.cfg.Name).Set(0)
	if c != nil {
		kill(c, 3*time.Second)
	}
}

// supervise restarts the plugin whenever it is down, with backoff, and
// watches it while it runs.
func (p *plugin) supervise() {
	defer p.h.wg.Done()
	defer p.shutdown()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	o := p.h.opts
	backoff := o.minBackoff
	for {
		p.mu.Lock()
		c, state := p.client, p.state
		p.mu.Unlock()
		switch {
		case state == StateDisabled:
			<-p.quit
			return
		case c == nil:
			select {
			case <-p.quit:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, o.maxBackoff)
			_ = p.start(ctx) // logged there
			continue
		}
		if !p.watch(c) {
			return
		}
		p.mu.Lock()
		ranFor := time.Since(p.started)
		p.mu.Unlock()
		if ranFor > time.Minute { // not a crash loop: restart quickly
			backoff = o.minBackoff
		}
	}
}

// watch returns when c is down (true) or the host stops (false).
func (p *plugin) watch(c *hostside.Client) bool {
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	lastPing := time.Now()
	for {
		check := false
		select {
		case <-p.quit:
			return false
		case <-p.wake:
			check = true
		case <-poll.C:
			check = time.Since(lastPing) >= p.h.opts.health
		}
		if c.Exited() {
			p.down(c, errors.New("plugin process exited"))
			return true
		}
		if check {
			lastPing = time.Now()
			if err := ping(c, min(p.h.opts.health, 10*time.Second)); err != nil {
				p.down(c, fmt.Errorf("health check failed: %w", err))
				return true
			}
		}
	}
}

func ping(c *hostside.Client, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- c.Ping() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("no answer within %v", timeout)
	}
}

// acquire returns the running client, or an *Error.
func (h *Host) acquire(name, hook string) (*plugin, *hostside.Client, error) {
	p := h.lookup(name)
	if p == nil {
		return nil, nil, &Error{Plugin: name, Hook: hook, Kind: ErrUnknownPlugin, Detail: "no such plugin", NotCalled: true}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		d := "not running (" + p.state
		if p.lastErr != "" {
			d += ": " + p.lastErr
		}
		return nil, nil, &Error{Plugin: name, Hook: hook, Kind: ErrNotRunning, Detail: d + ")", NotCalled: true}
	}
	return p, p.client, nil
}

// callErr classifies the error of a call made with a context derived from
// parent and bounded by the plugin's timeout.
func (p *plugin) callErr(parent context.Context, hook string, c *hostside.Client, err error) error {
	var already *Error
	if err == nil || errors.As(err, &already) {
		return err
	}
	e := &Error{Plugin: p.cfg.Name, Hook: hook, Err: err, Detail: err.Error()}
	var he *hostside.Error
	if errors.As(err, &he) {
		e.Detail = he.Err.Error()
	}
	switch {
	case errors.Is(err, hostside.ErrUnavailable) || c.Exited():
		e.Kind, e.Detail = ErrNotRunning, "plugin crashed or went away during the call: "+e.Detail
		select {
		case p.wake <- struct{}{}:
		default:
		}
	case errors.Is(err, context.DeadlineExceeded) && parent.Err() == nil:
		e.Kind, e.Detail = ErrTimeout, fmt.Sprintf("timed out after %v", p.cfg.Timeout)
	}
	return e
}

// dispatch delivers queued events, waiting for the plugin to run and
// retrying failures with the same event ID.
func (p *plugin) dispatch() {
	defer p.h.wg.Done()
	for {
		select {
		case <-p.quit:
			return
		case ev := <-p.events:
			p.deliver(ev)
		}
	}
}

func (p *plugin) deliver(ev sdk.Event) {
	wait := 200 * time.Millisecond
	var err error
	for attempt := 1; attempt <= p.h.opts.eventAttempts; attempt++ {
		p.mu.Lock()
		up := p.up
		p.mu.Unlock()
		select {
		case <-p.quit:
			return
		case <-up:
		}
		err = p.h.DeliverEvent(context.Background(), p.cfg.Name, ev)
		if err == nil || errors.Is(err, hostside.ErrNotImplemented) || errors.Is(err, ErrUnknownPlugin) {
			break
		}
		p.log.Warn("event delivery failed", "event_id", ev.ID, "event_type", ev.Type, "attempt", attempt, "error", err)
		select {
		case <-p.quit:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
	if err != nil {
		p.log.Error("event not delivered", "event_id", ev.ID, "event_type", ev.Type, "error", err)
	}
}
