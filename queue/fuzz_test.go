package queue

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzSeeds are message files: valid, with journal, torn, tombstoned,
// truncated, and with damaged headers.
func fuzzSeeds() [][]byte {
	env := &Envelope{ID: "0AbCdEfGhIjKlMnO", From: "a@example.org", Size: 5,
		Received:   time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC),
		Recipients: []*Recipient{{Addr: "b@example.net", State: Pending, Notify: []string{"FAILURE"}}},
		Attrs:      map[string]string{"policy.encrypt": "smime"}}
	file := func(recs ...[]byte) []byte {
		b := append(encodeHeader(5, 0x12345678, 0), "hello"...)
		for _, r := range recs {
			b = append(b, r...)
		}
		return b
	}
	e1, _ := encodeEnvelopeRecord(env)
	env.Recipients[0].State, env.Recipients[0].Attempts, env.Held = Delivered, 1, true
	e2, _ := encodeEnvelopeRecord(env)
	valid := file(e1)
	badHdr := bytes.Clone(valid)
	badHdr[9] ^= 1
	return [][]byte{
		valid,
		file(e1, e2),
		file(e1, e2[:len(e2)/2]),
		file(e1, encodeRecord(recDeleted, nil)),
		file(e1, encodeRecord('?', []byte("x"))),
		file(encodeRecord(recEnvelope, []byte(`{"id":"A","size":5,"recipients":[null]}`))),
		file(encodeRecord(recEnvelope, []byte(`{"id":"A","size":5,"recipients":[{"state":"bogus"}]}`))),
		file(encodeRecord(recEnvelope, []byte(`not json`))),
		valid[:headerSize+3],
		badHdr,
		{},
	}
}

// FuzzDecodeEnvelope feeds arbitrary bytes to the message file decoder,
// which must never panic and, when it accepts a file, return an envelope
// that is safe to use.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeMessage(bytes.NewReader(data), int64(len(data)), "")
		if err != nil {
			return
		}
		if d.env == nil || d.validLen > int64(len(data)) || d.validLen < headerSize+d.bodyLen ||
			d.env.Size != d.bodyLen || len(d.env.Recipients) == 0 {
			t.Fatalf("inconsistent decode: %+v", d)
		}
		for _, r := range d.env.Recipients {
			_ = r.State // non-nil
		}
		cloneEnvelope(d.env)
		if _, err := encodeEnvelopeRecord(d.env); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzDecodeEnvelope when
// POSTHORN_WRITE_CORPUS is set.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("POSTHORN_WRITE_CORPUS") == "" {
		t.Skip("set POSTHORN_WRITE_CORPUS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeEnvelope")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		text := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
