package smtpd

import (
	"bytes"
	"io"
	"strings"
)

func replaceID(s, id string) string { return strings.Replace(s, "{ID}", id, 1) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
