package maildrop

import (
	"context"
	"time"

	"golang.org/x/sys/unix"
)

// Watch calls fn whenever a file is renamed into or closed in dir, and
// every interval anyway, until ctx is done.
func Watch(ctx context.Context, dir string, interval time.Duration, fn func()) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err == nil {
		if _, err = unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE); err != nil {
			unix.Close(fd)
			fd = -1
		}
	} else {
		fd = -1
	}
	if fd < 0 {
		poll(ctx, interval, fn)
		return
	}
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	last := time.Now()
	for ctx.Err() == nil {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, _ := unix.Poll(fds, 500)
		changed := false
		if n > 0 {
			for {
				m, err := unix.Read(fd, buf)
				if m <= 0 || err != nil {
					break
				}
				changed = true
			}
		}
		if changed || time.Since(last) >= interval {
			last = time.Now()
			fn()
		}
	}
}
