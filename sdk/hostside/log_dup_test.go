package hostside

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	hclog "github.com/hashicorp/go-hclog"
)

// TestNoDuplicatePluginKey: a plugin's line that carries its own
// "plugin" key comes out as JSON with the key once.
func TestNoDuplicatePluginKey(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("plugin", "notify")
	h := newHCLogger(l, "notify").Named("posthorn-notify")
	h.Log(hclog.Info, "sent", "plugin", "notify", "to", "a@b")
	h.Log(hclog.Info, "other", "plugin", "smime")
	h.Debug("waiting for RPC address", "plugin", "/usr/lib/posthorn/posthorn-notify")
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if n := strings.Count(line, `"plugin":`); n != 1 {
			t.Errorf("key plugin %d times: %s", n, line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["plugin"] != "notify" {
			t.Errorf("bad line %s (%v)", line, err)
		}
	}
	if !strings.Contains(buf.String(), `"plugin_arg":"smime"`) || !strings.Contains(buf.String(), `"plugin_path":"/usr/lib/posthorn/posthorn-notify"`) {
		t.Errorf("a different plugin value is lost: %s", buf.String())
	}
}
