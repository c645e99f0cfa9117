package maildrop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrepareKeepsParentsSearchable: Prepare creates missing parents
// searchable by everyone and the drop directory with DirMode; Unreachable
// names a parent others cannot search.
func TestPrepareKeepsParentsSearchable(t *testing.T) {
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "var", "maildrop")
	if err := Prepare(dir); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode() != DirMode {
		t.Fatalf("drop directory %v %v, want %v", st, err, DirMode)
	}
	if st, err := os.Stat(filepath.Join(base, "var")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("parent %v %v, want 0755", st, err)
	}
	// t.TempDir's own parent is private to the test: make the whole chain
	// searchable for the positive case, then close one link.
	for p := filepath.Dir(base); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o001 == 0 {
			os.Chmod(p, st.Mode().Perm()|0o001)
		}
	}
	if err := Unreachable(dir); err != nil {
		t.Fatalf("all parents searchable, got %v", err)
	}
	if err := os.Chmod(filepath.Join(base, "var"), 0o750); err != nil {
		t.Fatal(err)
	}
	err := Unreachable(dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(base, "var")+" is mode 0750") {
		t.Fatalf("Unreachable with var 0750: %v", err)
	}
}
