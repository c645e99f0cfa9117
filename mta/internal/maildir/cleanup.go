package maildir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TmpMaxAge is how old a file in tmp/ must be before CleanTmp removes it:
// the Maildir specification's 36 hours, far longer than any delivery.
const TmpMaxAge = 36 * time.Hour

// CleanTmp removes files older than maxAge from the tmp/ directory of
// every Maildir at most depth directory levels below root (a Maildir is a
// directory with tmp, new and cur). Such files are left by a delivery that
// was killed mid-write; a reader never sees them. new/ and cur/ are never
// entered. It returns how many files it removed and the first error.
func CleanTmp(root string, depth int, maxAge time.Duration, now time.Time) (int, error) {
	removed := 0
	var first error
	keep := func(err error) {
		if first == nil && err != nil && !errors.Is(err, fs.ErrNotExist) {
			first = err
		}
	}
	root = filepath.Clean(root)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			keep(err)
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		level := 0
		if rel != "." {
			level = strings.Count(rel, string(filepath.Separator)) + 1
		}
		switch d.Name() {
		case "new", "cur":
			if level > 0 {
				return fs.SkipDir
			}
		case "tmp":
			if level > 0 && isDir(filepath.Join(path, "..", "new")) && isDir(filepath.Join(path, "..", "cur")) {
				n, err := cleanDir(path, maxAge, now)
				removed += n
				keep(err)
				return fs.SkipDir
			}
		}
		if level >= depth {
			return fs.SkipDir
		}
		return nil
	})
	keep(err)
	return removed, first
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func cleanDir(dir string, maxAge time.Duration, now time.Time) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	removed := 0
	var first error
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // gone meanwhile
		}
		if now.Sub(fi.ModTime()) < maxAge {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			if first == nil && !errors.Is(err, fs.ErrNotExist) {
				first = err
			}
			continue
		}
		removed++
	}
	return removed, first
}
