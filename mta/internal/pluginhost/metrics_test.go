package pluginhost

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/metrics"
)

// TestPluginMetrics: calls, latency and errors per plugin and hook, and
// whether the plugin is up.
func TestPluginMetrics(t *testing.T) {
	// The counters are process-wide: count from their values now (-count=N).
	calls0 := testutil.ToFloat64(metrics.PluginCalls.WithLabelValues("metered", "Inspect"))
	errors0 := testutil.ToFloat64(metrics.PluginErrors.WithLabelValues("nosuch", "Inspect", "not_running"))
	h, err := startHost(t, newTestAPI(), []conf.Plugin{pluginConf(t, "metered")})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, _, err := h.Inspect(context.Background(), "metered", env("a@b", "c@d"), strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	if n := testutil.ToFloat64(metrics.PluginCalls.WithLabelValues("metered", "Inspect")) - calls0; n != 3 {
		t.Errorf("calls %v, want 3", n)
	}
	if n := testutil.CollectAndCount(metrics.PluginLatency, "posthorn_plugin_call_seconds"); n == 0 {
		t.Error("no latency observed")
	}
	if up := testutil.ToFloat64(metrics.PluginUp.WithLabelValues("metered")); up != 1 {
		t.Errorf("up = %v", up)
	}
	h.Inspect(context.Background(), "nosuch", env("a@b"), strings.NewReader(msg))
	if n := testutil.ToFloat64(metrics.PluginErrors.WithLabelValues("nosuch", "Inspect", "not_running")) - errors0; n != 1 {
		t.Errorf("errors %v, want 1", n)
	}
	h.Stop()
	if up := testutil.ToFloat64(metrics.PluginUp.WithLabelValues("metered")); up != 0 {
		t.Errorf("up after Stop = %v", up)
	}
}
