package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNotify: messages arrive as datagrams on $NOTIFY_SOCKET.
func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	for _, msg := range []string{"READY=1", Reloading(), "STOPPING=1"} {
		if ok, err := Notify(msg); !ok || err != nil {
			t.Fatalf("Notify(%q): %v %v", msg, ok, err)
		}
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 256)
		n, err := ln.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Errorf("got %q (%v), want %q", buf[:n], err, msg)
		}
	}
	if !strings.HasPrefix(Reloading(), "RELOADING=1\nMONOTONIC_USEC=") {
		t.Error(Reloading())
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if ok, _ := Notify("READY=1"); ok {
		t.Error("no socket, but sent")
	}
	t.Setenv("WATCHDOG_USEC", "4000000")
	t.Setenv("WATCHDOG_PID", "")
	if d := WatchdogInterval(); d != 2*time.Second {
		t.Errorf("watchdog interval %v", d)
	}
}
