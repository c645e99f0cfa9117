//go:build unix

package queue

import (
	"fmt"
	"os"
	"syscall"
)

// lockDir takes an exclusive flock on path, so that two processes never
// share a spool. The kernel drops the lock when the process dies.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("queue: %s is in use by another process: %w", path, err)
	}
	return f, nil
}
