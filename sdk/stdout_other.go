//go:build !unix

package sdk

func protectStdout() error { return nil }
