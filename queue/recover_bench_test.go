package queue

import (
	"bytes"
	"flag"
	"hash/crc32"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

var recoverN = flag.Int("queue-recover-n", 100000, "messages for BenchmarkRecover")

// writeSpool writes n message files of 1 KiB straight into dir's msg
// directory, in the format Enqueue writes, without fsync (only the
// recovery is being measured, not the fill).
func writeSpool(tb testing.TB, dir string, n int) {
	tb.Helper()
	q := open(tb, dir, nil)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = q.NewID()
	}
	if err := q.Close(); err != nil {
		tb.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789abcde\n"), 64)
	now := time.Now()
	for _, id := range ids {
		env := &Envelope{ID: id, From: "bench@example.org", Received: now, Size: int64(len(body)),
			ClientAddr: "192.0.2.1", ClientHelo: "client.example.org",
			Recipients: []*Recipient{{Addr: "rcpt@example.net", State: Pending, NextAttempt: now}}}
		rec, err := encodeEnvelopeRecord(env)
		if err != nil {
			tb.Fatal(err)
		}
		var b bytes.Buffer
		b.Write(encodeHeader(int64(len(body)), crc32.Checksum(body, castagnoli), 0))
		b.Write(body)
		b.Write(rec)
		if err := os.WriteFile(filepath.Join(dir, msgDirName, id), b.Bytes(), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkRecover times Open on a spool of -queue-recover-n messages
// (1 KiB each, one recipient; the files are in the page cache, so this is
// recovery's CPU and system-call cost, not the disk's); it reports the
// wall time and the process's CPU time per message.
func BenchmarkRecover(b *testing.B) {
	n := *recoverN
	dir := b.TempDir()
	writeSpool(b, dir, n)
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		q, err := Open(Options{Dir: dir, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		got := len(q.msgs)
		q.Close()
		if got != n {
			b.Fatalf("recovered %d of %d", got, n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/msg")
	// CPU of the process (all threads): on a loaded machine the wall
	// time says little, this does.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N*n), "cpu-µs/msg")
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
