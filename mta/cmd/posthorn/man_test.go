package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestManPagesCurrent: the committed man pages are what `posthorn man`
// makes from --help's and config default's text (make man regenerates).
func TestManPagesCurrent(t *testing.T) {
	for _, page := range []string{"posthorn.8", "posthorn.toml.5"} {
		want, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "man", page))
		if err != nil {
			t.Fatalf("%v (run make man)", err)
		}
		code, got := runCLI(t, "man", page)
		if code != 0 || got != string(want) {
			t.Errorf("docs/man/%s is stale: run make man and commit", page)
		}
	}
}
