package daemon

import (
	"context"
	"log/slog"
	"strings"
	"time"

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

// CanHandleForTest asks plugin whether it could encrypt for rcpt (mail from
// sender), as the policy chain does.
func (d *Daemon) CanHandleForTest(plugin, sender, rcpt string) bool {
	if d.plugins == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	env := &sdk.Envelope{MailFrom: sender, Recipients: []sdk.Recipient{{Address: rcpt}}}
	ans, err := d.plugins.CanHandle(ctx, plugin, env, env.Recipients)
	return err == nil && len(ans) == 1 && ans[0].CanHandle
}
