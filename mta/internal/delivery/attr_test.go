package delivery

import (
	"fmt"
	"testing"

	"github.com/posthorn/posthorn/queue"
)

// TestAttrDivertedKey: the key is stored in queued envelopes, so its form
// must never change; diverted finds it, and is empty without attributes.
func TestAttrDivertedKey(t *testing.T) {
	for _, i := range []int{0, 1, 9, 10, 12345, -1} {
		if got, want := AttrDiverted(i), fmt.Sprintf("divert.%d", i); got != want {
			t.Errorf("AttrDiverted(%d) = %q, want %q", i, got, want)
		}
	}
	env := &queue.Envelope{}
	if p := diverted(env, 0); p != "" {
		t.Errorf("no attributes: %q", p)
	}
	env.Attrs = map[string]string{"divert.1": "pgp", "other": "x"}
	if p := diverted(env, 1); p != "pgp" {
		t.Errorf("diverted(1) = %q", p)
	}
	if p := diverted(env, 0); p != "" {
		t.Errorf("diverted(0) = %q", p)
	}
}
