package conf

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the .golden and .json files in testdata")

// checkGolden compares got with the file golden, or rewrites it with -update.
func checkGolden(t *testing.T, golden string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -update to accept):\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

// TestBadConfigs loads every testdata/bad/*.toml and compares the error
// text, one error per line, with the matching .golden file.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("only %d bad configs", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".toml"), func(t *testing.T) {
			cfg, err := Load(file)
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("config returned with error")
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error %T is not Errors: %v", err, err)
			}
			for _, e := range errs {
				if e.File != file || e.Line < 1 || e.Msg == "" {
					t.Errorf("incomplete error %#v", e)
				}
			}
			checkGolden(t, strings.TrimSuffix(file, ".toml")+".golden", []byte(err.Error()+"\n"))
		})
	}
}

// TestGoodConfigs parses testdata/good/*.toml and the examples and compares
// the resulting Config, as JSON, with the matching .json file. Relative
// paths are resolved against /etc/posthorn to keep the output stable.
func TestGoodConfigs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "good", "*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	examples, _ := filepath.Glob(filepath.Join("examples", "*.toml"))
	files = append(files, examples...)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".toml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := parse(file, data, "/etc/posthorn")
			if err != nil {
				t.Fatalf("unexpected errors:\n%v", err)
			}
			js, err := json.MarshalIndent(cfg, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "good", strings.TrimSuffix(filepath.Base(file), ".toml")+".json")
			checkGolden(t, golden, append(js, '\n'))
		})
	}
}
