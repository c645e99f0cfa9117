package webmailbox

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHclogHandler(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(&hclogHandler{l: hclog.New(&hclog.LoggerOptions{Output: &buf, JSONFormat: true, Level: hclog.Info})})
	l.Debug("hidden")
	l.With("plugin_part", "web").WithGroup("g").Warn("mailbox locked", "mailbox", "bob@x.test")
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, `"@message":"mailbox locked"`) || !strings.Contains(out, `"@level":"warn"`) ||
		!strings.Contains(out, `"g.mailbox":"bob@x.test"`) || !strings.Contains(out, `"plugin_part":"web"`) {
		t.Errorf("log output: %s", out)
	}
}
