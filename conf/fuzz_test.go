package conf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics and that its result is always
// either a config or a non-empty Errors of well-formed, one-line errors.
func FuzzParse(f *testing.F) {
	f.Add(DefaultTOML())
	for _, pattern := range []string{"testdata/bad/*.toml", "testdata/good/*.toml", "examples/*.toml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parse("fuzz.toml", data, "/base")
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		if cfg != nil {
			t.Fatal("config with error")
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("error is not a non-empty Errors: %#v", err)
		}
		for _, e := range errs {
			if e.File != "fuzz.toml" || e.Msg == "" || e.Line < 0 {
				t.Fatalf("bad error %#v", e)
			}
			if strings.Contains(e.Error(), "\n") {
				t.Fatalf("error spans lines: %q", e.Error())
			}
		}
	})
}
