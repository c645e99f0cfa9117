package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Slot files (issue 19): a fixed pool of message files under names that
// are not queue IDs (msg/slot-NNN), each either free or holding one
// message. Enqueue overwrites a free slot from offset 0 and fsyncs it
// once: no file is created, nothing is renamed, the directory is not
// touched, so the acknowledgement costs one file fsync. The header is the
// slot's commit point: recovery loads a slot only if its header has the
// slot magic, the body matches the header's CRC-32C, and the first record
// is the one whose checksum the header carries; later records are checked
// with a CRC seeded by that checksum. Whatever a crash tore out of an
// overwrite (any mix of old and new sectors) therefore fails one of these
// checks unless it is exactly the new message, or it is the old message,
// which the free table (fsynced) named finished before the slot was
// handed out. See the package documentation.
const (
	slotPrefix = "slot-"

	// defaultMaxSlots bounds the pool; Enqueue falls back to ID-named
	// files when every slot is in use.
	defaultMaxSlots = 128
	// defaultSlotMaxBody: a longer body goes to an ID-named file, so
	// recovery's full read of every slot stays bounded and Enqueue's
	// buffer (which holds that much before it picks a file) small.
	defaultSlotMaxBody = 128 << 10
)

func slotName(i int) string { return fmt.Sprintf("%s%03d", slotPrefix, i) }

// slotIndex is the number in a slot file's name (path or name), or -1.
func slotIndex(path string) int {
	name := filepath.Base(path)
	if !isSlotName(name) {
		return -1
	}
	i, err := strconv.Atoi(name[len(slotPrefix):])
	if err != nil || i >= maxSlotIndex {
		return -1
	}
	return i
}

// The free table (Dir/slotfree) marks slot messages finished: entry i
// (16 bytes at offset 16·i: "PHQF", u32 LE slot number i, u32 LE seed,
// u32 LE CRC-32C of the 12 bytes before it) says that the message with
// that seed in slot i is finished. Writing an entry and fsyncing the
// table (group commit: one fsync serves every finish that arrived while
// the previous one ran) is how Report and Delete finish a slot message;
// recovery frees a slot whose message has the seed its entry names.
// Entries never cross a 512-byte sector, and an entry that was durable
// stays so: a later write to its sector carries it along.
const (
	freeTableName  = "slotfree"
	freeEntrySize  = 16
	freeEntryMagic = "PHQF"
	maxSlotIndex   = 1 << 16
)

func encodeFreeEntry(i int, seed uint32) []byte {
	b := make([]byte, freeEntrySize)
	copy(b, freeEntryMagic)
	binary.LittleEndian.PutUint32(b[4:], uint32(i))
	binary.LittleEndian.PutUint32(b[8:], seed)
	binary.LittleEndian.PutUint32(b[12:], crc32.Checksum(b[:12], castagnoli))
	return b
}

// openFreeTable opens (creating) the free table and reads its entries
// into q.freed. Open fsyncs the spool directory afterwards, and recovery
// fsyncs the table once: an entry recovery relies on must be durable.
func (q *Queue) openFreeTable() error {
	f, err := os.OpenFile(filepath.Join(q.dir, freeTableName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSlotIndex*freeEntrySize))
	if err != nil {
		f.Close()
		return err
	}
	for i := 0; (i+1)*freeEntrySize <= len(data); i++ {
		b := data[i*freeEntrySize : (i+1)*freeEntrySize]
		if string(b[:4]) == freeEntryMagic && binary.LittleEndian.Uint32(b[4:]) == uint32(i) &&
			binary.LittleEndian.Uint32(b[12:]) == crc32.Checksum(b[:12], castagnoli) {
			q.freed[i] = binary.LittleEndian.Uint32(b[8:])
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	q.freeF = f
	return nil
}

// freedSeed reports whether seed is the one the free table holds for the
// slot at path.
func (q *Queue) freedSeed(path string, seed uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	s, ok := q.freed[slotIndex(path)]
	return ok && s == seed
}

// writeFreed makes the free table say that the message with seed in slot
// i is finished, durably.
func (q *Queue) writeFreed(i int, seed uint32) error {
	if i < 0 {
		return errors.New("not a slot")
	}
	if _, err := q.freeF.WriteAt(encodeFreeEntry(i, seed), int64(i)*freeEntrySize); err != nil {
		return err
	}
	done := make(chan error, 1)
	q.freeCh <- done
	return <-done
}

// isSlotName reports whether name is a slot file's name ("slot-" and
// digits); queue IDs never contain "-".
func isSlotName(name string) bool {
	d, ok := strings.CutPrefix(name, slotPrefix)
	if !ok || d == "" || len(d) > 9 {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	return true
}

// takeSlot returns a free slot to overwrite, or the path of a slot file
// to create (create true: fewer than the limit exist), or "" if every
// slot is in use; and the seed the free table holds for it (0 if none),
// which the new message must not have.
func (q *Queue) takeSlot() (path string, create bool, avoid uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if n := len(q.slotFree); n > 0 {
		p := q.slotFree[n-1]
		q.slotFree = q.slotFree[:n-1]
		return p, false, q.freed[slotIndex(p)]
	}
	if len(q.slotNames) >= q.opts.maxSlots {
		return "", false, 0
	}
	for i := 0; i < maxSlotIndex; i++ {
		name := slotName(i)
		if !q.slotNames[name] {
			q.slotNames[name] = true
			return filepath.Join(q.msgDir, name), true, q.freed[i]
		}
	}
	return "", false, 0
}

// takeSlotFor is takeSlot for a body that fits a slot (small), and
// nothing for one that does not.
func (q *Queue) takeSlotFor(small bool) (path string, create bool, avoid uint32) {
	if !small {
		return "", false, 0
	}
	return q.takeSlot()
}

// forgetSlot drops a slot name whose file is gone (unlinked or renamed
// to a message's ID).
func (q *Queue) forgetSlot(path string) {
	q.mu.Lock()
	delete(q.slotNames, filepath.Base(path))
	q.mu.Unlock()
}

// enqueueSlot writes message e into slot path and returns its in-memory
// state. Enqueue hands it only bodies of up to slotMaxBody; one whose
// first record's checksum is avoid (see writeFile) is finished as the
// ID-named file msg/ID instead (renamed, directory fsynced). A created
// slot's directory
// entry is fsynced before the message counts as written. A slot file
// that cannot be opened is taken out of use (its name stays taken, so it
// is neither handed out nor created again) and fallback is true: the
// caller writes an ID-named file instead.
func (q *Queue) enqueueSlot(path string, create bool, avoid uint32, id string, e *Envelope, in *head) (m *msg, fallback bool, err error) {
	flag := os.O_WRONLY
	if create {
		flag |= os.O_CREATE | os.O_EXCL
	}
	w, err := q.writeFile(path, flag, !create, true, avoid, e, in)
	if err != nil && !w.opened {
		q.log.Error("queue: slot file cannot be opened; not used until restart", "file", path, "err", err)
		return nil, true, nil
	}
	if err != nil {
		q.abandonSlot(path, create, w.wrote)
		return nil, false, fmt.Errorf("queue: writing %s: %w", id, err)
	}
	m = &msg{id: id, path: path, bodyLen: e.Size, bodyCRC: w.crc, flags: w.flags, env: e, heapIdx: -1,
		validLen: headerSize + e.Size + int64(len(w.rec)), recBytes: int64(len(w.rec))}
	if !w.slot {
		// Too long for a slot: it becomes an ordinary message file.
		m.path = filepath.Join(q.msgDir, id)
		if err := rename(path, m.path); err != nil {
			q.abandonSlot(path, create, true)
			return nil, false, fmt.Errorf("queue: %w", err)
		}
		q.forgetSlot(path)
		if err := q.syncDir(); err != nil {
			os.Remove(m.path)
			return nil, false, fmt.Errorf("queue: syncing directory: %w", err)
		}
		return m, false, nil
	}
	m.slot, m.seed = true, w.seed
	if create {
		if err := q.syncDir(); err != nil {
			q.abandonSlot(path, create, true)
			return nil, false, fmt.Errorf("queue: syncing directory: %w", err)
		}
	}
	return m, false, nil
}

// abandonSlot puts a slot back after a failed Enqueue. Untouched, it is
// still free. Written to, it must not hold the unacknowledged message:
// it is marked free (fsynced) or, failing that, removed. A slot created
// by this Enqueue is removed: its directory entry was never made durable,
// and a later Enqueue must not acknowledge a message in it.
func (q *Queue) abandonSlot(path string, created, written bool) {
	if !created && !written {
		q.releaseSlot(path)
		return
	}
	if !created && markFree(path, q) == nil {
		q.releaseSlot(path)
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		q.log.Error("queue: could not remove slot file", "file", path, "err", err)
		return // the name stays taken
	}
	q.forgetSlot(path)
}

func (q *Queue) releaseSlot(path string) {
	q.mu.Lock()
	q.slotFree = append(q.slotFree, path)
	q.mu.Unlock()
}

// markFree overwrites a slot file's header with the free header and
// fsyncs it.
func markFree(path string, q *Queue) error {
	f, err := openFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(freeHeader, 0); err != nil {
		return err
	}
	if err := q.fsync(f); err != nil {
		return err
	}
	return f.Close()
}

// freeSlot ends a finished (or deleted) message held in a slot: its
// entry in the free table is written and the table fsynced (group
// commit), so the message cannot come back, and only then is the slot
// handed to Enqueue again — once no BodyReader has it open (doneReading
// hands it over then). If the table cannot be written, the slot gets the
// free header (fsynced); if that fails too, the file is removed
// (directory fsynced).
func (q *Queue) freeSlot(m *msg) error {
	q.mu.Lock()
	m.removing = true
	q.mu.Unlock()
	i := slotIndex(m.path)
	err := q.writeFreed(i, m.seed)
	if err == nil {
		q.mu.Lock()
		q.freed[i] = m.seed
		q.mu.Unlock()
	} else {
		q.log.Error("queue: could not write the slot free table; marking the slot itself", "queue_id", m.id, "err", err)
		err = markFree(m.path, q)
	}
	if err != nil {
		q.log.Error("queue: could not mark slot free; removing it", "queue_id", m.id, "file", m.path, "err", err)
		if err = os.Remove(m.path); err == nil || errors.Is(err, os.ErrNotExist) {
			q.forgetSlot(m.path)
			err = q.syncDir()
		}
		if err != nil {
			return fmt.Errorf("queue: freeing slot of %s: %w", m.id, err)
		}
		return nil
	}
	q.handOver(m, m.path)
	return nil
}

// handOver gives a slot whose end is durable back to Enqueue, or, while
// a BodyReader of message m (which was in it) is open, once the last one
// is closed.
func (q *Queue) handOver(m *msg, path string) {
	q.mu.Lock()
	if m.readers == 0 {
		q.slotFree = append(q.slotFree, path)
	} else {
		m.slotWait = path
	}
	q.mu.Unlock()
}

// leaveSlot moves a message that is to wait for a later attempt out of
// its slot, so that deferred mail does not hold the slots that new mail
// is acknowledged fast in: its body and the record rec (its new state)
// are written to msg/.tmp-ID-unslot, fsynced, renamed to msg/ID and the
// directory fsynced; from then on it is an ID-named message, and the
// slot is ended like a delivered message's (free table) and handed over.
// A crash before the slot's end is durable leaves the message in both
// files: recovery keeps the ID-named one (it has the newer state) and
// frees the slot, since it holds the same ID and body. On an error
// before the rename is durable nothing has changed: the caller appends
// rec to the slot instead. m.io must be held.
func (q *Queue) leaveSlot(m *msg, rec []byte) error {
	slotPath, seed := m.path, m.seed
	dst := filepath.Join(q.msgDir, m.id)
	tmp := filepath.Join(q.msgDir, tmpPrefix+m.id+"-unslot")
	renamed := false
	err := func() error {
		src, err := openMsgFile(slotPath)
		if err != nil {
			return err
		}
		defer src.Close()
		f, err := openFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Write(encodeHeader(m.bodyLen, m.bodyCRC, m.flags)); err != nil {
			return err
		}
		// A section of the slot file and a file: copy_file_range where
		// the kernel can.
		if _, err := io.Copy(f, io.NewSectionReader(src, headerSize, m.bodyLen)); err != nil {
			return err
		}
		if _, err := f.Write(rec); err != nil {
			return err
		}
		if err := q.fsync(f); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := rename(tmp, dst); err != nil {
			return err
		}
		renamed = true
		return q.syncDir()
	}()
	if err != nil {
		os.Remove(tmp)
		if renamed {
			// Not known to be durable, and the slot stays the message's
			// file: the copy must not outlive it with an older state.
			os.Remove(dst)
			q.syncDir()
		}
		return fmt.Errorf("queue: moving %s out of its slot: %w", m.id, err)
	}
	q.mu.Lock()
	m.path, m.slot, m.seed = dst, false, 0
	m.validLen = headerSize + m.bodyLen + int64(len(rec))
	m.recBytes = int64(len(rec))
	q.mu.Unlock()
	q.leftSlots.Add(1)

	i := slotIndex(slotPath)
	if err := q.writeFreed(i, seed); err == nil {
		q.mu.Lock()
		q.freed[i] = seed
		q.mu.Unlock()
	} else if err := markFree(slotPath, q); err != nil {
		// The message is safe in its own file; the slot still holds an
		// older copy of it, which recovery would set aside (same ID).
		q.log.Error("queue: could not free the slot a message left; not used until restart",
			"queue_id", m.id, "file", slotPath, "err", err)
		return nil
	}
	q.handOver(m, slotPath)
	return nil
}

// loadSlot reads a slot file completely at recovery. It returns the
// message it holds, or nil if the slot is free: marked free, finished,
// or holding a write a crash interrupted (never acknowledged: a slot
// message is acknowledged only after its fsync). Such a slot is marked
// free (fsynced) before it can be reused; a slot already marked free is
// fsynced, in case the marker was written but not yet durable.
func (q *Queue) loadSlot(name string, buf []byte) (*msg, error) {
	path := filepath.Join(q.msgDir, name)
	m, why, err := q.readSlot(path, buf)
	if err != nil {
		return nil, err
	}
	if m != nil {
		q.step()
		return m, nil
	}
	switch why {
	case whyTable:
	case "":
		err = syncPath(path)
	default:
		q.log.Warn("queue: slot held no complete message (a write a crash interrupted, never acknowledged); freed",
			"file", path, "reason", why)
		err = markFree(path, q)
	}
	if err != nil {
		return nil, fmt.Errorf("marking slot free: %w", err)
	}
	q.step()
	return nil, nil
}

// whyTable: readSlot found a message the free table says is finished.
const whyTable = "finished (free table)"

// readSlot decodes a slot file at recovery. It returns the message
// (truncating a torn last record), or nil and why the slot is free (""
// if it has the free header, whyTable); err only for a file it cannot
// read. It reads q.freed without the lock: recovery does not change it.
func (q *Queue) readSlot(path string, buf []byte) (*msg, string, error) {
	f, n, size, err := openRead(path, buf)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	if n >= headerSize && string(buf[:8]) == freeMagic {
		return nil, "", nil
	}
	if n < headerSize || string(buf[:8]) != slotMagic {
		return nil, "no slot header", nil
	}
	// The slot's message may be one the free table says is finished.
	freedSeed, freed := q.freed[slotIndex(path)]
	bodyLen, _, _, err := decodeHeader(buf[:headerSize])
	if err != nil {
		return nil, err.Error(), nil
	}
	if headerSize+bodyLen > size {
		return nil, "body shorter than the header says", nil
	}
	r := &prefixReaderAt{prefix: buf[:n], f: f}
	d, err := decodeMessage(r, size, "")
	if errors.Is(err, errUnbound) {
		return nil, err.Error(), nil
	}
	if err != nil {
		// Header and first record belong together, so this is no torn
		// write but damage to a message that may have been acknowledged:
		// keep a copy for the operator before the slot is reused.
		if qerr := q.quarantineCopy(path, "damaged", err); qerr != nil {
			return nil, "", fmt.Errorf("%v; copying it to quarantine: %w", err, qerr)
		}
		return nil, err.Error(), nil
	}
	// Unlike an ID-named file, a slot is overwritten in place: only the
	// body's checksum shows that every sector of it is the new one.
	crc := uint32(0)
	for off := int64(0); off < d.bodyLen; {
		k := min(int64(len(buf)), d.bodyLen-off)
		if _, err := r.ReadAt(buf[:k], headerSize+off); err != nil {
			return nil, "", err
		}
		crc = crc32.Update(crc, castagnoli, buf[:k])
		off += k
	}
	if crc != d.bodyCRC {
		return nil, "body checksum mismatch", nil
	}
	id := d.env.ID
	if freed && d.seed == freedSeed {
		return nil, whyTable, nil
	}
	finished := d.finished()
	if finished {
		f.Close()
		if err := markFree(path, q); err != nil {
			return nil, "", fmt.Errorf("marking slot free: %w", err)
		}
		q.log.Info("queue: freed slot of finished message", "queue_id", id, "file", path, "deleted", d.deleted)
		return nil, "", nil
	}
	if d.torn() {
		q.log.Warn("queue: dropping torn journal record", "queue_id", id, "file", path, "bytes", d.size-d.validLen)
		if err := q.truncate(path, d.validLen); err != nil {
			return nil, "", fmt.Errorf("truncating torn record: %w", err)
		}
	}
	return &msg{
		id: id, path: path, bodyLen: d.bodyLen, bodyCRC: d.bodyCRC, flags: d.flags,
		validLen: d.validLen, recBytes: d.validLen - headerSize - d.bodyLen,
		env: d.env, recovered: true, heapIdx: -1, slot: true, seed: d.seed,
	}, "", nil
}

// quarantineCopy copies a slot file into the quarantine directory (the
// slot itself is then freed): used when its message's ID is taken, or
// when a record after its first one is damaged. tag is added to the name.
func (q *Queue) quarantineCopy(path, tag string, why error) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dst := filepath.Join(q.qDir, filepath.Base(path)+"."+tag)
	if _, err := os.Lstat(dst); err == nil {
		dst += "." + strconv.FormatInt(time.Now().UnixNano(), 10)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err == nil {
		err = syncPath(q.qDir)
	}
	if err != nil {
		return err
	}
	q.log.Error("queue: slot message copied to quarantine", "file", path, "to", dst, "reason", why.Error())
	return nil
}
