package sdk_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/sdk/plugintest"
)

// TestReadmePluginBuildsAlone builds the README's "hello" plugin in a
// scratch module that requires only the SDK (through a replace pointing at
// this checkout): it must build, its module graph must not contain the
// MTA's module, and it must pass the conformance kit.
func TestReadmePluginBuildsAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a scratch module")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)`main.go`:\\s*```go\\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no main.go example")
	}
	sdkDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gomod := "module example.com/hello\n\ngo 1.26.0\n\nrequire github.com/posthorn/posthorn/sdk v0.0.0\n\nreplace github.com/posthorn/posthorn/sdk => " + sdkDir + "\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), m[1], 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("mod", "tidy")
	bin := filepath.Join(dir, "hello")
	run("build", "-o", bin, ".")
	mods := run("list", "-m", "all")
	for _, line := range strings.Split(mods, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "github.com/posthorn/posthorn" {
			t.Errorf("the plugin's module graph contains the MTA's module:\n%s", mods)
		}
	}
	if !strings.Contains(mods, "github.com/posthorn/posthorn/sdk v0.0.0 => "+sdkDir) {
		t.Errorf("the SDK is not in the module graph:\n%s", mods)
	}
	plugintest.Run(t, bin, plugintest.Options{Config: map[string]any{"greeting": "hi"}})
}
