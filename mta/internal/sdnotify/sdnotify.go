// Package sdnotify speaks systemd's notify protocol (sd_notify(3)): one
// datagram per message to the unix socket named by $NOTIFY_SOCKET
// ("@name" is the abstract namespace). Outside systemd it does nothing.
package sdnotify

import (
	"context"
	"net"
	"os"
	"strconv"
	"time"
)

// Notify sends state (e.g. "READY=1", "RELOADING=1", "STOPPING=1",
// "WATCHDOG=1") and reports whether a notify socket was there.
func Notify(state string) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return true, err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return true, err
}

// Reloading is the message for the start of a reload: systemd (since
// 253, Type=notify-reload) wants the monotonic time with it.
func Reloading() string {
	t, _ := monotonicUsec()
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(t, 10)
}

// WatchdogInterval is how often to send WATCHDOG=1: half of
// $WATCHDOG_USEC when the watchdog is on for this process, else 0.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}

// Watchdog sends WATCHDOG=1 every interval while healthy() says so,
// until ctx is done. A daemon that hangs stops sending and systemd
// restarts it.
func Watchdog(ctx context.Context, interval time.Duration, healthy func() bool) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if healthy() {
				Notify("WATCHDOG=1")
			}
		}
	}
}
