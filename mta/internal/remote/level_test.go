package remote

import (
	"context"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/tlspolicy"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// TestUnsetLevelNeverPlaintext: a policy whose level was never set (the
// zero value) is refused before any connection is made, whatever the
// server offers; it is never taken for "none" or "may".
func TestUnsetLevelNeverPlaintext(t *testing.T) {
	for _, mode := range []remotemta.Mode{remotemta.NoSTARTTLS, remotemta.STARTTLSSelfSigned, remotemta.STARTTLSValid} {
		t.Run(mode.String(), func(t *testing.T) {
			n := newNet(t)
			m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{Mode: mode})
			tr := n.transport("")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := tr.dial(ctx, dialSpec{host: "mx.dest.test", nexthop: "dest.test", addr: m.Addr(), policy: tlspolicy.Effective{}})
			if err == nil {
				c.close()
				t.Fatal("connected with an unset level")
			}
			if got := len(m.Connections()); got != 0 {
				t.Errorf("%d connections made with an unset level", got)
			}
		})
	}
}

// unsetAlias claims every sender is a secure alias without a level.
type unsetAlias struct{}

func (unsetAlias) SecureAlias(addr string) (string, conf.TLSLevel, bool) {
	return addr, conf.TLSUnset, true
}

// TestUnsetAliasLevelBounces: a secure alias whose level is somehow unset
// gets no delivery at all (a bounce, as for any alias TLS failure), even
// to a server without STARTTLS under a "may" default.
func TestUnsetAliasLevelBounces(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{Mode: remotemta.NoSTARTTLS})
	tr := n.transport("")
	tr.SetEnforcement(nil, nil, unsetAlias{})
	out := deliver(t, tr, env1("x@dest.test"), plainMsg)[0]
	if out.State == queue.Delivered || len(m.Messages()) != 0 {
		t.Fatalf("delivered with an unset alias level: %+v", out)
	}
	if len(m.Connections()) != 0 {
		t.Errorf("connected with an unset alias level")
	}
}
