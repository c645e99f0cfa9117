package plugintest

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Build compiles the plugin in package pkg (an import path, or a directory
// like "." relative to the test's working directory) and returns the
// binary's path, in a short temporary directory removed after the test.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	bin, err := BuildIn(ShortTempDir(t), pkg)
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	return bin
}

// BuildIn is Build for TestMain: it compiles pkg into dir and returns the
// binary's path.
func BuildIn(dir, pkg string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "go"
	}
	bin := filepath.Join(dir, "plugin")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	out, err := exec.Command(goBin, "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// ShortTempDir returns a new directory directly under os.TempDir(),
// removed after the test. t.TempDir() paths embed the test name and can
// push unix socket paths past their ~104-byte limit.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pt")
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestLogger returns a logger writing to t.Log at level and above; lines
// arriving after the test ended are dropped.
func TestLogger(t testing.TB, level slog.Level) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Message generates a well-formed RFC 5322 text/plain message of an exact
// size without holding it in memory.
type Message struct {
	size, sent int64
	pending    []byte
	line       int
}

// NewMessage returns a message of size bytes (at least the header size).
func NewMessage(size int64) *Message {
	hdr := "From: <sender@example.test>\r\n" +
		"To: <rcpt@example.test>\r\n" +
		"Subject: plugintest large message\r\n" +
		"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n" +
		"Message-ID: <plugintest@example.test>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n" +
		"\r\n"
	return &Message{size: size, pending: []byte(hdr)}
}

// Sent returns how many bytes were read so far.
func (m *Message) Sent() int64 { return m.sent }

func (m *Message) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(m.pending) == 0 {
			rest := m.size - m.sent
			if rest <= 0 {
				break
			}
			m.line++
			m.pending = fmt.Appendf(m.pending[:0], "%08d the quick brown fox jumps over the lazy dog, lorem ipsum dolor\r\n", m.line)
			if rest < int64(len(m.pending))+2 { // the last line: exactly rest bytes
				m.pending = bytes.Repeat([]byte{'x'}, int(rest))
				if rest >= 2 {
					copy(m.pending[rest-2:], "\r\n")
				}
			}
		}
		c := copy(p[n:], m.pending)
		m.pending = m.pending[c:]
		m.sent += int64(c)
		n += c
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}
