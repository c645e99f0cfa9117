package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// recoverWorkers read and decode message files in parallel at Open. Each
// file is independent; several reads in flight also help a cold page
// cache (the disk sees a queue of requests instead of one at a time).
const recoverWorkers = 8

// readAhead is how much of a message file recovery reads with its first
// read: a file no larger than this (a message of up to ~15 KiB with its
// journal) costs one open, one read and one close.
const readAhead = 16 << 10

// recover loads every message file in the msg directory. It removes temp
// files (never acknowledged), messages with a tombstone or without pending
// recipients, truncates torn journal tails, and moves anything it cannot
// read to the quarantine directory. Only a failure to read the directory
// itself is an error.
//
// The files are read and decoded by recoverWorkers goroutines; the
// results are then registered in directory order, as a serial loop would.
// Every step on disk (remove, truncate, rename to quarantine) is
// idempotent, so a crash in the middle of recovery leaves a spool the
// next recovery handles the same way.
func (q *Queue) recover() error {
	entries, err := os.ReadDir(q.msgDir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	type result struct {
		m   *msg
		err error
	}
	results := make([]result, len(entries))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(recoverWorkers, len(entries)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, readAhead)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(entries) {
					return
				}
				name := entries[i].Name()
				if !entries[i].Type().IsRegular() {
					continue
				}
				if isSlotName(name) {
					results[i].m, results[i].err = q.loadSlot(name, buf)
					continue
				}
				if strings.HasPrefix(name, tmpPrefix) || !validID(name) {
					continue
				}
				results[i].m, results[i].err = q.load(name, buf)
			}
		}()
	}
	wg.Wait()
	var loaded, removed, quarantined, slots int
	var slotted []int // slot files holding a message, registered last
	for i, e := range entries {
		name := e.Name()
		path := filepath.Join(q.msgDir, name)
		if isSlotName(name) && e.Type().IsRegular() {
			switch m, err := results[i].m, results[i].err; {
			case err != nil:
				q.quarantine(name, err)
				quarantined++
				q.step()
			case m == nil:
				q.slotNames[name] = true
				q.slotFree = append(q.slotFree, path)
				slots++
			default:
				q.slotNames[name] = true
				slotted = append(slotted, i)
				slots++
			}
			continue
		}
		if strings.HasPrefix(name, tmpPrefix) {
			if err := os.RemoveAll(path); err != nil {
				q.log.Error("queue: could not remove temp file", "file", path, "err", err)
			} else if !strings.HasPrefix(name, sparePrefix) {
				q.log.Info("queue: removed unfinished temp file", "file", path)
			}
			removed++
			q.step()
			continue
		}
		if !e.Type().IsRegular() || !validID(name) {
			q.quarantine(name, errors.New("not a queue file"))
			quarantined++
			q.step()
			continue
		}
		m, err := results[i].m, results[i].err
		if err != nil {
			q.quarantine(name, err)
			quarantined++
			q.step()
			continue
		}
		if m == nil {
			removed++
			continue
		}
		q.msgs[name] = m
		q.schedule(m)
		loaded++
	}
	for _, i := range slotted {
		m := results[i].m
		if o := q.msgs[m.id]; o != nil && !o.slot && o.bodyLen == m.bodyLen && o.bodyCRC == m.bodyCRC {
			// The message was moved out of this slot into its own file
			// (leaveSlot) and a crash came before the slot's end was
			// durable: the file has the newer state.
			if err := markFree(m.path, q); err != nil {
				q.log.Error("queue: slot a message left could not be freed; left alone", "file", m.path, "err", err)
				continue
			}
			q.log.Info("queue: freed slot of a message that had moved to its own file", "queue_id", m.id, "file", m.path)
			q.slotFree = append(q.slotFree, m.path)
			continue
		}
		if q.msgs[m.id] != nil {
			// Cannot happen unless the spool was tampered with (or a
			// message that left its slot differs from the slot's copy):
			// keep a copy of the slot for the operator, and use the slot
			// again.
			err := q.quarantineCopy(m.path, m.id, fmt.Errorf("queue ID %s is already taken by %s", m.id, q.msgs[m.id].path))
			if err == nil {
				err = markFree(m.path, q)
			}
			if err != nil {
				q.log.Error("queue: slot whose queue ID is taken could not be set aside; left alone", "file", m.path, "err", err)
				continue
			}
			q.slotFree = append(q.slotFree, m.path)
			quarantined++
			continue
		}
		q.msgs[m.id] = m
		q.schedule(m)
		loaded++
	}
	if removed+quarantined > 0 {
		if err := q.dirF.Sync(); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
	}
	if loaded+removed+quarantined > 0 {
		q.log.Info("queue: recovered spool", "dir", q.dir, "messages", loaded,
			"removed", removed, "quarantined", quarantined, "slots", slots)
	}
	return nil
}

// prefixReaderAt serves reads from the first bytes of a file, read
// already, and reads the rest from the file.
type prefixReaderAt struct {
	prefix []byte
	f      io.ReaderAt
}

func (r *prefixReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= 0 && off+int64(len(p)) <= int64(len(r.prefix)) {
		return copy(p, r.prefix[off:]), nil
	}
	return r.f.ReadAt(p, off)
}

// openRead opens a message file and reads its start into buf: n bytes
// read, and the file's size (one read tells the size of a small file: a
// short read is its end).
func openRead(path string, buf []byte) (f *msgFile, n int, size int64, err error) {
	if f, err = openMsgFile(path); err != nil {
		return nil, 0, 0, err
	}
	n, err = f.ReadAt(buf, 0)
	switch {
	case err == io.EOF:
		return f, n, int64(n), nil
	case err != nil:
		f.Close()
		return nil, 0, 0, err
	}
	if size, err = f.size(); err != nil {
		f.Close()
		return nil, 0, 0, err
	}
	return f, n, size, nil
}

// load reads one message file, using buf (readAhead bytes) for its
// first read. It returns nil, nil for a message that is finished (deleted
// or no pending recipient) and was removed. It runs on several goroutines
// at once and touches only its own file.
func (q *Queue) load(id string, buf []byte) (*msg, error) {
	path := filepath.Join(q.msgDir, id)
	f, n, size, err := openRead(path, buf)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := decodeMessage(&prefixReaderAt{prefix: buf[:n], f: f}, size, id)
	if err != nil {
		return nil, err
	}
	finished := d.finished()
	if finished {
		f.Close()
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing finished message: %w", err)
		}
		q.log.Info("queue: removed finished message", "queue_id", id, "deleted", d.deleted)
		q.step()
		return nil, nil
	}
	if d.torn() {
		// The last append was cut short by a crash: drop it, so the next
		// record follows an intact one.
		q.log.Warn("queue: dropping torn journal record", "queue_id", id, "bytes", d.size-d.validLen)
		if err := q.truncate(path, d.validLen); err != nil {
			return nil, fmt.Errorf("truncating torn record: %w", err)
		}
	}
	q.step()
	return &msg{
		id: id, path: path, bodyLen: d.bodyLen, bodyCRC: d.bodyCRC, flags: d.flags,
		validLen: d.validLen, recBytes: d.validLen - headerSize - d.bodyLen,
		env: d.env, recovered: true, heapIdx: -1,
	}, nil
}

// step calls the crash tests' hook after each change recovery made or
// each file it loaded.
func (q *Queue) step() {
	if q.opts.recoverStep != nil {
		q.opts.recoverStep()
	}
}

// truncate cuts a message file to size and fsyncs it.
func (q *Queue) truncate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	if err := q.fsync(f); err != nil {
		return err
	}
	return f.Close()
}

// quarantine moves an unreadable entry of the msg directory to the
// quarantine directory, keeping its name (plus a suffix if taken).
func (q *Queue) quarantine(name string, why error) {
	src := filepath.Join(q.msgDir, name)
	dst := filepath.Join(q.qDir, name)
	if _, err := os.Lstat(dst); err == nil {
		dst += "." + strconv.FormatInt(time.Now().UnixNano(), 10)
	}
	if err := os.Rename(src, dst); err != nil {
		q.log.Error("queue: unreadable entry could not be quarantined; left in place and ignored",
			"file", src, "reason", why.Error(), "err", err)
		return
	}
	q.log.Error("queue: unreadable entry moved to quarantine", "file", src, "to", dst, "reason", why.Error())
	if err := syncPath(q.qDir); err != nil {
		q.log.Error("queue: syncing quarantine directory", "err", err)
	}
}
