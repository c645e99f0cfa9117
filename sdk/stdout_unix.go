//go:build unix

package sdk

import (
	"os"

	"golang.org/x/sys/unix"
)

// protectStdout keeps the handshake channel for go-plugin and points file
// descriptor 1 at standard error, so stray writes to fd 1 (fmt.Print before
// go-plugin swaps os.Stdout, C libraries, child processes) land in the log
// instead of corrupting the protocol.
func protectStdout() error {
	fd, err := unix.Dup(1)
	if err != nil {
		return err
	}
	unix.CloseOnExec(fd)
	handshake := os.NewFile(uintptr(fd), "plugin-handshake")
	if err := unix.Dup2(2, 1); err != nil {
		_ = handshake.Close()
		return err
	}
	// go-plugin prints the handshake line to os.Stdout and then replaces
	// os.Stdout with its stdio pipe to the host.
	os.Stdout = handshake
	return nil
}
