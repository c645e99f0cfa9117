//go:build !linux

package sdnotify

import "errors"

func monotonicUsec() (int64, error) { return 0, errors.New("no CLOCK_MONOTONIC") }
