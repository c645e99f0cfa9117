package webmailbox

import (
	"context"
	"log/slog"

	"github.com/hashicorp/go-hclog"
	"github.com/posthorn/posthorn/sdk"
)

// hclogHandler sends slog records to the SDK's hclog logger, so that the
// host merges them into its log with the plugin's name and level.
type hclogHandler struct {
	l     hclog.Logger
	attrs []any
	group string
}

func newSDKLogger() *slog.Logger { return slog.New(&hclogHandler{l: sdk.Logger()}) }

func (h *hclogHandler) Enabled(_ context.Context, lv slog.Level) bool {
	return h.l.GetLevel() <= hcLevel(lv)
}

func hcLevel(lv slog.Level) hclog.Level {
	switch {
	case lv >= slog.LevelError:
		return hclog.Error
	case lv >= slog.LevelWarn:
		return hclog.Warn
	case lv >= slog.LevelInfo:
		return hclog.Info
	case lv >= slog.LevelDebug:
		return hclog.Debug
	}
	return hclog.Trace
}

func (h *hclogHandler) Handle(_ context.Context, r slog.Record) error {
	args := append([]any(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		k := a.Key
		if h.group != "" {
			k = h.group + "." + k
		}
		args = append(args, k, a.Value.Resolve().Any())
		return true
	})
	h.l.Log(hcLevel(r.Level), r.Message, args...)
	return nil
}

func (h *hclogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]any(nil), h.attrs...)
	for _, a := range as {
		n.attrs = append(n.attrs, a.Key, a.Value.Resolve().Any())
	}
	return &n
}

func (h *hclogHandler) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		name = n.group + "." + name
	}
	n.group = name
	return &n
}
