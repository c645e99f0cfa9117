//go:build !linux

package bodyfile

import (
	"errors"
	"io"
	"os"
)

// Supported reports whether this platform can pass bodies as files.
const Supported = false

var errUnsupported = errors.New("body files need Linux (memfd_create, file seals)")

// Pair fails: bodies travel in chunks on this platform.
func Pair() (*Channel, *os.File, error) { return nil, nil, errUnsupported }

// Open fails and closes f.
func Open(f *os.File) (*Channel, error) {
	f.Close()
	return nil, errUnsupported
}

// Create fails.
func Create(io.Reader, int64, error) (*os.File, int64, error) { return nil, 0, errUnsupported }

// CreateFrom fails.
func CreateFrom(FileSource, int64, error) (*os.File, int64, error) { return nil, 0, errUnsupported }

// Check fails.
func Check(*os.File, int64, int64, error) error { return errUnsupported }
