package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/daemon"
	"github.com/posthorn/posthorn/mta/internal/sdnotify"
)

func serveMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg.Log, level, stderr)
	// Signals are caught before anything starts: a SIGHUP during start
	// must not kill the daemon.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	d, err := daemon.Start(cfg, log, daemon.Options{ConfigPath: *cfgPath, LogLevel: level, BaseDir: dataDir()})
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	// Starting leaves garbage the steady state never makes: the
	// argon2id dummy hash for AUTH timing alone is 19 MiB. With little
	// allocation afterwards the GC would not run for a long time and
	// the pages stay resident, a third of the daemon's PSS (issue 19);
	// collect it and give it back now.
	debug.FreeOSMemory()
	// Under systemd (Type=notify): ready now; a watchdog ping while the
	// daemon answers; reloads and the stop announced.
	if ok, err := sdnotify.Notify("READY=1"); ok && err != nil {
		log.Warn("sd_notify", "err", err)
	}
	wdCtx, wdStop := context.WithCancel(context.Background())
	defer wdStop()
	go sdnotify.Watchdog(wdCtx, sdnotify.WatchdogInterval(), d.Healthy)
	var s os.Signal
	for s = range sig {
		if s != syscall.SIGHUP {
			break
		}
		log.Info("reloading", "signal", s.String(), "config", cfgName(*cfgPath))
		sdnotify.Notify(sdnotify.Reloading())
		d.ReloadFile() // logs what it did or why it refused
		debug.FreeOSMemory()
		sdnotify.Notify("READY=1")
	}
	sdnotify.Notify("STOPPING=1")
	wdStop()
	log.Info("shutting down", "signal", s.String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

func cfgName(path string) string {
	if path == "" {
		return conf.DefaultFile
	}
	return path
}

// newLogger makes the daemon's logger; level follows [log] level and
// reloads.
func newLogger(c conf.Log, level *slog.LevelVar, w io.Writer) *slog.Logger {
	level.Set(daemon.LogLevel(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if strings.ToLower(c.Format) == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
