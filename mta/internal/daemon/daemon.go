// Package daemon is `posthorn serve`: it opens the queue (recovering what
// is on disk), loads TLS and users, starts the SMTP listeners, the delivery
// workers, the control socket and the metrics endpoint, and stops them in
// order: listeners first (no new 250s), then workers (leases released),
// then the queue.
package daemon

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/auth"
	"github.com/posthorn/posthorn/mta/internal/authres"
	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/delivery"
	"github.com/posthorn/posthorn/mta/internal/dkim"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/pluginhost"
	"github.com/posthorn/posthorn/mta/internal/policychain"
	"github.com/posthorn/posthorn/mta/internal/remote"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/mta/internal/stspub"
	"github.com/posthorn/posthorn/mta/internal/tlsrpt"
	"github.com/posthorn/posthorn/mta/internal/tlsutil"
	"github.com/posthorn/posthorn/queue"
)

// Daemon is a running posthorn.
type Daemon struct {
	cfg        *conf.Config
	log        *slog.Logger
	Queue      *queue.Queue
	Router     *router.Router
	Resolver   *resolver.Resolver
	plugins    *pluginhost.Host
	hostAPI    *hostAPI
	acc        *acceptor
	encryption *delivery.Encryption
	remote     *remote.Transport
	listeners  []*smtpd.Listener
	control    *control.Server
	metrics    *http.Server
	stsPub     *stspub.Server
	metricsLn  net.Listener

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Options tune a daemon for tests and tools.
type Options struct {
	// Now replaces the clock of the queue and the workers.
	Now func() time.Time
	// AuthFailDelay overrides the pause after a failed AUTH.
	AuthFailDelay time.Duration
}

// Start brings a daemon up. On error, everything started so far is stopped.
func Start(cfg *conf.Config, log *slog.Logger, opt Options) (d *Daemon, err error) {
	d = &Daemon{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			d.Shutdown(context.Background())
			d = nil
		}
	}()
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

	users, err := auth.Open(cfg.Auth.PasswordFile)
	if err != nil {
		return d, fmt.Errorf("password file: %w", err)
	}
	d.Router = router.New(cfg, users)

	res, err := newResolver(cfg)
	if err != nil {
		return d, fmt.Errorf("dns: %w", err)
	}
	d.Resolver = res
	acc := &acceptor{d: d, tmpDir: filepath.Join(cfg.Queue.Dir, "incoming"), authID: cfg.Hostname,
		enforce: cfg.AuthRes.DMARCEnforce}
	if err := os.MkdirAll(acc.tmpDir, 0o700); err != nil {
		return d, err
	}
	d.acc = acc
	if cfg.AuthRes.Enabled {
		acc.checker = authres.New(res, cfg.Hostname, authres.Options{Timeout: cfg.AuthRes.Timeout.D()})
	}
	signer, err := loadDKIM(cfg)
	if err != nil {
		return d, err
	}

	cert, err := tlsutil.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.SelfSignedDir, cfg.Hostname)
	if err != nil {
		return d, err
	}
	tlsConf := tlsutil.ServerConfig(cert)

	for _, lc := range []struct {
		kind smtpd.Kind
		addr string
	}{{smtpd.MX, cfg.SMTP.MX}, {smtpd.Submission, cfg.SMTP.Submission}, {smtpd.Submissions, cfg.SMTP.Submissions}} {
		if lc.addr == "" {
			continue
		}
		l, err := smtpd.Listen(smtpd.Config{
			Kind: lc.kind, Address: lc.addr, Hostname: cfg.Hostname, TLS: tlsConf,
			Limits: cfg.SMTP, Router: d.Router, Users: users, Acceptor: acc,
			Logger: log.With("component", "smtpd"), AuthFailDelay: opt.AuthFailDelay,
		})
		if err != nil {
			return d, fmt.Errorf("%s listener on %s: %w", lc.kind, lc.addr, err)
		}
		d.listeners = append(d.listeners, l)
	}

	if cfg.Control.Socket != "" {
		cs, err := control.Listen(cfg.Control.Socket, q, log.With("component", "control"))
		if err != nil {
			return d, err
		}
		cs.Submit = d.submit
		cs.Extra["plugins"] = d.pluginStatus
		d.control = cs
	}
	if cfg.MTASTS.ServeAddress != "" {
		mx := cfg.MTASTS.ServeMX
		if len(mx) == 0 {
			mx = []string{cfg.Hostname}
		}
		p := stspub.Policy{Mode: cfg.MTASTS.ServeMode, MX: mx, MaxAge: cfg.MTASTS.ServeMaxAge.D()}
		var doms []string
		for _, dm := range cfg.Domains {
			doms = append(doms, dm.Name)
			log.Info("publishing MTA-STS policy", "domain", dm.Name, "txt", p.TXT(dm.Name), "mode", p.Mode)
		}
		pub, err := stspub.Listen(cfg.MTASTS.ServeAddress, cert, p, doms)
		if err != nil {
			return d, fmt.Errorf("mta_sts.serve_address: %w", err)
		}
		d.stsPub = pub
	}
	if cfg.Metrics.Address != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Address)
		if err != nil {
			return d, fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler())
		d.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		d.metricsLn = ln
	}

	api, err := newHostAPI(d)
	if err != nil {
		return d, fmt.Errorf("plugin submissions: %w", err)
	}
	d.hostAPI = api
	d.plugins = pluginhost.New(cfg.Plugins, api, log.With("component", "plugins"),
		pluginhost.WithMaxMessageSize(cfg.SMTP.MaxMessageSize.Bytes()))
	if err := d.plugins.Start(context.Background()); err != nil {
		return d, err
	}
	var enc *delivery.Encryption
	if len(cfg.Plugins) > 0 || len(cfg.Encryption.Rules) > 0 {
		chain, err := policychain.New(cfg.Encryption)
		if err != nil {
			return d, err
		}
		enc = &delivery.Encryption{Chain: chain, Plugins: d.plugins, SpoolDir: filepath.Join(cfg.Queue.Dir, "outgoing"),
			Logger: log.With("component", "encryption"), Queue: q}
		if err := os.MkdirAll(enc.SpoolDir, 0o700); err != nil {
			return d, err
		}
		d.encryption = enc
	}
	rt, err := remote.New(cfg, res, log.With("component", "remote"))
	if err != nil {
		return d, err
	}
	d.remote = rt
	sts, err := newMTASTS(cfg, res, log.With("component", "mta-sts"))
	if err != nil {
		return d, err
	}
	rpt, err := d.newTLSRPT(res)
	if err != nil {
		return d, err
	}
	rt.SetEnforcement(sts, rpt, d.Router)

	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	postmaster := "postmaster"
	if len(cfg.Domains) > 0 {
		postmaster = "postmaster@" + strings.ToLower(cfg.Domains[0].Name)
	}
	workers := delivery.New(q, delivery.Options{
		Hostname:       cfg.Hostname,
		Postmaster:     postmaster,
		MaxLifetime:    cfg.Queue.MaxLifetime.D(),
		BounceLifetime: cfg.Queue.BounceLifetime.D(),
		Now:            opt.Now,
		Logger:         log.With("component", "delivery"),
		Router:         d.Router,
		Local:          &delivery.LocalTransport{Router: d.Router, Hostname: cfg.Hostname, Logger: log.With("component", "local")},
		Remote:         rt,
		DelayWarning:   cfg.Outbound.DelayWarning.D(),
		Sign:           signer,
		Encryption:     enc,
		Events:         d.plugins.Emit,
	})
	d.goRun(func() { workers.Run(ctx, cfg.Queue.Workers) })
	d.goRun(func() { d.gauges(ctx) })
	if sts != nil {
		d.goRun(func() { sts.RefreshLoop(ctx) })
	}
	if rpt != nil {
		d.goRun(func() { rpt.DailyLoop(ctx) })
	}
	for _, l := range d.listeners {
		d.goRun(func() { l.Serve() })
		log.Info("listening", "listener", "smtp", "address", l.Addr().String())
	}
	if d.control != nil {
		d.goRun(func() { d.control.Serve() })
	}
	if d.stsPub != nil {
		d.goRun(func() { d.stsPub.Serve() })
	}
	if d.metrics != nil {
		d.goRun(func() {
			if err := d.metrics.Serve(d.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		})
	}
	log.Info("posthorn started", "hostname", cfg.Hostname, "queue", cfg.Queue.Dir, "workers", cfg.Queue.Workers)
	return d, nil
}

func (d *Daemon) goRun(f func()) {
	d.wg.Add(1)
	go func() { defer d.wg.Done(); f() }()
}

// Addr returns the bound address of the listener of kind k, or "".
func (d *Daemon) Addr(k smtpd.Kind) string {
	for _, l := range d.listeners {
		if l.Kind() == k {
			return l.Addr().String()
		}
	}
	return ""
}

// MTASTSAddr is the bound address of our MTA-STS policy server, or "".
func (d *Daemon) MTASTSAddr() string {
	if d.stsPub == nil {
		return ""
	}
	return d.stsPub.Addr()
}

// MetricsAddr is the bound metrics address, or "".
func (d *Daemon) MetricsAddr() string {
	if d.metricsLn == nil {
		return ""
	}
	return d.metricsLn.Addr().String()
}

// Shutdown stops everything in order.
func (d *Daemon) Shutdown(ctx context.Context) error {
	for _, l := range d.listeners {
		l.Close()
	}
	if d.control != nil {
		d.control.Close()
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
	if d.remote != nil {
		d.remote.Close()
	}
	if d.plugins != nil {
		d.plugins.Stop()
	}
	if d.hostAPI != nil {
		d.hostAPI.close()
	}
	if d.Queue != nil {
		return d.Queue.Close()
	}
	return nil
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
	return resolver.New(resolver.Options{Server: cfg.DNS.Resolver, Timeout: cfg.DNS.Timeout.D(), TrustAD: trust})
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
	sts, err := newMTASTS(cfg, res, log)
	if err != nil {
		return nil, err
	}
	users, err := auth.Open(cfg.Auth.PasswordFile)
	if err != nil {
		return nil, err
	}
	rt.SetEnforcement(sts, nil, router.New(cfg, users))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ex := rt.Explain(ctx, domain, sender, requireTLS, probe)
	ex.TrustAD = res.TrustAD()
	return ex, nil
}

// newMTASTS makes the MTA-STS fetcher, or nil when [mta_sts] is off.
func newMTASTS(cfg *conf.Config, res *resolver.Resolver, log *slog.Logger) (*mtasts.Fetcher, error) {
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
	opts := mtasts.Options{Resolver: res, RootCAs: roots, CacheDir: cfg.MTASTS.CacheDir,
		RefreshInterval: cfg.MTASTS.Refresh.D(), Logger: log}
	if len(cfg.Testing.PortMap) > 0 {
		// Tests: policy hosts are on loopback at the port mapped for
		// "mta-sts.DOMAIN" (or 443).
		opts.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(addr)
			if p, ok := cfg.Testing.PortMap[host]; ok {
				port = fmt.Sprint(p)
			}
			ips, _, err := res.IP(ctx, host)
			if err != nil {
				return nil, err
			}
			var dl net.Dialer
			return dl.DialContext(ctx, network, net.JoinHostPort(ips[0].String(), port))
		}
	}
	return mtasts.New(opts)
}

// newTLSRPT makes the TLS-RPT recorder, or nil when [tls_rpt] is off.
// Mailed reports go through our own queue, DKIM-signed like all our mail.
func (d *Daemon) newTLSRPT(res *resolver.Resolver) (*tlsrpt.Recorder, error) {
	cfg := d.cfg
	if !cfg.TLSRPT.Enabled {
		return nil, nil
	}
	return tlsrpt.New(tlsrpt.Options{
		Dir: cfg.TLSRPT.StateDir, OrganizationName: cfg.TLSRPT.OrganizationName, ContactInfo: cfg.TLSRPT.ContactInfo,
		Submitter: cfg.Hostname, Resolver: res, Logger: d.log.With("component", "tls-rpt"),
		Submit: func(to string, msg []byte) error {
			env := &queue.Envelope{ID: d.Queue.NewID(), From: "postmaster@" + cfg.Hostname,
				Recipients: []*queue.Recipient{{Addr: to, Notify: []string{"NEVER"}}}, ClientAddr: "tls-rpt"}
			_, err := d.Queue.Enqueue(env, bytes.NewReader(msg))
			return err
		},
	})
}
