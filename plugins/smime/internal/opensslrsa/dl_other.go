//go:build !cgo || !linux

package opensslrsa

import "errors"

func load() (string, error) {
	return "", errors.New("this posthorn-smime was built without cgo or not for Linux")
}

type key struct{}

func newKey([]byte, int) (*key, error) { return nil, ErrUnavailable }

func (*key) sign(int, []byte) ([]byte, error) { return nil, ErrUnavailable }
