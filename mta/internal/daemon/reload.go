package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/queue"
)

// ReloadFile reads the config file again (Options.ConfigPath, or the
// embedded default) and applies it with Reload. A file with errors is
// refused: every error is logged and the running config stays.
func (d *Daemon) ReloadFile() (*ReloadResult, error) {
	var cfg *conf.Config
	var err error
	name := d.opt.ConfigPath
	if name == "" {
		if d.opt.BaseDir != "" {
			cfg, err = conf.ParseIn(conf.DefaultFile, conf.DefaultTOML(), d.opt.BaseDir)
		} else {
			cfg, err = conf.Parse(conf.DefaultFile, conf.DefaultTOML())
		}
		name = conf.DefaultFile
	} else {
		cfg, err = conf.Load(name)
	}
	if err != nil {
		var errs conf.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				d.log.Error("reload refused: config error", "error", e.Error())
			}
		} else {
			d.log.Error("reload refused", "config", name, "error", err)
		}
		metrics.Reloads.WithLabelValues("refused").Inc()
		return nil, fmt.Errorf("reload refused, still running the old config: %w", err)
	}
	return d.Reload(cfg)
}

// ReloadResult says what a reload changed.
type ReloadResult struct {
	// Plugins started or restarted (new, changed settings or binary).
	Plugins []string `json:"plugins_restarted"`
	// Warnings are settings that take effect only at the next start, and
	// what `posthorn check` warns about in the new config.
	Warnings []string `json:"warnings,omitempty"`
}

// errReload marks a refused reload.
func refuse(d *Daemon, err error) error {
	metrics.Reloads.WithLabelValues("refused").Inc()
	d.log.Error("reload refused; the old config stays in force", "error", err)
	return fmt.Errorf("reload refused, still running the old config: %w", err)
}

// Reload switches to cfg without dropping anything: the password file,
// maps, certificates, DNS, DKIM keys and the outbound transport are built
// anew beside the running ones; only when all of that worked, new
// sessions and deliveries use them. SMTP sessions in progress finish with
// the config they started with (the ports stay open throughout); queued
// mail is untouched; plugins are restarted only where their settings or
// binary changed. If anything cannot be built, nothing changes and the
// error says why.
func (d *Daemon) Reload(cfg *conf.Config) (*ReloadResult, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.shut {
		return nil, errors.New("shutting down")
	}
	old := d.gen.Load()
	res := &ReloadResult{}
	// What the running daemon cannot switch.
	if cfg.Queue.Dir != old.cfg.Queue.Dir {
		return nil, refuse(d, fmt.Errorf("queue.dir cannot change while running (%s -> %s): restart posthorn", old.cfg.Queue.Dir, cfg.Queue.Dir))
	}
	if cfg.Control.Socket != old.cfg.Control.Socket {
		return nil, refuse(d, fmt.Errorf("control.socket cannot change while running (%s -> %s): restart posthorn", old.cfg.Control.Socket, cfg.Control.Socket))
	}
	if cfg.Queue.Maildrop != d.cfg.Queue.Maildrop {
		res.Warnings = append(res.Warnings, fmt.Sprintf("queue.maildrop = %s takes effect at the next start", cfg.Queue.Maildrop))
	}
	if cfg.Queue.Workers != d.cfg.Queue.Workers {
		res.Warnings = append(res.Warnings, fmt.Sprintf("queue.workers = %d takes effect at the next start", cfg.Queue.Workers))
	}
	if !strings.EqualFold(cfg.Log.Format, d.cfg.Log.Format) {
		res.Warnings = append(res.Warnings, fmt.Sprintf("log.format = %q takes effect at the next start", cfg.Log.Format))
	}
	if cfg.Queue.MinBackoff != d.cfg.Queue.MinBackoff || cfg.Queue.MaxBackoff != d.cfg.Queue.MaxBackoff || cfg.Queue.MaxLifetime != d.cfg.Queue.MaxLifetime {
		res.Warnings = append(res.Warnings, "queue retry schedule (min_backoff, max_backoff, max_lifetime) takes effect at the next start")
	}
	if cfg.Database != old.cfg.Database {
		res.Warnings = append(res.Warnings, "[database] changes take effect at the next start")
	}
	if !reflect.DeepEqual(pluginDirs(cfg), pluginDirs(old.cfg)) {
		res.Warnings = append(res.Warnings, "plugin data_dir changes apply to restarted plugins only")
	}

	g, err := d.build(cfg)
	if err != nil {
		return nil, refuse(d, err)
	}
	if _, err := d.plugins.Changes(cfg.Plugins); err != nil {
		g.close()
		return nil, refuse(d, err)
	}
	adminPlan, selfPlan, err := d.webPlans(g)
	if err != nil {
		g.close()
		return nil, refuse(d, err)
	}
	if err := d.openListeners(g, old); err != nil {
		adminPlan.abort()
		selfPlan.abort()
		g.close()
		return nil, refuse(d, err)
	}
	// From here on the new generation is in force.
	d.gen.Store(g)
	d.switchWeb(g, adminPlan, selfPlan)
	d.encryption.SetChain(g.chain)
	d.workers.SetOptions(d.workerOptions(g))
	d.startLoops(g)
	d.serveListeners(g)
	grace := cfg.SMTP.CommandTimeout.D() + cfg.SMTP.DataTimeout.D()
	for i, l := range old.listeners {
		d.draining = append(d.draining, l)
		view, served := old.views[i], old.served[i]
		d.goRun(func() {
			// The old listener stops accepting first; only once its
			// Serve has returned (no session can start on it any more)
			// does it wait for its open sessions to end.
			view.Close()
			<-served
			ctx, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			l.Shutdown(ctx)
			l.Close()
		})
	}
	old.cancel()
	// Deliveries that began with the old transport finish with it.
	d.retired = append(d.retired, old.close)
	if err := d.startMetrics(cfg.Metrics); err != nil {
		res.Warnings = append(res.Warnings, err.Error()+" (metrics stay off)")
	}
	if err := d.startSTSPub(g); err != nil {
		res.Warnings = append(res.Warnings, err.Error()+" (MTA-STS policy not served)")
	}
	if d.opt.LogLevel != nil {
		d.opt.LogLevel.Set(LogLevel(cfg.Log.Level))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A new max_message_size restarts the plugins (they are told it
	// when they start).
	d.plugins.SetMaxMessageSize(cfg.SMTP.MaxMessageSize.Bytes())
	started, err := d.plugins.Reconfigure(ctx, cfg.Plugins)
	res.Plugins = started
	if started == nil {
		res.Plugins = []string{}
	}
	if err != nil {
		res.Warnings = append(res.Warnings, err.Error())
	}
	// What `posthorn check` warns about (e.g. a web mailbox rule that
	// would catch the notifications) is said at every reload as at start.
	res.Warnings = append(res.Warnings, cfg.Warnings()...)
	for _, w := range res.Warnings {
		d.log.Warn("reload", "warning", w)
	}
	metrics.Reloads.WithLabelValues("ok").Inc()
	d.log.Info("config reloaded", "hostname", cfg.Hostname, "domains", len(cfg.Domains),
		"plugins_restarted", strings.Join(res.Plugins, ","), "draining_listeners", len(old.listeners))
	return res, nil
}

func pluginDirs(c *conf.Config) map[string]string {
	m := map[string]string{}
	for _, p := range c.Plugins {
		m[p.Name] = p.DataDir
	}
	return m
}

// reloadCommand is the control socket's "reload" (posthorn reload).
func (d *Daemon) reloadCommand() (json.RawMessage, error) {
	res, err := d.ReloadFile()
	if err != nil {
		return nil, err
	}
	return json.Marshal(res)
}

// LogLevel maps [log] level to a slog level (info for anything unknown).
func LogLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// liveRouter is the router of the config in force, for the callers that
// outlive a reload (local and plugin submissions).
type liveRouter struct{ d *Daemon }

// ExpandRecipients expands aliases with the current config's router.
func (r *liveRouter) ExpandRecipients(rcpts []*queue.Recipient) ([]*queue.Recipient, error) {
	return r.d.gen.Load().router.ExpandRecipients(rcpts)
}

// LocalDomain reports whether domain is local under the current config.
func (r *liveRouter) LocalDomain(domain string) bool {
	return r.d.gen.Load().router.LocalDomain(domain)
}
