package queue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// recover loads every message file in the msg directory. It removes temp
// files (never acknowledged), messages with a tombstone or without pending
// recipients, truncates torn journal tails, and moves anything it cannot
// read to the quarantine directory. Only a failure to read the directory
// itself is an error.
func (q *Queue) recover() error {
	entries, err := os.ReadDir(q.msgDir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	var loaded, removed, quarantined int
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(q.msgDir, name)
		if strings.HasPrefix(name, tmpPrefix) {
			if err := os.RemoveAll(path); err != nil {
				q.log.Error("queue: could not remove temp file", "file", path, "err", err)
			} else {
				q.log.Info("queue: removed unfinished temp file", "file", path)
			}
			removed++
			continue
		}
		if !e.Type().IsRegular() || !validID(name) {
			q.quarantine(name, errors.New("not a queue file"))
			quarantined++
			continue
		}
		m, err := q.load(name)
		if err != nil {
			q.quarantine(name, err)
			quarantined++
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
	if removed+quarantined > 0 {
		if err := q.dirF.Sync(); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
	}
	if loaded+removed+quarantined > 0 {
		q.log.Info("queue: recovered spool", "dir", q.dir, "messages", loaded,
			"removed", removed, "quarantined", quarantined)
	}
	return nil
}

// load reads one message file. It returns nil, nil for a message that is
// finished (deleted or no pending recipient) and was removed.
func (q *Queue) load(id string) (*msg, error) {
	path := filepath.Join(q.msgDir, id)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	d, err := decodeMessage(f, fi.Size(), id)
	if err != nil {
		return nil, err
	}
	finished := d.deleted
	if !finished {
		finished = true
		for _, r := range d.env.Recipients {
			if r.State == Pending {
				finished = false
			}
		}
	}
	if finished {
		f.Close()
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing finished message: %w", err)
		}
		q.log.Info("queue: removed finished message", "queue_id", id, "deleted", d.deleted)
		return nil, nil
	}
	if d.torn() {
		// The last append was cut short by a crash: drop it, so the next
		// record follows an intact one.
		q.log.Warn("queue: dropping torn journal record", "queue_id", id, "bytes", d.size-d.validLen)
		if err := f.Truncate(d.validLen); err != nil {
			return nil, fmt.Errorf("truncating torn record: %w", err)
		}
		if err := q.fsync(f); err != nil {
			return nil, fmt.Errorf("truncating torn record: %w", err)
		}
	}
	return &msg{
		id: id, path: path, bodyLen: d.bodyLen, bodyCRC: d.bodyCRC,
		validLen: d.validLen, recBytes: d.validLen - headerSize - d.bodyLen,
		env: d.env, recovered: true, heapIdx: -1,
	}, nil
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
