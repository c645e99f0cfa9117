package queue

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
)

// journalMagic starts every envelope journal file; the digit is the format version.
const journalMagic = "PHQENV1\n"

const (
	recHeader  = 8        // uint32 payload length + uint32 CRC-32C of the payload
	maxPayload = 64 << 20 // sanity bound on one record

	kindSnapshot = 'S' // payload: full Envelope as JSON
	kindPatch    = 'P' // payload: patch as JSON
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// patch is one state change appended to a journal. Recipients are stored
// whole (the new value replaces the old one), so applying a patch twice is
// harmless.
type patch struct {
	Rcpts   map[int]*Recipient `json:"rcpts,omitempty"`
	Held    *bool              `json:"held,omitempty"`
	Attrs   map[string]string  `json:"attrs,omitempty"` // "" removes the key
	Deleted bool               `json:"deleted,omitempty"`
}

// errCorrupt marks a journal that cannot be trusted (quarantine it).
var errCorrupt = errors.New("corrupt journal")

// encodeRecord frames one record: length, CRC-32C, kind byte and JSON.
func encodeRecord(kind byte, v any) ([]byte, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	n := 1 + len(js)
	buf := make([]byte, recHeader+n)
	buf[recHeader] = kind
	copy(buf[recHeader+1:], js)
	binary.BigEndian.PutUint32(buf[0:4], uint32(n))
	binary.BigEndian.PutUint32(buf[4:8], crc32.Checksum(buf[recHeader:], castagnoli))
	return buf, nil
}

// encodeJournal is a complete journal holding one snapshot of env.
func encodeJournal(env *Envelope) ([]byte, error) {
	rec, err := encodeRecord(kindSnapshot, env)
	if err != nil {
		return nil, err
	}
	return append([]byte(journalMagic), rec...), nil
}

// decodeJournal replays a journal file: the envelope, the length of the
// valid prefix (shorter than data when the last record is torn), the number
// of records and whether a Delete was recorded. A torn last record (one that runs past the end of
// the file, fails its checksum as the final record, or a tail of zero bytes
// from a size update without data) is ignored; any other damage, and any
// damage to the first record, is errCorrupt.
func decodeJournal(data []byte) (j journal, err error) {
	env, valid, nrec, deleted, err := replay(data)
	return journal{env: env, valid: valid, nrec: nrec, deleted: deleted}, err
}

// journal is what replaying a journal file yields.
type journal struct {
	env     *Envelope
	valid   int  // length of the trustworthy prefix
	nrec    int  // records in that prefix
	deleted bool // a Delete was recorded
}

func replay(data []byte) (env *Envelope, valid int, nrec int, deleted bool, err error) {
	fail := func(format string, a ...any) (*Envelope, int, int, bool, error) {
		return nil, 0, 0, false, fmt.Errorf("%w: "+format, append([]any{errCorrupt}, a...)...)
	}
	if !bytes.HasPrefix(data, []byte(journalMagic)) {
		return fail("bad magic")
	}
	off := len(journalMagic)
	for off < len(data) {
		payload, next, ok := readRecord(data, off)
		if !ok {
			if nrec == 0 {
				return fail("unreadable first record")
			}
			if tornTail(data, off) {
				break
			}
			return fail("bad record at offset %d", off)
		}
		kind, body := payload[0], payload[1:]
		switch {
		case kind == kindSnapshot:
			var e Envelope
			if err := json.Unmarshal(body, &e); err != nil {
				return fail("snapshot at offset %d: %v", off, err)
			}
			if err := checkEnvelope(&e); err != nil {
				return fail("snapshot at offset %d: %v", off, err)
			}
			env = &e
		case kind == kindPatch && env != nil:
			var p patch
			if err := json.Unmarshal(body, &p); err != nil {
				return fail("patch at offset %d: %v", off, err)
			}
			if err := applyPatch(env, &p); err != nil {
				return fail("patch at offset %d: %v", off, err)
			}
			deleted = deleted || p.Deleted
		default:
			return fail("unexpected record kind %q at offset %d", kind, off)
		}
		nrec++
		off = next
	}
	if nrec == 0 {
		return fail("no records")
	}
	return env, off, nrec, deleted, nil
}

// readRecord checks the record at off; ok is false if it is incomplete or
// fails its checksum.
func readRecord(data []byte, off int) (payload []byte, next int, ok bool) {
	if len(data)-off < recHeader {
		return nil, 0, false
	}
	n := int(binary.BigEndian.Uint32(data[off : off+4]))
	sum := binary.BigEndian.Uint32(data[off+4 : off+8])
	if n < 2 || n > maxPayload || n > len(data)-off-recHeader {
		return nil, 0, false
	}
	payload = data[off+recHeader : off+recHeader+n]
	if crc32.Checksum(payload, castagnoli) != sum {
		return nil, 0, false
	}
	return payload, off + recHeader + n, true
}

// tornTail reports whether the bad record at off can be the remains of an
// interrupted append: it is the last thing in the file.
func tornTail(data []byte, off int) bool {
	rest := data[off:]
	if len(rest) < recHeader {
		return true
	}
	n := int(binary.BigEndian.Uint32(rest[0:4]))
	if n >= len(rest)-recHeader {
		return true // runs to or past the end of the file
	}
	for _, b := range rest {
		if b != 0 {
			return false
		}
	}
	return true // zeros: the size grew but the data never arrived
}

// checkEnvelope rejects snapshots the rest of the queue cannot work with.
func checkEnvelope(e *Envelope) error {
	if !validID(e.ID) {
		return fmt.Errorf("bad id %q", e.ID)
	}
	if len(e.Recipients) == 0 {
		return errors.New("no recipients")
	}
	for i, r := range e.Recipients {
		if r == nil {
			return fmt.Errorf("recipient %d is null", i)
		}
		if err := checkState(r.State); err != nil {
			return fmt.Errorf("recipient %d: %v", i, err)
		}
	}
	if e.Size < 0 {
		return errors.New("negative size")
	}
	return nil
}

func checkState(s RcptState) error {
	switch s {
	case Pending, Delivered, Failed:
		return nil
	}
	return fmt.Errorf("unknown state %q", s)
}

// applyPatch changes env in place.
func applyPatch(env *Envelope, p *patch) error {
	for i, r := range p.Rcpts {
		if i < 0 || i >= len(env.Recipients) {
			return fmt.Errorf("recipient index %d out of range", i)
		}
		if r == nil {
			return fmt.Errorf("recipient %d is null", i)
		}
		if err := checkState(r.State); err != nil {
			return fmt.Errorf("recipient %d: %v", i, err)
		}
	}
	for i, r := range p.Rcpts {
		env.Recipients[i] = copyRecipient(r)
	}
	if p.Held != nil {
		env.Held = *p.Held
	}
	for k, v := range p.Attrs {
		if v == "" {
			delete(env.Attrs, k)
			continue
		}
		if env.Attrs == nil {
			env.Attrs = map[string]string{}
		}
		env.Attrs[k] = v
	}
	if len(env.Attrs) == 0 {
		env.Attrs = nil
	}
	return nil
}

func copyRecipient(r *Recipient) *Recipient {
	c := *r
	if r.Notify != nil {
		c.Notify = append([]string(nil), r.Notify...)
	}
	return &c
}

func copyEnvelope(e *Envelope) *Envelope {
	c := *e
	c.Recipients = make([]*Recipient, len(e.Recipients))
	for i, r := range e.Recipients {
		c.Recipients[i] = copyRecipient(r)
	}
	if e.Attrs != nil {
		c.Attrs = make(map[string]string, len(e.Attrs))
		for k, v := range e.Attrs {
			c.Attrs[k] = v
		}
	}
	return &c
}
