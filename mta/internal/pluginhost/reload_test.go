package pluginhost

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/conf"
)

func pids(h *Host) map[string]int {
	m := map[string]int{}
	for _, s := range h.Status() {
		m[s.Name] = s.Pid
	}
	return m
}

// TestReconfigure: a reload restarts exactly the plugins whose settings
// or binary changed, starts new ones, stops removed ones, and refuses a
// binary that does not match its pinned checksum without changing
// anything.
func TestReconfigure(t *testing.T) {
	// A private copy of the binary, so that it can change on disk.
	bin := filepath.Join(t.TempDir(), "plug")
	b, err := os.ReadFile(testBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	mk := func(name string) conf.Plugin {
		c := pluginConf(t, name)
		c.Path = bin
		return c
	}
	same, cfgd, bin2 := mk("same"), mk("cfgd"), mk("bin")
	h, err := startHost(t, newTestAPI(), []conf.Plugin{same, cfgd, bin2})
	if err != nil {
		t.Fatal(err)
	}
	before := pids(h)

	// Unchanged settings: nothing restarts.
	started, err := h.Reconfigure(context.Background(), []conf.Plugin{same, cfgd, bin2})
	if err != nil || len(started) != 0 {
		t.Fatalf("no-op reload: started %v, err %v", started, err)
	}

	cfgd.Config = conf.PluginConfig{"name": "cfgd-renamed"}
	// The binary of "bin" changes: a copy at a new path with a byte more.
	bin2.Path = filepath.Join(t.TempDir(), "plug2")
	if err := os.WriteFile(bin2.Path, append(b, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	fresh := mk("fresh")
	started, err = h.Reconfigure(context.Background(), []conf.Plugin{same, cfgd, bin2, fresh})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(started)
	if !slices.Equal(started, []string{"bin", "cfgd", "fresh"}) {
		t.Errorf("restarted %v, want bin, cfgd, fresh", started)
	}
	after := pids(h)
	if after["same"] != before["same"] || after["same"] == 0 {
		t.Errorf("unchanged plugin restarted: pid %d -> %d", before["same"], after["same"])
	}
	for _, n := range []string{"cfgd", "bin"} {
		if after[n] == before[n] || after[n] == 0 {
			t.Errorf("%s not restarted: pid %d -> %d", n, before[n], after[n])
		}
	}
	if after["fresh"] == 0 {
		t.Error("new plugin not running")
	}
	// The binary of running plugins is replaced (as install does: a new
	// file renamed over the old): they restart.
	if err := os.WriteFile(bin+".new", append(b, 1, 2), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	started, err = h.Reconfigure(context.Background(), []conf.Plugin{same, cfgd, bin2, fresh})
	slices.Sort(started)
	if err != nil || !slices.Equal(started, []string{"cfgd", "fresh", "same"}) {
		t.Errorf("binary replaced in place: restarted %v, err %v", started, err)
	}

	// A pinned checksum that does not match refuses the whole reload.
	bad := fresh
	bad.SHA256 = strings.Repeat("ab", 32)
	cur := pids(h)
	if _, err := h.Reconfigure(context.Background(), []conf.Plugin{same, bad}); !errors.Is(err, ErrChecksum) {
		t.Fatalf("checksum mismatch: %v", err)
	}
	if got := pids(h); len(got) != 4 || got["fresh"] != cur["fresh"] || got["cfgd"] != cur["cfgd"] {
		t.Errorf("refused reload changed plugins: %v -> %v", cur, got)
	}

	// Removed plugins stop.
	if _, err := h.Reconfigure(context.Background(), []conf.Plugin{same}); err != nil {
		t.Fatal(err)
	}
	if st := h.Status(); len(st) != 1 || st[0].Name != "same" {
		t.Errorf("after removing: %+v", st)
	}
	for _, n := range []string{"cfgd", "bin", "fresh"} {
		if p, err := os.FindProcess(cur[n]); err == nil && p.Signal(nil) == nil && processAlive(cur[n]) {
			t.Errorf("removed plugin %s (pid %d) still running", n, cur[n])
		}
	}
}

// processAlive reports whether pid is a live process (not a zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

// TestReconfigureMaxMessageSize: plugins are told max_message_size when
// they start, so a reload that changes it restarts them (once).
func TestReconfigureMaxMessageSize(t *testing.T) {
	c := pluginConf(t, "sized")
	h, err := startHost(t, newTestAPI(), []conf.Plugin{c})
	if err != nil {
		t.Fatal(err)
	}
	before := pids(h)
	h.SetMaxMessageSize(4 << 20)
	started, err := h.Reconfigure(context.Background(), []conf.Plugin{c})
	if err != nil || !slices.Equal(started, []string{"sized"}) {
		t.Fatalf("reload with a new size limit: started %v, err %v", started, err)
	}
	if after := pids(h); after["sized"] == before["sized"] || after["sized"] == 0 {
		t.Errorf("not restarted: pid %d -> %d", before["sized"], after["sized"])
	}
	if started, err := h.Reconfigure(context.Background(), []conf.Plugin{c}); err != nil || len(started) != 0 {
		t.Errorf("the same limit again: started %v, err %v", started, err)
	}
}
