package daemon

import "github.com/posthorn/posthorn/sdk"

// EmitForTest hands an event to the plugins as if a plugin had emitted it.
func (d *Daemon) EmitForTest(ev sdk.Event) {
	if d.plugins != nil {
		d.plugins.Emit(ev)
	}
}
