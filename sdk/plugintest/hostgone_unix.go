//go:build unix

package plugintest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

// hostGone starts the plugin under a shell, kills the shell with SIGKILL
// (no chance to clean up, like a crashed host) and expects the plugin to
// notice and exit.
func hostGone(t *testing.T, binary string) {
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(sh, "-c", `"$0" & echo "pid $!"; read x`, binary)
	cmd.Env = append(os.Environ(),
		sdk.Handshake.MagicCookieKey+"="+sdk.Handshake.MagicCookieValue,
		"PLUGIN_PROTOCOL_VERSIONS="+strconv.Itoa(sdk.ProtocolVersion),
		"PLUGIN_UNIX_SOCKET_DIR="+ShortTempDir(t))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer cmd.Wait()

	pid, handshake := 0, false
	lines := bufio.NewScanner(out)
	deadline := time.AfterFunc(20*time.Second, func() { out.Close() })
	for (pid == 0 || !handshake) && lines.Scan() {
		l := lines.Text()
		if p, ok := strings.CutPrefix(l, "pid "); ok {
			pid, _ = strconv.Atoi(p)
		} else if strings.Count(l, "|") >= 4 {
			handshake = true
		}
	}
	deadline.Stop()
	if pid == 0 || !handshake {
		cmd.Process.Kill()
		t.Fatalf("plugin did not start under sh (pid %d, handshake %v)", pid, handshake)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	limit := time.Now().Add(5 * time.Second)
	for time.Now().Before(limit) {
		if !alive(pid) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("plugin (pid %d) still running 5s after its host died: it must exit when the host is gone (sdk.Serve does)", pid)
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}
