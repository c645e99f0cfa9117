//go:build !unix

package plugintest

import "testing"

func hostGone(t *testing.T, _ string) { t.Skip("needs a unix system") }
