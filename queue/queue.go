package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotFound is returned for a queue ID that is not (or no longer) in the
// queue.
var ErrNotFound = errors.New("queue: no such message")

// ErrClosed is returned by calls on a closed queue.
var ErrClosed = errors.New("queue: closed")

// Options configure a Queue. Only Dir is required.
type Options struct {
	// Dir is the spool directory; it is created if missing.
	Dir string
	// MinBackoff is the delay before the first retry (default 5m).
	MinBackoff time.Duration
	// MaxBackoff caps the retry delay before jitter (default 4000s).
	MaxBackoff time.Duration
	// MaxLifetime is how long a message may stay queued (default 5 days).
	MaxLifetime time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Jitter returns a number in [0,1) (default math/rand); see Backoff.
	Jitter func() float64
	// Logger gets recovery, quarantine and I/O error reports (default
	// slog.Default()).
	Logger *slog.Logger

	// noGroupCommit makes every Enqueue fsync the directory itself
	// (benchmarks compare both).
	noGroupCommit bool
	// compactMin overrides the journal size that triggers a rewrite.
	compactMin int64
	// recoverStep, if set (crash tests), is called after each file
	// recovery loaded, removed or quarantined, on several goroutines.
	recoverStep func()
	// maxSlots overrides the number of slot files (negative: none);
	// slotMaxBody the longest body kept in a slot.
	maxSlots    int
	slotMaxBody int64
}

const (
	defaultMinBackoff  = 5 * time.Minute
	defaultMaxBackoff  = 4000 * time.Second
	defaultMaxLifetime = 5 * 24 * time.Hour
	defaultCompactMin  = 256 << 10

	msgDirName  = "msg"
	quarDirName = "quarantine"
	lockName    = "lock"
	tmpPrefix   = ".tmp-"
	sparePrefix = tmpPrefix + "spare-"

	// maxSpare bounds the finished message files kept for reuse.
	maxSpare = 64
)

// Queue is the durable spool. All methods are safe for concurrent use.
type Queue struct {
	opts              Options
	log               *slog.Logger
	dir, msgDir, qDir string
	dirF              *os.File // msgDir, kept open for fsync
	lockF             *os.File

	mu       sync.Mutex // guards everything below and every msg's in-memory state
	msgs     map[string]*msg
	inflight map[string]bool // IDs being enqueued
	due      dueHeap
	changed  chan struct{} // closed and replaced when leasable work may have appeared
	closed   bool
	ops      sync.WaitGroup // calls that may write; Close waits for them

	idMu       sync.Mutex
	lastMicros int64

	syncCh chan chan error
	// freeF is the slot free table (see slot.go), freeCh its committer's
	// requests; freed the seeds it holds, by slot number (guarded by mu).
	freeF  *os.File
	freeCh chan chan error
	freed  map[int]uint32
	stop   chan struct{}
	wg     sync.WaitGroup

	// spare are files of finished messages, renamed to sparePrefix+N in
	// the msg directory, whose removal is durable; Enqueue overwrites one
	// instead of creating a file (see reuseFile). spareBusy counts those
	// on their way in. Both guarded by mu.
	spare     []string
	spareBusy int
	spareSeq  atomic.Uint64

	// slotFree are slot files (see slot.go) whose free header is durable
	// and that no reader has open; slotNames all slot files that exist or
	// are being created. Both guarded by mu.
	slotFree  []string
	slotNames map[string]bool
	// bufs are Enqueue's buffers: room for the header and the first
	// slotMaxBody+1 bytes of a body (which decide whether it goes into a
	// slot), at least 128 KiB.
	bufs sync.Pool

	fileSyncs, dirSyncs atomic.Int64 // for tests and benchmarks
	slotEnqueues        atomic.Int64 // Enqueues that went into a slot
	leftSlots           atomic.Int64 // deferred messages moved out of their slot
}

// msg is the in-memory state of one queued message.
type msg struct {
	id      string
	path    string
	bodyLen int64
	bodyCRC uint32
	flags   byte   // header flags, fixed with the body
	slot    bool   // path is a slot file (slot format)
	seed    uint32 // slot format: checksum seed of the records after the first

	io sync.Mutex // serialises writes to the file; taken before Queue.mu

	// guarded by io:
	validLen int64 // end of the last intact record
	recBytes int64 // bytes of journal records

	// guarded by Queue.mu:
	env       *Envelope // never handed out; replaced, not mutated, by writers
	readers   int       // open BodyReaders: the file must not be reused
	slotWait  string    // a slot freed while read: handed over when readers is 0
	removing  bool      // finished: its file is being removed or reused
	leased    bool
	deleted   bool // Delete while leased: remove when the lease ends
	gone      bool // removed from the queue
	recovered bool
	heapIdx   int
	dueAt     time.Time
}

// Open opens (creating if needed) the spool in opts.Dir and recovers every
// message in it; see the package documentation for what recovery does.
// A spool can be open in only one process at a time.
func Open(opts Options) (*Queue, error) {
	if opts.Dir == "" {
		return nil, errors.New("queue: no directory given")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = defaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = defaultMaxBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.MaxLifetime <= 0 {
		opts.MaxLifetime = defaultMaxLifetime
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Jitter == nil {
		opts.Jitter = rand.Float64
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.compactMin <= 0 {
		opts.compactMin = defaultCompactMin
	}
	switch {
	case opts.maxSlots == 0:
		opts.maxSlots = defaultMaxSlots
	case opts.maxSlots < 0:
		opts.maxSlots = 0
	}
	if opts.slotMaxBody <= 0 {
		opts.slotMaxBody = defaultSlotMaxBody
	}
	bufLen := max(128<<10, headerSize+int(opts.slotMaxBody)+1)
	q := &Queue{
		opts:      opts,
		log:       opts.Logger,
		dir:       opts.Dir,
		msgDir:    filepath.Join(opts.Dir, msgDirName),
		qDir:      filepath.Join(opts.Dir, quarDirName),
		msgs:      map[string]*msg{},
		inflight:  map[string]bool{},
		slotNames: map[string]bool{},
		changed:   make(chan struct{}),
		bufs:      sync.Pool{New: func() any { b := make([]byte, bufLen); return &b }},
		syncCh:    make(chan chan error, 1024),
		freeCh:    make(chan chan error, 1024),
		freed:     map[int]uint32{},
		stop:      make(chan struct{}),
	}
	for _, d := range []string{q.dir, q.msgDir, q.qDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	var err error
	if q.lockF, err = lockDir(filepath.Join(q.dir, lockName)); err != nil {
		return nil, err
	}
	if q.dirF, err = os.Open(q.msgDir); err != nil {
		q.lockF.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := q.openFreeTable(); err != nil {
		q.dirF.Close()
		q.lockF.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := q.recover(); err != nil {
		q.freeF.Close()
		q.dirF.Close()
		q.lockF.Close()
		return nil, err
	}
	// The directories themselves must survive a crash too.
	for _, d := range []string{q.dir, q.msgDir, q.qDir} {
		if err := syncPath(d); err != nil {
			q.freeF.Close()
			q.dirF.Close()
			q.lockF.Close()
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	q.wg.Add(2)
	go q.committer(q.dirF, q.syncCh, &q.dirSyncs)
	go q.committer(q.freeF, q.freeCh, &q.fileSyncs)
	return q, nil
}

// Close waits for writes under way, then releases the spool. Blocked
// Lease calls return ErrClosed; outstanding leases simply lapse.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.signal()
	q.mu.Unlock()
	q.ops.Wait()
	close(q.stop)
	q.wg.Wait()
	q.mu.Lock()
	for _, p := range q.spare {
		os.Remove(p)
	}
	q.spare = nil
	q.mu.Unlock()
	err := q.dirF.Close()
	if err2 := q.freeF.Close(); err == nil {
		err = err2
	}
	if err2 := q.lockF.Close(); err == nil {
		err = err2
	}
	return err
}

// begin registers a writing call; end must follow.
func (q *Queue) begin() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	q.ops.Add(1)
	return nil
}

func (q *Queue) end() { q.ops.Done() }

// signal wakes Lease callers; q.mu must be held.
func (q *Queue) signal() {
	close(q.changed)
	q.changed = make(chan struct{})
}

func (q *Queue) now() time.Time { return q.opts.Now() }

// NewID returns a fresh queue ID: 16 characters of [0-9A-Za-z], the first
// nine encoding the wall-clock time in microseconds (strictly increasing
// within a process), so IDs sort by creation time; the last seven are
// random. Callers that need the ID before the message is written (for a
// Received header) reserve it here and pass it in Envelope.ID to Enqueue.
func (q *Queue) NewID() string {
	q.idMu.Lock()
	us := time.Now().UnixMicro()
	if us <= q.lastMicros {
		us = q.lastMicros + 1
	}
	q.lastMicros = us
	q.idMu.Unlock()
	var b [16]byte
	v := uint64(us)
	for i := 8; i >= 0; i-- {
		b[i] = idAlphabet[v%62]
		v /= 62
	}
	r := rand.Uint64()
	for i := 9; i < 16; i++ {
		b[i] = idAlphabet[r%62]
		r /= 62
	}
	return string(b[:])
}

// Enqueue writes a message durably and returns its queue ID.
//
// env.ID is kept if set (it must be a valid, unused ID, normally from
// NewID) and assigned otherwise. Enqueue sets Received (if zero) and Size,
// and makes every recipient Pending and due now, with no attempts (Held
// and Attrs are kept, so a message can be queued on hold); it updates env
// in place on success. The body is streamed to disk, never
// held in memory. Enqueue returns only once the message file and its
// directory entry are on stable storage (see the package documentation):
// only then may the caller acknowledge the message.
func (q *Queue) Enqueue(env *Envelope, body io.Reader) (string, error) {
	if env == nil || len(env.Recipients) == 0 {
		return "", errors.New("queue: message without recipients")
	}
	for i, r := range env.Recipients {
		if r == nil {
			return "", fmt.Errorf("queue: recipient %d is nil", i)
		}
	}
	if err := q.begin(); err != nil {
		return "", err
	}
	defer q.end()

	id := env.ID
	if id == "" {
		id = q.NewID()
	} else if !validID(id) {
		return "", fmt.Errorf("queue: invalid queue ID %q", id)
	}
	q.mu.Lock()
	if q.msgs[id] != nil || q.inflight[id] {
		q.mu.Unlock()
		return "", fmt.Errorf("queue: queue ID %s is already in use", id)
	}
	q.inflight[id] = true
	q.mu.Unlock()
	committed := false
	defer func() {
		if !committed {
			q.mu.Lock()
			delete(q.inflight, id)
			q.mu.Unlock()
		}
	}()

	now := q.now()
	e := cloneEnvelope(env)
	e.ID = id
	e.Recovered = false
	if e.Received.IsZero() {
		e.Received = now
	}
	for _, r := range e.Recipients {
		*r = Recipient{Addr: r.Addr, ORcpt: r.ORcpt, Notify: r.Notify, State: Pending, NextAttempt: now}
	}

	// Whether a message goes into a slot depends on its size, which is
	// known only at the end of the body: up to slotMaxBody+1 bytes are
	// read first. A longer body goes to an ID-named file (a spare's
	// blocks reused) and never through a slot, whose name it would take
	// along (issue 19: at 1 MiB, a new slot file per message cost a
	// third of the throughput).
	bp := q.bufs.Get().(*[]byte)
	defer q.bufs.Put(bp)
	in, err := readHead(*bp, int(q.opts.slotMaxBody)+1, body)
	if err != nil {
		return "", fmt.Errorf("queue: writing %s: %w", id, err)
	}
	small := in.eof

	var m *msg
	fallback := true
	if slot, create, avoid := q.takeSlotFor(small); slot != "" {
		var err error
		if m, fallback, err = q.enqueueSlot(slot, create, avoid, id, e, in); err != nil {
			return "", err
		}
		if m != nil && m.slot {
			q.slotEnqueues.Add(1)
		}
	}
	if fallback {
		path := filepath.Join(q.msgDir, id)
		tmp, reuse := q.takeSpare(), true
		if tmp == "" {
			tmp, reuse = filepath.Join(q.msgDir, tmpPrefix+id), false
		}
		flag := os.O_WRONLY | os.O_CREATE | os.O_EXCL
		if reuse {
			flag = os.O_WRONLY
		}
		w, err := q.writeFile(tmp, flag, reuse, false, 0, e, in)
		if err != nil {
			os.Remove(tmp)
			return "", fmt.Errorf("queue: writing %s: %w", id, err)
		}
		if err := rename(tmp, path); err != nil {
			os.Remove(tmp)
			return "", fmt.Errorf("queue: %w", err)
		}
		if err := q.syncDir(); err != nil {
			// Not acknowledged, so it must not be delivered either.
			os.Remove(path)
			return "", fmt.Errorf("queue: syncing directory: %w", err)
		}
		m = &msg{id: id, path: path, bodyLen: e.Size, bodyCRC: w.crc, flags: w.flags, env: e, heapIdx: -1,
			validLen: headerSize + e.Size + int64(len(w.rec)), recBytes: int64(len(w.rec))}
	}
	q.mu.Lock()
	delete(q.inflight, id)
	committed = true
	q.msgs[id] = m
	q.schedule(m)
	q.mu.Unlock()

	env.ID, env.Received, env.Size, env.Recovered = id, e.Received, e.Size, false
	for i, r := range env.Recipients {
		*r = *e.Recipients[i]
		r.Notify = slices.Clone(r.Notify)
	}
	return id, nil
}

// written is what writeFile wrote.
type written struct {
	crc    uint32 // of the body
	flags  byte   // header flags (whether the body is in SMTP DATA form)
	rec    []byte // the first record
	slot   bool   // written in slot format
	seed   uint32 // slot format: the first record's checksum
	opened bool   // the file was opened (also on error)
	wrote  bool   // something was written to it (also on error)
}

// head is the start of a body that Enqueue has read: buf[headerSize:n]
// holds its first bytes, rest the others (none if eof). buf is the
// buffer writeFile writes the file from.
type head struct {
	buf  []byte
	n    int
	rest io.Reader
	eof  bool // the body ended within buf
}

// readHead reads up to limit bytes of body into buf behind the room for
// the header (limit ≤ len(buf)−headerSize).
func readHead(buf []byte, limit int, body io.Reader) (*head, error) {
	k, err := io.ReadFull(body, buf[headerSize:headerSize+limit])
	switch err {
	case nil:
		return &head{buf: buf, n: headerSize + k, rest: body}, nil
	case io.EOF, io.ErrUnexpectedEOF:
		return &head{buf: buf, n: headerSize + k, eof: true}, nil
	}
	return nil, err
}

// writeFile writes header, body and first envelope record to a file
// opened with flag, over an existing one if reuse (cut to its new
// length), and fsyncs it. It sets e.Size. With slot, a body of up to
// slotMaxBody gets the slot header (see slot.go), a longer one the
// ordinary header. The body is gathered in in's buffer (which already
// holds its start) behind room for the header: a message that fits (up
// to the buffer's size with its record) goes to the file in one write,
// header and record included; a larger one in writes of the
// whole buffer, then its record, and the header last at offset 0 (issue
// 19: the copy used to write the header, each read of the body and the
// record separately).
//
// A slot message whose first record's checksum equals avoid (the seed the
// free table holds for that slot) is written with the ordinary header
// too: recovery would take it for the finished message.
func (q *Queue) writeFile(path string, flag int, reuse, slot bool, avoid uint32, e *Envelope, in *head) (w written, err error) {
	f, err := openFile(path, flag, 0o600)
	if err != nil {
		return w, err
	}
	w.opened = true
	defer f.Close()
	buf := in.buf
	clear(buf[:headerSize]) // until the real header is known
	n := in.n               // buf[:n] is not written yet
	var off int64           // file offset of buf[0]
	size := int64(n - headerSize)
	crc := crc32.Update(0, castagnoli, buf[headerSize:n])
	scan := newDataScan()
	scan.write(buf[headerSize:n])
	for body := in.rest; !in.eof; {
		if n == len(buf) {
			w.wrote = true
			if _, err := f.Write(buf); err != nil {
				return w, err
			}
			off += int64(n)
			n = 0
		}
		m, rerr := body.Read(buf[n:])
		crc = crc32.Update(crc, castagnoli, buf[n:n+m])
		scan.write(buf[n : n+m])
		size += int64(m)
		n += m
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return w, rerr
		}
	}
	e.Size = size
	rec, err := encodeEnvelopeRecord(e)
	if err != nil {
		return w, err
	}
	flags := scan.flags()
	hdr := encodeHeader(size, crc, flags)
	if slot && size <= q.opts.slotMaxBody && binary.LittleEndian.Uint32(rec[4:]) != avoid {
		w.slot, w.seed = true, binary.LittleEndian.Uint32(rec[4:])
		hdr = encodeSlotHeader(size, crc, flags, w.seed)
	}
	w.wrote = true
	if off == 0 {
		copy(buf, hdr)
	}
	if n+len(rec) <= len(buf) {
		n += copy(buf[n:], rec)
		_, err = f.Write(buf[:n])
	} else if _, err = f.Write(buf[:n]); err == nil {
		_, err = f.Write(rec)
	}
	if err == nil && reuse {
		// The earlier message may have been longer: nothing of it may
		// follow the new record (recovery would read it as records).
		// An fstat is cheaper than a truncate that changes nothing.
		end := headerSize + size + int64(len(rec))
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && fi.Size() != end {
			err = f.Truncate(end)
		}
	}
	if err != nil {
		return w, err
	}
	if off > 0 {
		if _, err := f.WriteAt(hdr, 0); err != nil {
			return w, err
		}
	}
	if err := q.fsync(f); err != nil {
		return w, err
	}
	w.crc, w.flags, w.rec = crc, flags, rec
	return w, f.Close()
}

func (q *Queue) fsync(f *os.File) error {
	q.fileSyncs.Add(1)
	return f.Sync()
}

// BodyReader reads the content of one queued message. It is an
// io.SectionReader (Read, ReadAt, Seek, Size) over the message file.
type BodyReader struct {
	*io.SectionReader
	f         *os.File
	dataReady bool
	done      func() // once, at the first Close
}

// Close closes the underlying file.
func (b *BodyReader) Close() error {
	if b.done != nil {
		b.done()
		b.done = nil
	}
	return b.f.Close()
}

func (q *Queue) doneReading(m *msg) {
	q.mu.Lock()
	m.readers--
	if m.readers == 0 && m.slotWait != "" {
		q.slotFree = append(q.slotFree, m.slotWait)
		m.slotWait = ""
	}
	q.mu.Unlock()
}

// DataReady reports whether the body is known to be in SMTP DATA form
// already (RFC 5321 §4.5.2): no line begins with ".", every LF follows a
// CR, and it ends with CRLF. Then the DATA dot-stuffing changes nothing,
// and the whole body followed by ".\r\n" is the data as it goes on the
// wire. Enqueue saw every byte of the body and stored the answer with it;
// false means no, or a message spooled before the queue recorded it.
// It describes the spooled bytes only: a reader that wraps a BodyReader
// (a signature, a conversion) has other bytes.
func (b *BodyReader) DataReady() bool { return b.dataReady }

// SendTo writes the body from the reader's current offset to its end to
// w, handing w.ReadFrom the spool file itself (limited to the body), so a
// plain *net.TCPConn sends it with sendfile(2) without copying it through
// user space. The reader's offset advances by what was written. A body
// that turns out shorter than its length gives io.ErrUnexpectedEOF.
func (b *BodyReader) SendTo(w io.ReaderFrom) (int64, error) {
	return SendRest(w, b.SectionReader, b.f, headerSize)
}

// SendRest writes the rest of sr — from its current offset to its end —
// to w by handing w.ReadFrom the file f (positioned at base plus that
// offset, limited to the rest), so that a *net.TCPConn uses sendfile(2).
// f holds sr's bytes from base on, with an offset of its own. sr's offset
// advances by what was written; a file that turns out shorter gives
// io.ErrUnexpectedEOF.
func SendRest(w io.ReaderFrom, sr *io.SectionReader, f *os.File, base int64) (int64, error) {
	pos, err := sr.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	want := sr.Size() - pos
	if want <= 0 {
		return 0, nil
	}
	if _, err := f.Seek(base+pos, io.SeekStart); err != nil {
		return 0, err
	}
	n, err := w.ReadFrom(&io.LimitedReader{R: f, N: want})
	if _, serr := sr.Seek(pos+n, io.SeekStart); err == nil {
		err = serr
	}
	if err == nil && n < want {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Body opens the content of a message: exactly the bytes given to Enqueue.
// Each call returns an independent reader (a *BodyReader, which also tells
// the Size), so concurrent and repeated reads are fine; the caller closes
// it. A reader stays valid even if the message leaves the queue meanwhile.
func (q *Queue) Body(id string) (io.ReadCloser, error) {
	q.mu.Lock()
	m := q.msgs[id]
	if m == nil || m.gone || m.removing {
		q.mu.Unlock()
		return nil, ErrNotFound
	}
	path, n, ready := m.path, m.bodyLen, m.flags&flagDataReady != 0
	m.readers++ // the file is not reused while read
	q.mu.Unlock()
	f, err := openFile(path, os.O_RDONLY, 0)
	if err != nil {
		q.doneReading(m)
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("queue: %w", err)
	}
	return &BodyReader{SectionReader: io.NewSectionReader(f, headerSize, n), f: f, dataReady: ready,
		done: func() { q.doneReading(m) }}, nil
}

// Verify reads a message's content and checks it against the checksum
// taken when it was enqueued.
func (q *Queue) Verify(id string) error {
	q.mu.Lock()
	m := q.msgs[id]
	if m == nil || m.gone {
		q.mu.Unlock()
		return ErrNotFound
	}
	want := m.bodyCRC
	q.mu.Unlock()
	rc, err := q.Body(id)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, rc); err != nil {
		return fmt.Errorf("queue: reading %s: %w", id, err)
	}
	if h.Sum32() != want {
		return fmt.Errorf("queue: %s: body checksum mismatch", id)
	}
	return nil
}

// Get returns a copy of a message's envelope.
func (q *Queue) Get(id string) (*Envelope, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	m := q.msgs[id]
	if m == nil || m.gone || m.deleted {
		return nil, ErrNotFound
	}
	return m.copyEnv(), nil
}

// List returns copies of all envelopes, oldest Received first.
func (q *Queue) List() []*Envelope {
	q.mu.Lock()
	out := make([]*Envelope, 0, len(q.msgs))
	for _, m := range q.msgs {
		if !m.deleted {
			out = append(out, m.copyEnv())
		}
	}
	q.mu.Unlock()
	slices.SortFunc(out, func(a, b *Envelope) int {
		if c := a.Received.Compare(b.Received); c != 0 {
			return c
		}
		return cmpString(a.ID, b.ID)
	})
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// copyEnv returns a deep copy for a caller; q.mu must be held.
func (m *msg) copyEnv() *Envelope {
	c := cloneEnvelope(m.env)
	c.Recovered = m.recovered
	return c
}

// Expired reports whether env has been queued longer than MaxLifetime.
func (q *Queue) Expired(env *Envelope) bool {
	return env.Received.Add(q.opts.MaxLifetime).Before(q.now())
}

// Stats are queue counts at one moment.
type Stats struct {
	Messages   int // messages in the queue
	Recipients int // their recipients
	Pending    int // recipients by state
	Delivered  int
	Failed     int
	Held       int // messages on hold
	Leased     int // messages leased to a deliverer
	Deferred   int // pending recipients with at least one failed attempt
	Active     int // pending recipients of leased messages
}

// Stats counts messages and recipients.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	var s Stats
	for _, m := range q.msgs {
		if m.deleted {
			continue
		}
		s.Messages++
		if m.env.Held {
			s.Held++
		}
		if m.leased {
			s.Leased++
		}
		for _, r := range m.env.Recipients {
			s.Recipients++
			switch r.State {
			case Pending:
				s.Pending++
				if r.Attempts > 0 {
					s.Deferred++
				}
				if m.leased {
					s.Active++
				}
			case Delivered:
				s.Delivered++
			case Failed:
				s.Failed++
			}
		}
	}
	return s
}

// cloneEnvelope deep-copies an envelope.
func cloneEnvelope(e *Envelope) *Envelope {
	c := *e
	c.Recipients = make([]*Recipient, len(e.Recipients))
	for i, r := range e.Recipients {
		rc := *r
		rc.Notify = slices.Clone(r.Notify)
		c.Recipients[i] = &rc
	}
	c.Attrs = maps.Clone(e.Attrs)
	return &c
}
