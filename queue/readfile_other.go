//go:build !unix

package queue

import "os"

// msgFile is a message file opened read-only for recovery.
type msgFile struct{ *os.File }

func openMsgFile(path string) (*msgFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &msgFile{f}, nil
}

func (f *msgFile) size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// openFile opens a spool file.
func openFile(path string, flag int, perm uint32) (*os.File, error) {
	return os.OpenFile(path, flag, os.FileMode(perm))
}

// rename renames a file.
func rename(from, to string) error { return os.Rename(from, to) }
