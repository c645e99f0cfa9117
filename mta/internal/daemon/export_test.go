package daemon

import (
	"context"
	"log/slog"
	"strings"

	"github.com/posthorn/posthorn/sdk"
)

// EmitForTest hands an event to the plugins as if a plugin had emitted it.
func (d *Daemon) EmitForTest(ev sdk.Event) {
	if d.plugins != nil {
		d.plugins.Emit(ev)
	}
}

// SubmitForTest is Host.Submit as a plugin would call it.
func (d *Daemon) SubmitForTest(env *sdk.Envelope, body string, key string) (string, error) {
	return d.hostAPI.Submit(context.Background(), env, strings.NewReader(body), key)
}

// Logger is the daemon's logger.
func (d *Daemon) Logger() *slog.Logger { return d.log }
