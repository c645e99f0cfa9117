package delivery

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// TestSpill: a transformed message stays in memory up to memOutput bytes
// and goes to a spool file beyond, whatever the pieces it is written in;
// it reads back whole, more than once.
func TestSpill(t *testing.T) {
	for _, size := range []int{0, 1, memOutput - 1, memOutput, memOutput + 1, 3*memOutput + 7} {
		for _, piece := range []int{1000, 256<<10 - 64, memOutput + 5} {
			dir := t.TempDir()
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i * 7)
			}
			sp := &spill{dir: dir}
			for rest := data; len(rest) > 0; {
				k := min(piece, len(rest))
				if n, err := sp.Write(rest[:k]); err != nil || n != k {
					t.Fatalf("%d/%d: wrote %d, %v", size, piece, n, err)
				}
				rest = rest[k:]
			}
			files, _ := os.ReadDir(dir)
			if inFile := size > memOutput; (sp.f != nil) != inFile || len(files) != map[bool]int{true: 1}[inFile] {
				t.Fatalf("%d/%d: file %v, %d files in the spool", size, piece, sp.f != nil, len(files))
			}
			if sp.f != nil {
				sp.f.Close()
			}
			for range 2 {
				rc, err := sp.body()()
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("%d/%d: read back %d bytes, %v", size, piece, len(got), err)
				}
			}
		}
	}
}
