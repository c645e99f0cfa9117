//go:build !unix

package queue

import (
	"fmt"
	"os"
)

// lockDir only creates the lock file: without flock, callers must make sure
// that one process at a time opens a spool.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return f, nil
}
