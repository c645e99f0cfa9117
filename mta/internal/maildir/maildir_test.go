package maildir

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// chunks returns the pieces one by one, one per Read call.
type chunks struct{ parts []string }

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.parts[0])
	c.parts[0] = c.parts[0][n:]
	if c.parts[0] == "" {
		c.parts = c.parts[1:]
	}
	return n, nil
}

func TestDeliver(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	msg := "Subject: hi\r\n\r\nHello\r\n"
	path, err := Deliver(dir, "Q123.R0", strings.NewReader(msg), []byte("Return-Path: <a@b>\r\nDelivered-To: c@d\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(path) != filepath.Join(dir, "new") {
		t.Fatalf("path %s not in new/", path)
	}
	name := filepath.Base(path)
	parts := strings.SplitN(name, ".", 2)
	if len(parts) != 2 || !strings.HasPrefix(parts[1], "Q123.R0.") {
		t.Fatalf("bad name %q", name)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "Return-Path: <a@b>\nDelivered-To: c@d\nSubject: hi\n\nHello\n"
	if string(got) != want {
		t.Fatalf("content %q, want %q", got, want)
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v %v", sub, fi, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp/ not empty: %v", ents)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

func TestCRLF(t *testing.T) {
	cases := []struct {
		name  string
		parts []string
		want  string
	}{
		{"plain", []string{"a\r\nb\r\n"}, "a\nb\n"},
		{"split", []string{"a\r", "\nb\r", "\n"}, "a\nb\n"},
		{"split-every-byte", strings.Split("x\r\ny\r\n\r\nz", ""), "x\ny\n\nz"},
		{"lone-cr", []string{"a\rb\r", "c\r"}, "a\rb\rc\r"},
		{"lf", []string{"a\nb\n"}, "a\nb\n"},
		{"double-cr", []string{"a\r\r\nb"}, "a\r\nb"},
		{"empty", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path, err := Deliver(dir, "u1", &chunks{parts: append([]string(nil), c.parts...)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if string(got) != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestCRLFPrependSplit(t *testing.T) {
	// A CR at the end of prepend and the LF at the start of the message.
	dir := t.TempDir()
	path, err := Deliver(dir, "u1", strings.NewReader("\nbody\r\n"), []byte("X-A: 1\r"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != "X-A: 1\nbody\n" {
		t.Fatalf("got %q", got)
	}
}

func TestLargeStreaming(t *testing.T) {
	dir := t.TempDir()
	line := strings.Repeat("x", 998) + "\r\n"
	const n = 5000 // about 5 MB
	r := io.MultiReader(strings.NewReader("Subject: big\r\n\r\n"), &repeat{s: line, n: n})
	path, err := Deliver(dir, "big", r, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if want := int64(len("Subject: big\n\n") + n*(len(line)-1)); fi.Size() != want {
		t.Fatalf("size %d, want %d", fi.Size(), want)
	}
}

type repeat struct {
	s   string
	n   int
	cur string
}

func (r *repeat) Read(p []byte) (int, error) {
	if r.cur == "" {
		if r.n == 0 {
			return 0, io.EOF
		}
		r.n--
		r.cur = r.s
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

func TestExists(t *testing.T) {
	dir := t.TempDir()
	if ok, err := Exists(filepath.Join(dir, "missing"), "Q1.R0"); ok || err != nil {
		t.Fatalf("missing maildir: %v %v", ok, err)
	}
	p0, err := Deliver(dir, "Q1.R0", strings.NewReader("a\r\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Deliver(dir, "Q1.R10", strings.NewReader("b\r\n"), nil); err != nil {
		t.Fatal(err)
	}
	check := func(uniq string, want bool) {
		t.Helper()
		ok, err := Exists(dir, uniq)
		if err != nil || ok != want {
			t.Fatalf("Exists(%q) = %v, %v; want %v", uniq, ok, err, want)
		}
	}
	check("Q1.R0", true)
	check("Q1.R10", true)
	check("Q1.R1", false) // a prefix of R10 must not match
	check("R0", false)

	// A reader moves the message to cur/ and adds flags.
	cur := filepath.Join(dir, "cur", filepath.Base(p0)+":2,S")
	if err := os.Rename(p0, cur); err != nil {
		t.Fatal(err)
	}
	check("Q1.R0", true)
	os.Remove(cur)
	check("Q1.R0", false)

	// Something in tmp/ does not count.
	os.WriteFile(filepath.Join(dir, "tmp", "1700000000.Q2.R0.host"), nil, 0o600)
	check("Q2.R0", false)

	if _, err := Exists(dir, "bad/uniq"); err == nil || IsTemporary(err) {
		t.Fatalf("bad uniq: %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := fmt.Sprintf("Subject: %d\r\n\r\nmsg %d\r\n", i, i)
			if _, err := Deliver(dir, fmt.Sprintf("Q%d.R0", i), strings.NewReader(body), nil); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil || len(ents) != n {
		t.Fatalf("new/ has %d entries (%v), want %d", len(ents), err, n)
	}
	for i := 0; i < n; i++ {
		if ok, err := Exists(dir, fmt.Sprintf("Q%d.R0", i)); !ok || err != nil {
			t.Fatalf("message %d missing: %v", i, err)
		}
	}
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, "new", e.Name()))
		if bytes.Contains(b, []byte("\r")) {
			t.Fatalf("%s has CR", e.Name())
		}
	}
}

func TestErrors(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	os.WriteFile(file, []byte("x"), 0o600)

	// The mailbox path is a regular file: permanent.
	_, err := Deliver(file, "u1", strings.NewReader("x"), nil)
	if err == nil || IsTemporary(err) {
		t.Fatalf("mailbox is a file: err %v, temporary %v", err, IsTemporary(err))
	}
	// A path below a regular file: permanent too.
	_, err = Deliver(filepath.Join(file, "Maildir"), "u1", strings.NewReader("x"), nil)
	if err == nil || IsTemporary(err) {
		t.Fatalf("below a file: err %v", err)
	}
	// new/ is a regular file.
	md := filepath.Join(base, "md")
	os.MkdirAll(filepath.Join(md, "tmp"), 0o700)
	os.WriteFile(filepath.Join(md, "new"), nil, 0o600)
	_, err = Deliver(md, "u1", strings.NewReader("x"), nil)
	if err == nil || IsTemporary(err) {
		t.Fatalf("new is a file: err %v", err)
	}
	// Invalid uniq.
	for _, u := range []string{"", "a/b", "a:2", ".a", "a b"} {
		if _, err := Deliver(base, u, strings.NewReader("x"), nil); err == nil || IsTemporary(err) {
			t.Fatalf("uniq %q: err %v", u, err)
		}
	}
	// A read error from the message is temporary, and leaves nothing behind.
	md2 := filepath.Join(base, "md2")
	_, err = Deliver(md2, "u2", io.MultiReader(strings.NewReader("abc"), errReader{}), nil)
	if err == nil || !IsTemporary(err) {
		t.Fatalf("read error: %v", err)
	}
	for _, sub := range []string{"tmp", "new"} {
		if ents, _ := os.ReadDir(filepath.Join(md2, sub)); len(ents) != 0 {
			t.Fatalf("%s not empty after failure", sub)
		}
	}
	if IsTemporary(nil) {
		t.Fatal("nil is not temporary")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestStaleTmp(t *testing.T) {
	dir := t.TempDir()
	if _, err := Deliver(dir, "u1", strings.NewReader("first"), nil); err != nil {
		t.Fatal(err)
	}
	// Leave a stale file in tmp/ with every name this second could get.
	ents, _ := os.ReadDir(filepath.Join(dir, "new"))
	name := ents[0].Name()
	os.Remove(filepath.Join(dir, "new", name))
	os.WriteFile(filepath.Join(dir, "tmp", name), []byte("stale"), 0o600)
	p, err := Deliver(dir, "u1", strings.NewReader("second"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "second" {
		t.Fatalf("got %q", b)
	}
}

func TestSanitizeHost(t *testing.T) {
	if got := sanitizeHost("a/b:c.example"); got != `a\057b\072c.example` {
		t.Fatalf("got %q", got)
	}
}

func BenchmarkDeliver10K(b *testing.B) {
	dir := b.TempDir()
	msg := []byte(strings.Repeat(strings.Repeat("y", 78)+"\r\n", 10240/80))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := Deliver(dir, fmt.Sprintf("B%d", i), bytes.NewReader(msg), []byte("Return-Path: <a@b>\r\n")); err != nil {
			b.Fatal(err)
		}
	}
}
