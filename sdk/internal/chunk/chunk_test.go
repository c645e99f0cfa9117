package chunk

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

var errTooLarge = errors.New("too large")

func TestSendAndRead(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), Size/10*3+7)
	var chunks [][]byte
	n, err := Send(bytes.NewReader(data), 0, errTooLarge, func(b []byte) error {
		if len(b) > Size {
			t.Fatalf("chunk of %d", len(b))
		}
		chunks = append(chunks, append([]byte(nil), b...))
		return nil
	})
	if err != nil || n != int64(len(data)) {
		t.Fatalf("Send: %d %v", n, err)
	}
	i := 0
	r := NewReader(func() ([]byte, error) {
		if i == len(chunks) {
			return nil, io.EOF
		}
		i++
		return chunks[i-1], nil
	}, int64(len(data)), errTooLarge)
	got, err := io.ReadAll(iotest.OneByteReader(r))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll: %d bytes, %v", len(got), err)
	}
}

func TestLimits(t *testing.T) {
	_, err := Send(strings.NewReader("abcdef"), 5, errTooLarge, func([]byte) error { return nil })
	if err != errTooLarge {
		t.Fatalf("Send over limit: %v", err)
	}
	r := NewReader(func() ([]byte, error) { return []byte("abcdef"), nil }, 5, errTooLarge)
	if _, err := io.ReadAll(r); err != errTooLarge {
		t.Fatalf("Read over limit: %v", err)
	}
	r = NewReader(func() ([]byte, error) { return make([]byte, Max+1), nil }, 0, errTooLarge)
	if _, err := r.Read(make([]byte, 10)); err != ErrTooBig {
		t.Fatalf("oversized chunk: %v", err)
	}
}

func TestSendErrors(t *testing.T) {
	boom := errors.New("boom")
	_, err := Send(strings.NewReader("x"), 0, errTooLarge, func([]byte) error { return boom })
	var se *SendError
	if !errors.As(err, &se) || !errors.Is(err, boom) {
		t.Fatalf("send failure: %v", err)
	}
	_, err = Send(iotest.ErrReader(boom), 0, errTooLarge, func([]byte) error { return nil })
	if errors.As(err, &se) || !errors.Is(err, boom) {
		t.Fatalf("read failure: %v", err)
	}
}

func TestDrain(t *testing.T) {
	n := 0
	r := NewReader(func() ([]byte, error) {
		if n == 3 {
			return nil, io.EOF
		}
		n++
		return []byte("abc"), nil
	}, 0, errTooLarge)
	r.Read(make([]byte, 1))
	if err := r.Drain(); err != nil || n != 3 {
		t.Fatalf("Drain: %v after %d chunks", err, n)
	}
}
