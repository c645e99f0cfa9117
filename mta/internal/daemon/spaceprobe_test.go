package daemon

import (
	"errors"
	"testing"
	"time"
)

// TestSpaceProbe: the spool's free space is asked for at most every
// spaceProbeEvery; a failed probe is not remembered, and a clock that
// steps back probes again.
func TestSpaceProbe(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	calls, free := 0, uint64(1000)
	var fail error
	p := &spaceProbe{now: func() time.Time { return now }, probe: func() (uint64, error) {
		calls++
		return free, fail
	}}
	check := func(step string, want uint64, wantCalls int) {
		t.Helper()
		got, err := p.free()
		if err != nil || got != want || calls != wantCalls {
			t.Fatalf("%s: free %d err %v after %d probes, want %d after %d", step, got, err, calls, want, wantCalls)
		}
	}
	check("first", 1000, 1)
	free = 500
	now = now.Add(spaceProbeEvery - time.Millisecond)
	check("within the interval", 1000, 1)
	now = now.Add(time.Millisecond)
	check("interval over", 500, 2)
	free = 400
	now = now.Add(-time.Second)
	check("clock stepped back", 400, 3)
	fail = errors.New("statfs failed")
	now = now.Add(spaceProbeEvery)
	if _, err := p.free(); err == nil || calls != 4 {
		t.Fatalf("failed probe: err %v, %d probes", err, calls)
	}
	fail, free = nil, 300
	check("after a failure", 300, 5)
}
