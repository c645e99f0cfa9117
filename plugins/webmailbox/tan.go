package webmailbox

import (
	"errors"
	"io"
)

// TANCommand is "posthorn-webmailbox tan ...".
func TANCommand(args []string, stdout io.Writer) error {
	return errors.New("tan: not available yet")
}
