package queue

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
)

// On-disk format of one message file; see the package documentation.
const (
	fileMagic     = "PHQMSG01"
	slotMagic     = "PHQSLOT1" // a slot file holding a message; see slot.go
	freeMagic     = "PHQFREE1" // a slot file holding nothing
	headerSize    = 32
	recHeaderSize = 9 // u32 payload length, u32 CRC-32C, u8 type

	recEnvelope byte = 'E' // payload: the envelope as JSON; the last one wins
	recDeleted  byte = 'X' // payload: empty; the message was deleted

	// maxRecord bounds one record's payload and maxJournal the whole
	// record area, so a corrupt length field cannot make us allocate
	// gigabytes.
	maxRecord  = 64 << 20
	maxJournal = 256 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errUnbound: a slot file whose first record is not the one its header
// names (or missing): what a crash leaves of an interrupted overwrite.
var errUnbound = errors.New("first record is not the one the slot header names")

// Header flags (byte 20). A file written before they existed has zero
// there: no claim.
const (
	// flagDataReady: the body needs no dot-stuffing and no line-ending
	// repair in SMTP DATA and ends with CRLF (see dataScan).
	flagDataReady byte = 1 << 0
)

// encodeHeader returns the fixed 32-byte file header.
func encodeHeader(bodyLen int64, bodyCRC uint32, flags byte) []byte {
	b := make([]byte, headerSize)
	copy(b, fileMagic)
	binary.LittleEndian.PutUint64(b[8:], uint64(bodyLen))
	binary.LittleEndian.PutUint32(b[16:], bodyCRC)
	b[20] = flags
	// bytes 21..27 are reserved and zero.
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
	return b
}

// encodeSlotHeader returns the header of a slot file: the message file
// header with the slot magic and, in bytes 24..27, the checksum field of
// the first journal record, which binds that record to the header.
func encodeSlotHeader(bodyLen int64, bodyCRC uint32, flags byte, rec1CRC uint32) []byte {
	b := encodeHeader(bodyLen, bodyCRC, flags)
	copy(b, slotMagic)
	binary.LittleEndian.PutUint32(b[24:], rec1CRC)
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
	return b
}

// freeHeader is the header of a slot file that holds no message.
var freeHeader = func() []byte {
	b := make([]byte, headerSize)
	copy(b, freeMagic)
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
	return b
}()

func decodeHeader(b []byte) (bodyLen int64, bodyCRC uint32, flags byte, err error) {
	if len(b) < headerSize {
		return 0, 0, 0, errors.New("file shorter than its header")
	}
	if m := string(b[:8]); m != fileMagic && m != slotMagic {
		return 0, 0, 0, fmt.Errorf("bad magic %q", b[:8])
	}
	if got, want := crc32.Checksum(b[:28], castagnoli), binary.LittleEndian.Uint32(b[28:]); got != want {
		return 0, 0, 0, errors.New("header checksum mismatch")
	}
	n := binary.LittleEndian.Uint64(b[8:])
	if n > 1<<62 {
		return 0, 0, 0, fmt.Errorf("absurd body length %d", n)
	}
	// Unknown flag bits (a newer program) claim nothing we understand;
	// only the bits known here are kept.
	return int64(n), binary.LittleEndian.Uint32(b[16:]), b[20] & flagDataReady, nil
}

// dataScan watches a body go by and tells whether it is in SMTP DATA form
// already (RFC 5321 §4.5.2): no line begins with ".", every LF follows a
// CR, and it is not empty and ends with CRLF. Such a body goes on the wire
// unchanged, followed by ".\r\n" — exactly what remote's dot-stuffing
// writer makes of it — so a plaintext delivery can send it from the spool
// file with sendfile(2).
type dataScan struct {
	bad  bool
	n    int64
	last byte // last byte seen; '\n' at the start (a line start)
}

func newDataScan() dataScan { return dataScan{last: '\n'} }

func (s *dataScan) write(p []byte) {
	if len(p) == 0 {
		return
	}
	s.n += int64(len(p))
	if s.bad {
		return
	}
	prev := s.last
	s.last = p[len(p)-1]
	if prev == '\n' && p[0] == '.' {
		s.bad = true
		return
	}
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			return
		}
		j += i
		if j > 0 {
			prev = p[j-1]
		}
		if prev != '\r' || j+1 < len(p) && p[j+1] == '.' {
			s.bad = true
			return
		}
		i = j + 1
	}
}

// ready reports whether everything seen is in DATA form.
func (s *dataScan) ready() bool { return !s.bad && s.n >= 2 && s.last == '\n' }

var scanBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// IsDataReady reports whether r's content is in SMTP DATA form as
// BodyReader.DataReady describes it (the same test Enqueue applies), for
// bodies that did not come from the queue.
func IsDataReady(r io.Reader) (bool, error) {
	s := newDataScan()
	bp := scanBufs.Get().(*[]byte)
	defer scanBufs.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		s.write(buf[:n])
		if err == io.EOF {
			return s.ready(), nil
		}
		if err != nil {
			return false, err
		}
		if s.bad {
			return false, nil
		}
	}
}

func (s *dataScan) flags() byte {
	if s.ready() {
		return flagDataReady
	}
	return 0
}

// encodeRecord frames one journal record. The checksum covers the length,
// the type and the payload.
func encodeRecord(typ byte, payload []byte) []byte {
	b := make([]byte, recHeaderSize+len(payload))
	binary.LittleEndian.PutUint32(b[0:], uint32(len(payload)))
	b[8] = typ
	copy(b[recHeaderSize:], payload)
	binary.LittleEndian.PutUint32(b[4:], recordCRC(b))
	return b
}

func recordCRC(rec []byte) uint32 { return recordCRCSeed(rec, 0) }

// recordCRCSeed is the checksum of a record in a slot file after its
// first: seeded with the first record's checksum, so a record left over
// from an earlier message in the same file never checks out.
func recordCRCSeed(rec []byte, seed uint32) uint32 {
	c := crc32.Update(seed, castagnoli, rec[0:4])
	return crc32.Update(c, castagnoli, rec[8:])
}

// sealRecord recomputes a record's checksum with seed.
func sealRecord(rec []byte, seed uint32) {
	binary.LittleEndian.PutUint32(rec[4:], recordCRCSeed(rec, seed))
}

func encodeEnvelopeRecord(env *Envelope) ([]byte, error) {
	// The record is framed around the JSON in one buffer.
	b := make([]byte, recHeaderSize, 512)
	b, err := appendEnvelopeJSON(b, env)
	if err != nil {
		return nil, err
	}
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)-recHeaderSize))
	b[8] = recEnvelope
	binary.LittleEndian.PutUint32(b[4:], recordCRC(b))
	return b, nil
}

// decoded is what decodeMessage found in one message file.
type decoded struct {
	env      *Envelope
	bodyLen  int64
	bodyCRC  uint32
	flags    byte  // header flags
	deleted  bool  // a tombstone record was found
	validLen int64 // end of the last intact record
	size     int64 // file size
	lastRec  int   // length of the last envelope record
	slot     bool  // slot format (slotMagic): records after the first are seeded
	seed     uint32
}

// torn reports whether bytes follow the last intact record (a record torn
// by a crash while it was being appended).
func (d *decoded) torn() bool { return d.validLen < d.size }

// finished reports whether a decoded message needs no more delivery: its
// operator tombstone, or no recipient pending.
func (d *decoded) finished() bool {
	if d.deleted {
		return true
	}
	for _, r := range d.env.Recipients {
		if r.State == Pending {
			return false
		}
	}
	return true
}

// decodeMessage parses a message file of the given size. id, if not
// empty, must match the envelope's ID. A damaged tail after the last intact
// record is not an error (it is the record a crash tore; see torn); a file
// without an intact envelope record is.
func decodeMessage(r io.ReaderAt, size int64, id string) (*decoded, error) {
	hdr := make([]byte, headerSize)
	if size < headerSize {
		return nil, errors.New("file shorter than its header")
	}
	if _, err := r.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	bodyLen, bodyCRC, flags, err := decodeHeader(hdr)
	if err != nil {
		return nil, err
	}
	d := &decoded{bodyLen: bodyLen, bodyCRC: bodyCRC, flags: flags, size: size}
	if string(hdr[:8]) == slotMagic {
		d.slot, d.seed = true, binary.LittleEndian.Uint32(hdr[24:])
	}
	start := headerSize + bodyLen
	if start > size {
		return nil, fmt.Errorf("body missing or truncated: header says %d bytes, file has %d", bodyLen, size-headerSize)
	}
	if size-start > maxJournal {
		return nil, fmt.Errorf("journal of %d bytes is too large", size-start)
	}
	buf := make([]byte, size-start)
	if _, err := r.ReadAt(buf, start); err != nil && !(errors.Is(err, io.EOF) && len(buf) == 0) {
		return nil, fmt.Errorf("reading journal: %w", err)
	}
	d.validLen = start
	off := 0
	for len(buf)-off >= recHeaderSize {
		n := int(binary.LittleEndian.Uint32(buf[off:]))
		if n > maxRecord || n > len(buf)-off-recHeaderSize {
			break
		}
		rec := buf[off : off+recHeaderSize+n]
		sum := binary.LittleEndian.Uint32(rec[4:])
		if d.slot && off == 0 {
			// A slot's first record is the one its header names: whatever
			// else lies there is left from an earlier message.
			if recordCRC(rec) != sum || sum != d.seed || rec[8] != recEnvelope {
				return nil, errUnbound
			}
		} else if d.slot {
			if recordCRCSeed(rec, d.seed) != sum {
				break
			}
		} else if recordCRC(rec) != sum {
			break
		}
		switch rec[8] {
		case recEnvelope:
			env, err := parseEnvelope(rec[recHeaderSize:], id, bodyLen)
			if err != nil {
				return nil, fmt.Errorf("envelope record at offset %d: %w", start+int64(off), err)
			}
			d.env = env
			d.lastRec = len(rec)
			if d.slot {
				id = env.ID // every record of a slot names the same message
			}
		case recDeleted:
			d.deleted = true
		default:
			return nil, fmt.Errorf("unknown record type %q at offset %d", rec[8], start+int64(off))
		}
		off += len(rec)
		d.validLen = start + int64(off)
	}
	if d.env == nil {
		if d.slot {
			return nil, errUnbound
		}
		return nil, errors.New("no intact envelope record")
	}
	return d, nil
}

// parseEnvelope decodes and checks one envelope record payload.
func parseEnvelope(p []byte, id string, bodyLen int64) (*Envelope, error) {
	var env Envelope
	if err := json.Unmarshal(p, &env); err != nil {
		return nil, err
	}
	if !validID(env.ID) {
		return nil, fmt.Errorf("invalid queue ID %q", env.ID)
	}
	if id != "" && env.ID != id {
		return nil, fmt.Errorf("envelope ID %q does not match file name %q", env.ID, id)
	}
	if env.Size != bodyLen {
		return nil, fmt.Errorf("envelope size %d does not match body length %d", env.Size, bodyLen)
	}
	if len(env.Recipients) == 0 {
		return nil, errors.New("no recipients")
	}
	for i, r := range env.Recipients {
		if r == nil {
			return nil, fmt.Errorf("recipient %d is null", i)
		}
		switch r.State {
		case Pending, Delivered, Failed:
		default:
			return nil, fmt.Errorf("recipient %d: unknown state %q", i, r.State)
		}
		if r.Attempts < 0 {
			return nil, fmt.Errorf("recipient %d: negative attempts", i)
		}
	}
	env.Recovered = false
	return &env, nil
}

// idAlphabet is in ASCII order, so IDs of fixed width sort by time.
const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// validID: 1 to 64 characters of [A-Za-z0-9]. IDs become file names.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}
