package daemon_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestPprofEndpoint: the profiler is served on the metrics listener only
// with [metrics] pprof = true (issue 19); off by default.
func TestPprofEndpoint(t *testing.T) {
	get := func(e *testEnv) int {
		resp, err := http.Get("http://" + e.d.MetricsAddr() + "/debug/pprof/heap")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(startEnv(t, "")); code != http.StatusNotFound {
		t.Errorf("pprof off by default: got HTTP %d, want 404", code)
	}
	on := startEnvConfig(t, func(s string) string {
		return strings.Replace(s, "[metrics]\n", "[metrics]\npprof = true\n", 1)
	})
	if code := get(on); code != http.StatusOK {
		t.Errorf("pprof = true: got HTTP %d, want 200", code)
	}
}
