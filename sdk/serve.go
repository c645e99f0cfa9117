package sdk

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/posthorn/posthorn/sdk/internal/bodyfile"
	"google.golang.org/grpc"
)

// EnvLogLevel is the environment variable through which the host tells the
// plugin its log level (trace, debug, info, warn, error). Default info.
const EnvLogLevel = "POSTHORN_PLUGIN_LOG_LEVEL"

// stderr is the process's real standard error, captured before go-plugin
// swaps os.Stderr for its stdio pipe. The host reads it line by line and
// parses the JSON log lines.
var stderr = os.Stderr

var (
	loggerOnce sync.Once
	logger     hclog.Logger
)

// Logger returns the plugin's logger. It writes JSON lines to standard
// error, which the host reads and merges into its own log with the plugin's
// name and the right level. Never log message bodies.
func Logger() hclog.Logger {
	loggerOnce.Do(func() {
		level := hclog.LevelFromString(os.Getenv(EnvLogLevel))
		if level == hclog.NoLevel {
			level = hclog.Info
		}
		logger = hclog.New(&hclog.LoggerOptions{
			Level:      level,
			Output:     stderr,
			JSONFormat: true,
		})
	})
	return logger
}

// Serve runs p as a Posthorn plugin: the one call in a plugin's main. It
// returns when the host shuts the plugin down and exits the process when
// the host goes away or p is unusable.
//
// Serve finds the hooks p implements (InboundHook, OutboundHook,
// EventHook) by type assertion and serves exactly those.
//
// Standard output belongs to the go-plugin handshake: a plugin must never
// write to it. Serve points file descriptor 1 at standard error after
// taking the handshake channel, and the host logs anything still written to
// os.Stdout as a warning, but output printed before Serve breaks the
// plugin's start. Log with Logger().
func Serve(p Plugin) {
	log := Logger()
	if p == nil {
		fatal(log, "sdk.Serve: nil plugin")
	}
	d := p.Describe()
	if err := d.Validate(); err != nil {
		fatal(log, "sdk.Serve: invalid Describe(): "+err.Error())
	}
	hooks := hooksOf(p)
	if len(hooks) == 0 {
		fatal(log, fmt.Sprintf("sdk.Serve: %T implements no hook (InboundHook, OutboundHook or EventHook)", p))
	}
	if _, ok := p.(EventHook); len(d.EventTypes) > 0 && !ok {
		fatal(log, fmt.Sprintf("sdk.Serve: Describe() subscribes to events %v but %T does not implement EventHook", d.EventTypes, p))
	}
	// The host labels our lines with the plugin name; no need to repeat it.

	if err := protectStdout(); err != nil {
		log.Warn("cannot redirect stdout to stderr; never write to stdout", "error", err)
	}
	go watchParent(log, os.Getppid(), 500*time.Millisecond)
	openBodyChannel(log)

	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginName: &goPlugin{impl: p}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, GRPCServerOptions()...)...)
		},
		Logger: log,
	})
}

func fatal(log hclog.Logger, msg string) {
	log.Error(msg)
	os.Exit(1)
}

// hooksOf lists the hooks p implements, in a fixed order.
func hooksOf(p Plugin) []Hook {
	var hooks []Hook
	if _, ok := p.(InboundHook); ok {
		hooks = append(hooks, HookInbound)
	}
	if _, ok := p.(OutboundHook); ok {
		hooks = append(hooks, HookOutbound)
	}
	if _, ok := p.(EventHook); ok {
		hooks = append(hooks, HookEvents)
	}
	return hooks
}

// watchParent exits the process when its parent changes: the host died
// (even by SIGKILL, which gives go-plugin no chance to stop the plugin) and
// the plugin was reparented.
func watchParent(log hclog.Logger, ppid int, every time.Duration) {
	if ppid <= 1 {
		return // started by init or a reaper: nothing to watch
	}
	for range time.Tick(every) {
		if now := os.Getppid(); now != ppid {
			log.Error("host process is gone, exiting", "old_ppid", ppid, "ppid", now)
			os.Exit(2)
		}
	}
}

var bodyChan struct {
	sync.Mutex
	ch *bodyfile.Channel
}

// bodyChannel is the channel openBodyChannel opened, nil without one.
func bodyChannel() *bodyfile.Channel {
	bodyChan.Lock()
	defer bodyChan.Unlock()
	return bodyChan.ch
}

// openBodyChannel takes over the body channel the host handed us (protocol
// minor 5: EnvFD names an inherited descriptor), if any. Without one,
// bodies travel in chunks.
func openBodyChannel(log hclog.Logger) {
	v := os.Getenv(bodyfile.EnvFD)
	if v == "" {
		return
	}
	os.Unsetenv(bodyfile.EnvFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		log.Warn("ignoring a bad body channel descriptor", "value", v)
		return
	}
	ch, err := bodyfile.Open(os.NewFile(uintptr(fd), "posthorn-body-channel"))
	if err != nil {
		log.Warn("no body channel; bodies travel in chunks", "error", err)
		return
	}
	bodyChan.Lock()
	bodyChan.ch = ch
	bodyChan.Unlock()
}
