//go:build !linux

package maildrop

import (
	"context"
	"time"
)

// Watch calls fn every interval until ctx is done (no inotify here).
func Watch(ctx context.Context, dir string, interval time.Duration, fn func()) {
	poll(ctx, interval, fn)
}
