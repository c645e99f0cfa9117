// Package wait lets a test wait for a condition with a deadline instead of
// sleeping a fixed time: the test goes on as soon as the condition holds
// and fails with a clear message when it never does. The poll interval is
// short (10 ms) and grows to 100 ms, so a fast condition costs little and
// a slow one does not spin.
package wait

import (
	"testing"
	"time"
)

// For waits until cond returns true, for at most timeout; then it fails
// the test, saying what it waited for.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Until waits until cond returns true, for at most timeout, and reports
// whether it did.
func Until(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	interval := 10 * time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval) // poll interval, not a wait
		if interval < 100*time.Millisecond {
			interval += 10 * time.Millisecond
		}
	}
}
