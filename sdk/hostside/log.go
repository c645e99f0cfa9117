package hostside

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"

	hclog "github.com/hashicorp/go-hclog"
)

// levelOf is the log level the plugin is told to use: no point in having it
// format lines the host drops.
func levelOf(l *slog.Logger) string {
	ctx := context.Background()
	switch {
	case l.Enabled(ctx, slog.LevelDebug-4):
		return "trace"
	case l.Enabled(ctx, slog.LevelDebug):
		return "debug"
	case l.Enabled(ctx, slog.LevelInfo):
		return "info"
	case l.Enabled(ctx, slog.LevelWarn):
		return "warn"
	}
	return "error"
}

// hcLogger is an hclog.Logger writing to an slog.Logger, for go-plugin,
// which logs the plugin's stderr lines through it.
type hcLogger struct {
	l    *slog.Logger
	name string
	args []any
	// plugin is the name l already carries as "plugin": a line from the
	// plugin with its own "plugin" key would repeat the key in JSON.
	plugin string
}

var _ hclog.Logger = (*hcLogger)(nil)

func newHCLogger(l *slog.Logger, plugin string) hclog.Logger { return &hcLogger{l: l, plugin: plugin} }

func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (h *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	ctx := context.Background()
	lv := toSlog(level)
	if !h.l.Enabled(ctx, lv) {
		return
	}
	all := make([]any, 0, len(h.args)+len(args)+2)
	if h.name != "" {
		all = append(all, "logger", h.name)
	}
	all = append(all, h.args...)
	all = append(all, args...)
	if len(all)%2 == 1 {
		all = append(all[:len(all)-1], "extra", all[len(all)-1])
	}
	if h.plugin != "" {
		// Keys the host logger already has: drop a repeat of the
		// plugin's name, rename anything else.
		kept := all[:0]
		for i := 0; i+1 < len(all); i += 2 {
			if k, ok := all[i].(string); ok && k == "plugin" {
				v, _ := all[i+1].(string)
				if v == h.plugin {
					continue
				}
				all[i] = "plugin_arg"
				if strings.ContainsRune(v, '/') {
					all[i] = "plugin_path" // go-plugin logs the binary as "plugin"
				}
			}
			kept = append(kept, all[i], all[i+1])
		}
		all = kept
	}
	h.l.Log(ctx, lv, msg, all...)
}

func (h *hcLogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hcLogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hcLogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hcLogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hcLogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hcLogger) enabled(l slog.Level) bool { return h.l.Enabled(context.Background(), l) }
func (h *hcLogger) IsTrace() bool             { return h.enabled(slog.LevelDebug - 4) }
func (h *hcLogger) IsDebug() bool             { return h.enabled(slog.LevelDebug) }
func (h *hcLogger) IsInfo() bool              { return h.enabled(slog.LevelInfo) }
func (h *hcLogger) IsWarn() bool              { return h.enabled(slog.LevelWarn) }
func (h *hcLogger) IsError() bool             { return h.enabled(slog.LevelError) }
func (h *hcLogger) ImpliedArgs() []any        { return h.args }
func (h *hcLogger) Name() string              { return h.name }

func (h *hcLogger) With(args ...any) hclog.Logger {
	return &hcLogger{l: h.l, name: h.name, args: append(append([]any(nil), h.args...), args...), plugin: h.plugin}
}

func (h *hcLogger) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return &hcLogger{l: h.l, name: name, args: h.args, plugin: h.plugin}
}

func (h *hcLogger) ResetNamed(name string) hclog.Logger {
	return &hcLogger{l: h.l, name: name, args: h.args, plugin: h.plugin}
}

func (h *hcLogger) SetLevel(hclog.Level) {}

func (h *hcLogger) GetLevel() hclog.Level {
	switch {
	case h.IsTrace():
		return hclog.Trace
	case h.IsDebug():
		return hclog.Debug
	case h.IsInfo():
		return hclog.Info
	case h.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}

func (h *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hcLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return newLineWriter(h.l, slog.LevelInfo, "go-plugin")
}

// lineWriter logs every line written to it.
type lineWriter struct {
	l     *slog.Logger
	level slog.Level
	msg   string

	mu  sync.Mutex
	buf []byte
}

func newLineWriter(l *slog.Logger, level slog.Level, msg string) *lineWriter {
	return &lineWriter{l: l, level: level, msg: msg}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.buf[:i]), "\r")
		w.buf = w.buf[i+1:]
		w.l.Log(context.Background(), w.level, w.msg, "line", line)
	}
	if len(w.buf) > 64<<10 { // no newline in sight: flush what we have
		w.l.Log(context.Background(), w.level, w.msg, "line", string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(p), nil
}
