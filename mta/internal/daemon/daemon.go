// Package daemon is `posthorn serve`: it opens the queue (recovering what
// is on disk), loads TLS and users, starts the SMTP listeners, the delivery
// workers, the control socket and the metrics endpoint, and stops them in
// order: listeners first (no new 250s), then workers (leases released),
// then the queue.
package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/authres"
	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/database"
	"github.com/posthorn/posthorn/mta/internal/delivery"
	"github.com/posthorn/posthorn/mta/internal/directory"
	"github.com/posthorn/posthorn/mta/internal/dkim"
	"github.com/posthorn/posthorn/mta/internal/maildir"
	"github.com/posthorn/posthorn/mta/internal/maildrop"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/mta/internal/milter"
	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/pluginhost"
	"github.com/posthorn/posthorn/mta/internal/policychain"
	"github.com/posthorn/posthorn/mta/internal/remote"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/mta/internal/selfservice"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/mta/internal/stspub"
	"github.com/posthorn/posthorn/mta/internal/tlsrpt"
	"github.com/posthorn/posthorn/mta/internal/tlsutil"
	"github.com/posthorn/posthorn/queue"
)

// Daemon is a running posthorn.
type Daemon struct {
	// cfg is the config the daemon started with (for what a reload
	// cannot change); what a reload may change is in gen.
	cfg        *conf.Config
	opt        Options
	log        *slog.Logger
	Queue      *queue.Queue
	Router     *liveRouter
	dir        *directory.Directory // the database directory, shared by generations
	plugins    *pluginhost.Host
	hostAPI    *hostAPI
	encryption *delivery.Encryption
	workers    *delivery.Workers
	control    *control.Server
	tmpDir     string

	gen   atomic.Pointer[generation]
	ready atomic.Bool

	// guard bounds and throttles AUTH across listeners and reloads; its
	// limits are those of the config at start.
	guard     *smtpd.AuthGuard
	freeSpace func() (uint64, error) // of the spool

	// reloadMu serialises Reload and Shutdown and guards what follows.
	reloadMu    sync.Mutex
	sockets     map[smtpd.Kind]*socket
	admin       *webServer          // nil: off
	self        *webServer          // nil: off
	selfPage    *selfservice.Server // its handler (the sessions live there)
	drainingWeb []*webServer
	// sessions counts each kind's SMTP sessions for the limits, shared
	// by the listeners of every generation (a draining one included).
	sessions    map[smtpd.Kind]*smtpd.SessionCount
	draining    []*smtpd.Listener
	retired     []func()
	metrics     *http.Server
	metricsLn   net.Listener
	metricsAddr string
	metricsProf bool
	stsPub      *stspub.Server
	stsKey      string
	shut        bool

	pickupMu sync.Mutex

	// shared is the PostgreSQL database of [database] (nil without one):
	// TLS-RPT records and Host.Submit keys live there, shared by nodes.
	shared *sql.DB

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// generation is everything built from one config: a reload builds a new
// one beside the running one and switches over only when all of it
// could be built. Sessions and deliveries in progress finish with the
// generation they started with.
type generation struct {
	cfg       *conf.Config
	router    *router.Router
	users     smtpd.Authenticator
	cert      tls.Certificate
	tlsConf   *tls.Config
	resolver  *resolver.Resolver
	remote    *remote.Transport
	sts       *mtasts.Fetcher
	rpt       *tlsrpt.Recorder
	chain     *policychain.Chain // nil: no encryption stage
	signer    delivery.SignFunc
	acc       *acceptor
	listeners []*smtpd.Listener
	views     []net.Listener     // listeners[i] accepts from views[i]
	served    []chan struct{}    // closed when listeners[i].Serve returned
	cancel    context.CancelFunc // stops the generation's loops

	// milters for the MX listener, submission(s), local submissions
	mxMilters, subMilters, localMilters *milter.Chain
}

// close releases what a generation holds (not its listeners).
func (g *generation) close() {
	if g.cancel != nil {
		g.cancel()
	}
	if g.remote != nil {
		g.remote.Close()
	}
	if g.rpt != nil {
		g.rpt.Close()
	}
}

// Options tune a daemon for tests and tools.
type Options struct {
	// Now replaces the clock of the queue and the workers.
	Now func() time.Time
	// AuthFailDelay overrides the pause after a failed AUTH.
	AuthFailDelay time.Duration
	// ConfigPath is the file ReloadFile reads again; "" is the embedded
	// default.
	ConfigPath string
	// BaseDir is where relative paths of the embedded default resolve
	// (posthorn -d); "" is the current directory.
	BaseDir string
	// LogLevel, if set, is the level of the daemon's logger; a reload
	// sets it from [log] level.
	LogLevel *slog.LevelVar
	// FreeSpace replaces the probe of the spool's free space.
	FreeSpace func() (uint64, error)
}

// Start brings a daemon up. On error, everything started so far is stopped.
func Start(cfg *conf.Config, log *slog.Logger, opt Options) (d *Daemon, err error) {
	d = &Daemon{cfg: cfg, log: log, opt: opt, sockets: map[smtpd.Kind]*socket{},
		sessions: map[smtpd.Kind]*smtpd.SessionCount{}}
	d.Router = &liveRouter{d: d}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			d.Shutdown(context.Background())
			d = nil
		}
	}()
	// First, before other directories under the same parent are made
	// private: sendmail of every user must reach the drop directory.
	if dir := cfg.Queue.Maildrop; dir != "" {
		if err := maildrop.Prepare(dir); err != nil {
			return d, fmt.Errorf("queue.maildrop: %w", err)
		}
	}
	q, err := queue.Open(queue.Options{
		Dir:         cfg.Queue.Dir,
		MinBackoff:  cfg.Queue.MinBackoff.D(),
		MaxBackoff:  cfg.Queue.MaxBackoff.D(),
		MaxLifetime: cfg.Queue.MaxLifetime.D(),
		Now:         opt.Now,
		Logger:      log.With("component", "queue"),
	})
	if err != nil {
		return d, fmt.Errorf("queue %s: %w", cfg.Queue.Dir, err)
	}
	d.Queue = q
	d.tmpDir = filepath.Join(cfg.Queue.Dir, "incoming")
	if err := os.MkdirAll(d.tmpDir, 0o700); err != nil {
		return d, err
	}
	d.guard = smtpd.NewAuthGuard(smtpd.GuardConfig{
		MaxConcurrent: cfg.Auth.MaxConcurrentChecks, MaxFailuresPerIP: cfg.Auth.MaxFailuresPerIP,
		MaxFailuresPerAccount: cfg.Auth.MaxFailuresPerAccount,
		Window:                cfg.Auth.FailureWindow.D(), BlockTime: cfg.Auth.BlockTime.D(),
	})
	d.freeSpace = opt.FreeSpace
	if d.freeSpace == nil {
		spool := cfg.Queue.Dir
		d.freeSpace = (&spaceProbe{probe: func() (uint64, error) { return diskFree(spool) }, now: time.Now}).free
	}

	if cfg.Database.DSN != "" {
		if d.shared, _, err = database.OpenPostgres(d.ctx, cfg.Database); err != nil {
			return d, err
		}
		// AUTH failures count across the nodes.
		gs, err := newSharedGuard(d.ctx, d.shared)
		if err != nil {
			return d, err
		}
		d.guard.SetStore(gs)
	}
	g, err := d.build(cfg)
	if err != nil {
		return d, err
	}
	d.gen.Store(g)
	if err := d.openListeners(g, nil); err != nil {
		return d, err
	}

	if cfg.Control.Socket != "" {
		cs, err := control.Listen(cfg.Control.Socket, q, log.With("component", "control"))
		if err != nil {
			return d, err
		}
		cs.Submit = d.submit
		cs.Extra["plugins"] = d.pluginStatus
		cs.Extra["reload"] = d.reloadCommand
		cs.Commands = map[string]func(control.Request) (json.RawMessage, error){
			"tls-report": func(req control.Request) (json.RawMessage, error) { return tlsReportNow(d.gen.Load().rpt, req.Day) },
		}
		d.controlCommands(cs)
		d.control = cs
	}
	adminPlan, selfPlan, err := d.webPlans(g)
	if err != nil {
		return d, err
	}
	d.switchWeb(g, adminPlan, selfPlan)
	if err := d.startSTSPub(g); err != nil {
		return d, err
	}
	if err := d.startMetrics(cfg.Metrics); err != nil {
		return d, err
	}

	api, err := newHostAPI(d)
	if err != nil {
		return d, fmt.Errorf("plugin submissions: %w", err)
	}
	d.hostAPI = api
	d.plugins = pluginhost.New(cfg.Plugins, api, log.With("component", "plugins"),
		pluginhost.WithMaxMessageSize(cfg.SMTP.MaxMessageSize.Bytes()), pluginhost.WithDatabase(cfg.Database),
		pluginhost.WithDNSResolver(g.resolver.Server()))
	if err := d.plugins.Start(context.Background()); err != nil {
		return d, err
	}
	d.encryption = &delivery.Encryption{Chain: g.chain, Plugins: d.plugins, SpoolDir: filepath.Join(cfg.Queue.Dir, "outgoing"),
		Logger: log.With("component", "encryption"), Queue: q}
	if err := os.MkdirAll(d.encryption.SpoolDir, 0o700); err != nil {
		return d, err
	}

	if err := d.startMaildrop(); err != nil {
		return d, err
	}
	d.workers = delivery.New(q, d.workerOptions(g))
	d.goRun(func() { d.workers.Run(d.ctx, cfg.Queue.Workers) })
	d.goRun(func() { d.gauges(d.ctx) })
	d.startLoops(g)
	d.serveListeners(g)
	if d.control != nil {
		d.goRun(func() { d.control.Serve() })
	}
	d.ready.Store(true)
	log.Info("posthorn started", "hostname", cfg.Hostname, "queue", cfg.Queue.Dir, "workers", cfg.Queue.Workers)
	for _, w := range cfg.Warnings() {
		log.Warn("config warning (posthorn check)", "warning", w)
	}
	return d, nil
}

// build makes a generation from cfg: users, router, DNS, DKIM keys, the
// certificate, the outbound transport with MTA-STS and TLS-RPT, and the
// encryption chain. It starts nothing and binds nothing.
func (d *Daemon) build(cfg *conf.Config) (g *generation, err error) {
	g = &generation{cfg: cfg}
	defer func() {
		if err != nil {
			g.close()
			g = nil
		}
	}()
	if g.router, g.users, err = d.directoryFor(cfg); err != nil {
		return g, err
	}
	if g.resolver, err = newResolver(cfg); err != nil {
		return g, fmt.Errorf("dns: %w", err)
	}
	g.acc = &acceptor{d: d, tmpDir: d.tmpDir, authID: cfg.Hostname, enforce: cfg.AuthRes.DMARCEnforce,
		timeout: cfg.AuthRes.Timeout.D()}
	g.milterChains(d.log.With("component", "milter"))
	if cfg.AuthRes.Enabled {
		g.acc.checker = authres.New(g.resolver, cfg.Hostname, authres.Options{Timeout: cfg.AuthRes.Timeout.D()})
	}
	if g.signer, err = loadDKIM(cfg); err != nil {
		return g, err
	}
	if g.cert, err = tlsutil.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.SelfSignedDir, cfg.Hostname); err != nil {
		return g, err
	}
	g.tlsConf = tlsutil.ServerConfig(g.cert)
	if len(cfg.Plugins) > 0 || len(cfg.Encryption.Rules) > 0 {
		if g.chain, err = policychain.New(cfg.Encryption, policychain.WebMailboxes(cfg.WebMailboxPlugins()...)); err != nil {
			return g, err
		}
	}
	if g.remote, err = remote.New(cfg, g.resolver, d.log.With("component", "remote")); err != nil {
		return g, err
	}
	if g.sts, err = newMTASTS(cfg, g.resolver, d.log.With("component", "mta-sts"), d.shared); err != nil {
		return g, err
	}
	if g.rpt, err = d.newTLSRPT(cfg, g.resolver); err != nil {
		return g, err
	}
	g.remote.SetEnforcement(g.sts, g.rpt, g.router)
	return g, nil
}

// listenerRoles says what each listener is for, in the startup lines.
var listenerRoles = map[smtpd.Kind]string{
	smtpd.MX:          "mail from the internet for local domains (STARTTLS, no AUTH; relay for client_networks)",
	smtpd.Submission:  "submission by users (STARTTLS, then AUTH required)",
	smtpd.Submissions: "submission by users over implicit TLS (AUTH required)",
}

// openListeners makes g's SMTP listeners, on the sockets of the running
// generation where the address is unchanged and on new sockets where it
// is new. Nothing is served yet. On error the new sockets are closed.
func (d *Daemon) openListeners(g *generation, old *generation) (err error) {
	cfg := g.cfg
	fresh := map[smtpd.Kind]*socket{}
	defer func() {
		if err != nil {
			for _, l := range g.listeners {
				l.Close()
			}
			g.listeners = nil
			for _, s := range fresh {
				s.close()
			}
		}
	}()
	for _, lc := range []struct {
		kind    smtpd.Kind
		addr    string
		milters *milter.Chain
	}{{smtpd.MX, cfg.SMTP.MX, g.mxMilters}, {smtpd.Submission, cfg.SMTP.Submission, g.subMilters},
		{smtpd.Submissions, cfg.SMTP.Submissions, g.subMilters}} {
		if lc.addr == "" {
			continue
		}
		s := d.sockets[lc.kind]
		if s == nil || s.addr != lc.addr {
			ln, err := net.Listen("tcp", lc.addr)
			if err != nil {
				return fmt.Errorf("%s listener on %s: %w", lc.kind, lc.addr, err)
			}
			s = newSocket(lc.addr, ln)
			fresh[lc.kind] = s
		}
		view := s.view()
		count := d.sessions[lc.kind]
		if count == nil {
			count = smtpd.NewSessionCount()
			d.sessions[lc.kind] = count
		}
		l, err := smtpd.Listen(smtpd.Config{
			Kind: lc.kind, Address: lc.addr, Hostname: cfg.Hostname, TLS: g.tlsConf,
			Limits: cfg.SMTP, Router: g.router, Users: g.users, Acceptor: g.acc,
			Logger: d.log.With("component", "smtpd"), AuthFailDelay: d.opt.AuthFailDelay,
			Listener: view, Milters: lc.milters,
			Guard: d.guard, Postmaster: postmaster(g), FreeSpace: d.freeSpace,
			MinFreeSpace: cfg.Queue.MinFreeSpace.Bytes(), Sessions: count,
		})
		if err != nil {
			return fmt.Errorf("%s listener on %s: %w", lc.kind, lc.addr, err)
		}
		g.listeners = append(g.listeners, l)
		g.views = append(g.views, view)
	}
	// Committed: sockets no longer configured close; their open sessions
	// go on (the old listeners drain them).
	for k, s := range d.sockets {
		if _, replaced := fresh[k]; replaced || !hasKind(g, k) {
			s.close()
			delete(d.sockets, k)
		}
	}
	for k, s := range fresh {
		d.sockets[k] = s
	}
	return nil
}

func hasKind(g *generation, k smtpd.Kind) bool {
	for _, l := range g.listeners {
		if l.Kind() == k {
			return true
		}
	}
	return false
}

func (d *Daemon) serveListeners(g *generation) {
	g.served = make([]chan struct{}, len(g.listeners))
	for i, l := range g.listeners {
		done := make(chan struct{})
		g.served[i] = done
		d.goRun(func() { l.Serve(); close(done) })
		d.log.Info("listening", "listener", l.Kind().String(), "address", l.Addr().String(), "role", listenerRoles[l.Kind()])
	}
}

// startLoops starts the generation's periodic jobs (MTA-STS refresh,
// TLS-RPT reports); they stop when it is replaced.
func (d *Daemon) startLoops(g *generation) {
	ctx, cancel := context.WithCancel(d.ctx)
	g.cancel = cancel
	if g.sts != nil {
		d.goRun(func() { g.sts.RefreshLoop(ctx) })
	}
	if g.rpt != nil {
		d.goRun(func() { g.rpt.DailyLoop(ctx) })
	}
	d.goRun(func() { d.cleanMaildirTmp(ctx, g.cfg) })
}

// postmaster is who gets double bounces.
func postmaster(g *generation) string {
	if g.cfg.Postmaster != "" {
		return g.cfg.Postmaster
	}
	if doms := localDomainNames(g); len(doms) > 0 {
		return "postmaster@" + doms[0]
	}
	return "postmaster"
}

func (d *Daemon) workerOptions(g *generation) delivery.Options {
	cfg := g.cfg
	var enc *delivery.Encryption
	if g.chain != nil {
		enc = d.encryption
	}
	return delivery.Options{
		Hostname:       cfg.Hostname,
		Postmaster:     postmaster(g),
		MaxLifetime:    cfg.Queue.MaxLifetime.D(),
		BounceLifetime: cfg.Queue.BounceLifetime.D(),
		Now:            d.opt.Now,
		Logger:         d.log.With("component", "delivery"),
		Router:         g.router,
		Local:          &delivery.LocalTransport{Router: g.router, Hostname: cfg.Hostname, Logger: d.log.With("component", "local")},
		Remote:         g.remote,
		DelayWarning:   cfg.Outbound.DelayWarning.D(),
		Sign:           g.signer,
		Encryption:     enc,
		Events:         d.plugins.Emit,
	}
}

// stsKey identifies what the MTA-STS policy server serves.
func stsKey(g *generation) string {
	c := g.cfg
	if c.MTASTS.ServeAddress == "" {
		return ""
	}
	doms := localDomainNames(g)
	sum := sha256.New()
	for _, der := range g.cert.Certificate {
		sum.Write(der)
	}
	return fmt.Sprint(c.MTASTS.ServeAddress, c.MTASTS.ServeMode, c.MTASTS.ServeMX, c.MTASTS.ServeMaxAge, doms, c.Hostname, sum.Sum(nil))
}

// startSTSPub (re)starts the MTA-STS policy server when what it serves
// changed.
func (d *Daemon) startSTSPub(g *generation) error {
	key := stsKey(g)
	if key == d.stsKey && (key == "") == (d.stsPub == nil) {
		return nil
	}
	if d.stsPub != nil {
		d.stsPub.Close()
		d.stsPub = nil
	}
	d.stsKey = ""
	cfg := g.cfg
	if key == "" {
		return nil
	}
	mx := cfg.MTASTS.ServeMX
	if len(mx) == 0 {
		mx = []string{cfg.Hostname}
	}
	p := stspub.Policy{Mode: cfg.MTASTS.ServeMode, MX: mx, MaxAge: cfg.MTASTS.ServeMaxAge.D()}
	doms := localDomainNames(g)
	for _, dm := range doms {
		d.log.Info("publishing MTA-STS policy", "domain", dm, "txt", p.TXT(dm), "mode", p.Mode)
	}
	pub, err := stspub.Listen(cfg.MTASTS.ServeAddress, g.cert, p, doms)
	if err != nil {
		return fmt.Errorf("mta_sts.serve_address: %w", err)
	}
	d.stsPub, d.stsKey = pub, key
	d.goRun(func() { pub.Serve() })
	return nil
}

// startMetrics (re)starts the metrics endpoint when its address or the
// pprof switch changed.
func (d *Daemon) startMetrics(mc conf.Metrics) error {
	addr := mc.Address
	if addr == d.metricsAddr && mc.Pprof == d.metricsProf && (addr == "") == (d.metrics == nil) {
		return nil
	}
	var ln net.Listener
	if addr != "" {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
	}
	if d.metrics != nil {
		d.metrics.Close()
		d.metrics, d.metricsLn = nil, nil
	}
	d.metricsAddr, d.metricsProf = addr, mc.Pprof
	if ln == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", d.readyz)
	if mc.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	d.metrics, d.metricsLn = srv, ln
	d.goRun(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics server", "err", err)
		}
	})
	d.log.Info("listening", "listener", "metrics", "address", ln.Addr().String(), "role", "Prometheus /metrics, /healthz, /readyz")
	return nil
}

// readyz answers 200 when the daemon accepts and delivers mail: started,
// not shutting down, the queue open and every listener serving.
func (d *Daemon) readyz(w http.ResponseWriter, r *http.Request) {
	if !d.ready.Load() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	if _, err := os.Stat(d.cfg.Queue.Dir); err != nil {
		http.Error(w, "queue directory: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Healthy reports whether the daemon is up and its queue directory is
// there (for the systemd watchdog and /readyz).
func (d *Daemon) Healthy() bool {
	if !d.ready.Load() {
		return false
	}
	_, err := os.Stat(d.cfg.Queue.Dir)
	return err == nil
}

func (d *Daemon) goRun(f func()) {
	d.wg.Add(1)
	go func() { defer d.wg.Done(); f() }()
}

// Addr returns the bound address of the listener of kind k, or "".
func (d *Daemon) Addr(k smtpd.Kind) string {
	g := d.gen.Load()
	if g == nil {
		return ""
	}
	for _, l := range g.listeners {
		if l.Kind() == k {
			return l.Addr().String()
		}
	}
	return ""
}

// MTASTSAddr is the bound address of our MTA-STS policy server, or "".
func (d *Daemon) MTASTSAddr() string {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.stsPub == nil {
		return ""
	}
	return d.stsPub.Addr()
}

// MetricsAddr is the bound metrics address, or "".
func (d *Daemon) MetricsAddr() string {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.metricsLn == nil {
		return ""
	}
	return d.metricsLn.Addr().String()
}

// Shutdown stops everything in order.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.ready.Store(false)
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.shut = true
	if g := d.gen.Load(); g != nil {
		for _, l := range g.listeners {
			l.Close()
		}
	}
	for _, l := range d.draining {
		l.Close()
	}
	for _, s := range d.sockets {
		s.close()
	}
	if d.control != nil {
		d.control.Close()
	}
	for _, w := range append(d.drainingWeb, d.admin, d.self) {
		if w != nil {
			w.drain(5 * time.Second)
		}
	}
	if d.metrics != nil {
		d.metrics.Shutdown(ctx)
	}
	if d.stsPub != nil {
		d.stsPub.Close()
	}
	if d.cancel != nil {
		d.cancel()
	}
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	if g := d.gen.Load(); g != nil {
		g.close()
	}
	for _, f := range d.retired {
		f()
	}
	if d.plugins != nil {
		d.plugins.Stop()
	}
	if d.hostAPI != nil {
		d.hostAPI.close()
	}
	if d.dir != nil {
		d.dir.Close()
	}
	if d.shared != nil {
		d.shared.Close()
	}
	if d.Queue != nil {
		return d.Queue.Close()
	}
	return nil
}

// diskFree is the space available to us on the file system holding dir.
func diskFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// spaceProbe asks the file system for the spool's free space at most
// every spaceProbeEvery: smtpd checks it at each MAIL FROM, and a statfs
// per message was a measurable item of the relay's profile (issue 19). A
// spool filling faster than that still gets 451 from Enqueue.
type spaceProbe struct {
	probe func() (uint64, error)
	now   func() time.Time

	mu   sync.Mutex
	at   time.Time // of the last successful probe
	last uint64
}

const spaceProbeEvery = 100 * time.Millisecond

func (p *spaceProbe) free() (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if !p.at.IsZero() && now.Sub(p.at) < spaceProbeEvery && !now.Before(p.at) {
		return p.last, nil
	}
	free, err := p.probe()
	if err != nil {
		p.at = time.Time{}
		return 0, err
	}
	p.at, p.last = now, free
	return free, nil
}

// maildirCleanEvery is how often Maildir tmp/ directories are swept.
const maildirCleanEvery = time.Hour

// cleanMaildirTmp removes files older than 36 hours from the tmp/
// directories of the local Maildirs and of maildir transports, at start
// and then every hour: they are left by deliveries killed mid-write.
func (d *Daemon) cleanMaildirTmp(ctx context.Context, cfg *conf.Config) {
	roots := []string{cfg.Local.MaildirRoot}
	for _, t := range cfg.Transports {
		if t.Kind == "maildir" {
			roots = append(roots, t.Host)
		}
	}
	t := time.NewTicker(maildirCleanEvery)
	defer t.Stop()
	for {
		for _, root := range roots {
			if root == "" {
				continue
			}
			n, err := maildir.CleanTmp(root, 3, maildir.TmpMaxAge, time.Now())
			if n > 0 {
				metrics.MaildirTmpRemoved.Add(float64(n))
				d.log.Info("removed stale files from maildir tmp", "root", root, "files", n)
			}
			if err != nil {
				d.log.Warn("cleaning maildir tmp", "root", root, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// gauges keeps the queue gauges current.
func (d *Daemon) gauges(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		st := d.Queue.Stats()
		metrics.QueueMessages.Set(float64(st.Messages))
		metrics.QueueRecipients.WithLabelValues("active").Set(float64(st.Active))
		metrics.QueueRecipients.WithLabelValues("deferred").Set(float64(st.Deferred))
		metrics.QueueHeld.Set(float64(st.Held))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// newResolver builds the DNS resolver everything outbound uses.
func newResolver(cfg *conf.Config) (*resolver.Resolver, error) {
	trust := resolver.DefaultTrustAD(cfg.DNS.Resolver)
	switch cfg.DNS.TrustAD {
	case "yes":
		trust = true
	case "no":
		trust = false
	}
	// The cache keeps MX, A, AAAA and TLSA answers within their TTL
	// (issue 19: a lookup per delivery); it asks only this server.
	return resolver.New(resolver.Options{Server: cfg.DNS.Resolver, Timeout: cfg.DNS.Timeout.D(), TrustAD: trust,
		CacheEntries: resolver.DefaultCacheEntries})
}

// loadDKIM loads the signing keys and returns the signing stage for
// outbound mail, or nil when no keys are configured.
func loadDKIM(cfg *conf.Config) (delivery.SignFunc, error) {
	if len(cfg.DKIM.Keys) == 0 {
		return nil, nil
	}
	var keys []*dkim.Key
	for i, k := range cfg.DKIM.Keys {
		key, err := dkim.LoadKey(k.Domain, k.Selector, k.File)
		if err != nil {
			return nil, fmt.Errorf("dkim.key[%d]: %w", i, err)
		}
		keys = append(keys, key)
	}
	s := dkim.NewSigner(keys)
	return func(env *queue.Envelope, body io.ReadCloser) io.ReadCloser {
		if env.From == "" || len(s.KeysFor(env.From)) == 0 {
			return body
		}
		pr, pw := io.Pipe()
		go func() {
			pw.CloseWithError(s.Sign(env.From, body, pw))
		}()
		return &signedBody{PipeReader: pr, orig: body}
	}, nil
}

// signedBody closes both the pipe and the queue file.
type signedBody struct {
	*io.PipeReader
	orig io.Closer
}

func (b *signedBody) Close() error {
	b.PipeReader.Close()
	return b.orig.Close()
}

// Explain builds the outbound transport as the daemon would and explains
// the TLS policy for domain (posthorn tls explain). sender is for the
// sender-dependent rules (secure aliases, REQUIRETLS).
func Explain(cfg *conf.Config, domain, sender string, requireTLS, probe bool) (*remote.Explanation, error) {
	res, err := newResolver(cfg)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.DiscardHandler)
	rt, err := remote.New(cfg, res, log)
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	var shared *sql.DB
	if cfg.Database.DSN != "" {
		// A node of a cluster: the MTA-STS policies the nodes cached are
		// in the shared database, as the daemon sees them.
		if shared, _, err = database.OpenPostgres(context.Background(), cfg.Database); err != nil {
			return nil, err
		}
		defer shared.Close()
	}
	sts, err := newMTASTS(cfg, res, log, shared)
	if err != nil {
		return nil, err
	}
	dir, _, err := openDirectory(cfg, log)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	rt.SetEnforcement(sts, nil, router.NewWithDirectory(cfg, dir))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ex := rt.Explain(ctx, domain, sender, requireTLS, probe)
	ex.TrustAD = res.TrustAD()
	return ex, nil
}

// NewOutbound builds the outbound transport as the daemon builds it: the
// [dns] resolver, MTA-STS fetching through that resolver, DANE, and the
// given TLS-RPT recorder and secure aliases (either may be nil). For
// tools and the interop suite, which deliver without a whole daemon.
func NewOutbound(cfg *conf.Config, rpt *tlsrpt.Recorder, aliases remote.SecureAliases, log *slog.Logger) (*remote.Transport, error) {
	res, err := newResolver(cfg)
	if err != nil {
		return nil, err
	}
	rt, err := remote.New(cfg, res, log)
	if err != nil {
		return nil, err
	}
	sts, err := newMTASTS(cfg, res, log, nil)
	if err != nil {
		rt.Close()
		return nil, err
	}
	rt.SetEnforcement(sts, rpt, aliases)
	return rt, nil
}

// newMTASTS makes the MTA-STS fetcher, or nil when [mta_sts] is off.
// db, when not nil, is the shared [database]: the policy cache lives
// there instead of [mta_sts] cache_dir.
func newMTASTS(cfg *conf.Config, res *resolver.Resolver, log *slog.Logger, db *sql.DB) (*mtasts.Fetcher, error) {
	if !cfg.MTASTS.Enabled {
		return nil, nil
	}
	var roots *x509.CertPool
	if cfg.Outbound.CAFile != "" {
		// The operator's extra anchors count for policy hosts too.
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(cfg.Outbound.CAFile)
		if err != nil {
			return nil, fmt.Errorf("outbound.ca_file: %w", err)
		}
		pool.AppendCertsFromPEM(pem)
		roots = pool
	}
	// The policy host is looked up through [dns] resolver like every
	// other name (never the system's resolver).
	opts := mtasts.Options{Resolver: res, RootCAs: roots, CacheDir: cfg.MTASTS.CacheDir, CacheDB: db,
		RefreshInterval: cfg.MTASTS.Refresh.D(), Logger: log, DialContext: resolverDial(cfg, res)}
	return mtasts.New(opts)
}

// resolverDial connects to HOST:PORT with HOST looked up through the
// configured resolver ([dns] resolver): an IP literal, localhost or a
// name from /etc/hosts without DNS, else A (and AAAA with [outbound]
// ipv6) from the resolver. Connections come from [outbound]
// source_address. testing.port_map may move a host to another port
// (tests).
func resolverDial(cfg *conf.Config, res *resolver.Resolver) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if p, ok := cfg.Testing.PortMap[strings.ToLower(host)]; ok {
			port = fmt.Sprint(p)
		}
		ips := resolver.StaticAddrs(host)
		if len(ips) == 0 {
			if ips, err = res.Addrs(ctx, host, cfg.Outbound.IPv6); err != nil {
				return nil, err
			}
		}
		var errs []error
		for _, ip := range ips {
			if ip.To4() == nil && !cfg.Outbound.IPv6 {
				continue
			}
			d := net.Dialer{Timeout: cfg.Outbound.ConnectTimeout.D()}
			for _, a := range cfg.Outbound.SourceAddress {
				if la := net.ParseIP(strings.Trim(a, "[]")); la != nil && (la.To4() == nil) == (ip.To4() == nil) {
					d.LocalAddr = &net.TCPAddr{IP: la}
				}
			}
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			return nil, fmt.Errorf("%s: no usable address", host)
		}
		return nil, errors.Join(errs...)
	}
}

// ParseReportDay reads a --day argument ("2006-01-02", UTC); empty means
// yesterday, the last whole day.
func ParseReportDay(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return now.UTC().AddDate(0, 0, -1).Truncate(24 * time.Hour), nil
	}
	d, err := time.Parse("2006-01-02", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("day %q: want YYYY-MM-DD", s)
	}
	return d, nil
}

// tlsReportNow sends the TLS reports of a day at once (control command
// "tls-report", `posthorn tls report`) and returns the domains sent to.
func tlsReportNow(rpt *tlsrpt.Recorder, day string) (json.RawMessage, error) {
	if rpt == nil {
		return nil, errors.New("TLS reporting is off ([tls_rpt] enabled = false)")
	}
	d, err := ParseReportDay(day, time.Now())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sent, err := rpt.SendDayNow(ctx, d)
	if sent == nil {
		sent = []string{}
	}
	raw, _ := json.Marshal(sent)
	return raw, err
}

// TLSReports builds, without sending, the TLS reports (RFC 8460) of day
// from the recorded attempts in [tls_rpt] state_dir: what `posthorn tls
// report --dry-run` prints. It needs no running daemon.
func TLSReports(cfg *conf.Config, day time.Time) ([]*tlsrpt.Report, error) {
	var db *sql.DB
	if cfg.Database.DSN != "" {
		// Many nodes: their attempts are in the shared database.
		var err error
		if db, _, err = database.OpenPostgres(context.Background(), cfg.Database); err != nil {
			return nil, err
		}
		defer db.Close()
	} else if cfg.TLSRPT.StateDir == "" {
		return nil, errors.New("no [tls_rpt] state_dir")
	}
	rec, err := tlsrpt.New(tlsrpt.Options{Dir: cfg.TLSRPT.StateDir, DB: db, OrganizationName: cfg.TLSRPT.OrganizationName,
		ContactInfo: cfg.TLSRPT.ContactInfo, Submitter: cfg.Hostname, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	defer rec.Close()
	domains, err := rec.Domains(day)
	if err != nil {
		return nil, err
	}
	var out []*tlsrpt.Report
	for _, d := range domains {
		rep, err := rec.Report(day, d)
		if err != nil {
			return nil, err
		}
		out = append(out, rep)
	}
	return out, nil
}

// newTLSRPT makes the TLS-RPT recorder, or nil when [tls_rpt] is off.
// Mailed reports go through our own queue, DKIM-signed like all our mail.
func (d *Daemon) newTLSRPT(cfg *conf.Config, res *resolver.Resolver) (*tlsrpt.Recorder, error) {
	if !cfg.TLSRPT.Enabled {
		return nil, nil
	}
	return tlsrpt.New(tlsrpt.Options{
		Dir: cfg.TLSRPT.StateDir, DB: d.shared, OrganizationName: cfg.TLSRPT.OrganizationName, ContactInfo: cfg.TLSRPT.ContactInfo,
		Submitter: cfg.Hostname, Resolver: res, Logger: d.log.With("component", "tls-rpt"),
		// https: reporting URIs are looked up through [dns] resolver too.
		HTTPClient: &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: resolverDial(cfg, res),
			TLSHandshakeTimeout: 30 * time.Second, ForceAttemptHTTP2: true}},
		Submit: func(to string, msg []byte) error {
			env := &queue.Envelope{ID: d.Queue.NewID(), From: "postmaster@" + cfg.Hostname,
				Recipients: []*queue.Recipient{{Addr: to, Notify: []string{"NEVER"}}}, ClientAddr: "tls-rpt"}
			_, err := d.Queue.Enqueue(env, bytes.NewReader(msg))
			return err
		},
	})
}
