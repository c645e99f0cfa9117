package queue

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
)

// syncDir makes the renames and unlinks done so far in the msg directory
// durable. With group commit (the default) the request goes to the
// committer goroutine, which serves every request that arrived while its
// previous fsync ran with one fsync of the directory.
func (q *Queue) syncDir() error {
	if q.opts.noGroupCommit {
		q.dirSyncs.Add(1)
		return q.dirF.Sync()
	}
	done := make(chan error, 1)
	q.syncCh <- done
	return <-done
}

// committer batches fsyncs of f (the msg directory, or the slot free
// table). Every request is answered by an fsync that started after the
// request was made, so the caller's rename or write is covered.
func (q *Queue) committer(f *os.File, ch chan chan error, n *atomic.Int64) {
	defer q.wg.Done()
	var batch []chan error
	for {
		batch = batch[:0]
		select {
		case d := <-ch:
			batch = append(batch, d)
		case <-q.stop:
			return
		}
	drain:
		for {
			select {
			case d := <-ch:
				batch = append(batch, d)
			default:
				break drain
			}
		}
		n.Add(1)
		err := f.Sync()
		for _, d := range batch {
			d <- err
		}
	}
}

// appendRecord appends one journal record at m.validLen and fsyncs the
// file; if the journal has grown large it rewrites the file instead (see
// compact). m.io must be held.
func (q *Queue) appendRecord(m *msg, rec []byte) error {
	if n := m.recBytes + int64(len(rec)); n > q.opts.compactMin && n > 8*int64(len(rec)) && rec[8] == recEnvelope &&
		!(m.slot && q.freedSeed(m.path, binary.LittleEndian.Uint32(rec[4:]))) {
		// (A compacted slot's seed must differ from the one the free
		// table holds for it, or recovery would take it for finished:
		// in that one-in-2^32 case the record is appended instead.)
		return q.compact(m, rec)
	}
	if m.slot {
		sealRecord(rec, m.seed)
	}
	f, err := openFile(m.path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	_, err = f.WriteAt(rec, m.validLen)
	if err == nil {
		err = q.fsync(f)
	}
	if err != nil {
		// Leave no partial record behind for the next append to follow.
		f.Truncate(m.validLen)
		f.Close()
		return fmt.Errorf("queue: writing %s: %w", m.id, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("queue: writing %s: %w", m.id, err)
	}
	m.validLen += int64(len(rec))
	m.recBytes += int64(len(rec))
	return nil
}

// compact replaces the message file by one holding the body and only the
// record rec: written to a temp file, fsynced, renamed over the old file,
// directory fsynced. Open readers keep the old file, whose body is the same.
func (q *Queue) compact(m *msg, rec []byte) error {
	tmp := filepath.Join(q.msgDir, tmpPrefix+m.id+"-compact")
	err := func() error {
		src, err := os.Open(m.path)
		if err != nil {
			return err
		}
		defer src.Close()
		dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer dst.Close()
		hdr := encodeHeader(m.bodyLen, m.bodyCRC, m.flags)
		if m.slot {
			hdr = encodeSlotHeader(m.bodyLen, m.bodyCRC, m.flags, binary.LittleEndian.Uint32(rec[4:]))
		}
		if _, err := dst.Write(hdr); err != nil {
			return err
		}
		if _, err := src.Seek(headerSize, 0); err != nil {
			return err
		}
		// CopyN on two files lets the kernel copy (copy_file_range).
		if _, err := io.CopyN(dst, src, m.bodyLen); err != nil {
			return err
		}
		if _, err := dst.Write(rec); err != nil {
			return err
		}
		if err := q.fsync(dst); err != nil {
			return err
		}
		if err := dst.Close(); err != nil {
			return err
		}
		if err := rename(tmp, m.path); err != nil {
			return err
		}
		return q.syncDir()
	}()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("queue: rewriting %s: %w", m.id, err)
	}
	m.validLen = headerSize + m.bodyLen + int64(len(rec))
	m.recBytes = int64(len(rec))
	if m.slot {
		m.seed = binary.LittleEndian.Uint32(rec[4:])
	}
	return nil
}

// syncPath fsyncs a file or directory by name.
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if err2 := f.Close(); err == nil {
		err = err2
	}
	return err
}
