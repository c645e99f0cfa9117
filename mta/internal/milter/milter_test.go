package milter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestParseReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
		ec   [3]int
		text string
	}{
		{"554 5.7.1 Gtube pattern", 554, [3]int{5, 7, 1}, "Gtube pattern"},
		{"550 5.7.1 Virus found: Test.Marker-1.UNOFFICIAL", 550, [3]int{5, 7, 1}, "Virus found: Test.Marker-1.UNOFFICIAL"},
		{"451 4.7.1 Try later", 451, [3]int{4, 7, 1}, "Try later"},
		{"550 no enhanced code", 550, [3]int{}, "no enhanced code"},
		{"550 4.7.1 class mismatch", 550, [3]int{}, "4.7.1 class mismatch"},
		{"550-5.7.1 first\r\n550 5.7.1 second", 550, [3]int{5, 7, 1}, "first\nsecond"},
		{"550", 550, [3]int{}, "Command rejected"},
		{"550 5.7.1 ctl\x01chars", 550, [3]int{5, 7, 1}, "ctlchars"},
	} {
		code, rest, ok := splitReplyCode(tc.in)
		if !ok || code != tc.code {
			t.Errorf("%q: code %d ok %v", tc.in, code, ok)
			continue
		}
		r := parseReply("m", code, rest)
		if r.Enhanced != tc.ec || r.Text != tc.text {
			t.Errorf("%q: got %v %q, want %v %q", tc.in, r.Enhanced, r.Text, tc.ec, tc.text)
		}
	}
	for _, bad := range []string{"", "25", "250 2.0.0 ok", "abc def", "700 x"} {
		if _, _, ok := splitReplyCode(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestHeaderEdits(t *testing.T) {
	msg := "Received: from x\r\n\tby y\r\nSubject: hi\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody\r\n"
	br := bufio.NewReader(strings.NewReader(msg))
	fields, sep, err := readHeader(br)
	if err != nil || sep != "\r\n" || len(fields) != 4 {
		t.Fatalf("fields %v sep %q err %v", fields, sep, err)
	}
	if v := fields[0].value(); v != "from x\n\tby y" {
		t.Errorf("folded value %q", v)
	}
	ed := &editor{fields: fields}
	ed.insert(1, "Authentication-Results", "mx; spf=pass")
	ed.change(2, "x-a", "two")
	ed.change(1, "X-A", "")
	ed.change(1, "X-New", "added")
	ed.add("X-Evil", "a\nInjected: yes")
	var b bytes.Buffer
	ed.writeTo(&b)
	want := "Received: from x\r\n\tby y\r\nAuthentication-Results: mx; spf=pass\r\nSubject: hi\r\nX-A: two\r\nX-New: added\r\nX-Evil: a\r\n\tInjected: yes\r\n"
	if b.String() != want {
		t.Errorf("got\n%q\nwant\n%q", b.String(), want)
	}
}

func TestHeaderWithoutSeparator(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("Subject: x\r\nnot a header line\r\n"))
	fields, sep, err := readHeader(br)
	if err != nil || sep != "" || len(fields) != 1 {
		t.Fatalf("fields %v sep %q err %v", fields, sep, err)
	}
	rest, _ := br.ReadString(0)
	if rest != "not a header line\r\n" {
		t.Errorf("body %q", rest)
	}
}

func TestCRLFWriter(t *testing.T) {
	var b bytes.Buffer
	w := &crlfWriter{w: &b}
	for _, chunk := range []string{"a\nb\r", "\nc\rd\r\n", "e\r"} {
		w.Write([]byte(chunk))
	}
	w.Close()
	if got, want := b.String(), "a\r\nb\r\nc\r\nd\r\ne\r\n"; got != want {
		t.Errorf("got %q want %q", got, want)
	}
}

func TestSniffCountsProgress(t *testing.T) {
	n := 0
	c := &deadlineConn{progress: func() { n++ }}
	var stream []byte
	for _, code := range []byte{'p', 'h', 'p', 'a'} {
		stream = binary.BigEndian.AppendUint32(stream, 3)
		stream = append(stream, code, 'x', 'y')
	}
	for i := 0; i < len(stream); i++ { // byte by byte: framing survives any split
		c.sniff(stream[i : i+1])
	}
	if n != 2 {
		t.Errorf("counted %d progress packets, want 2", n)
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add("Subject: x\r\n\r\nbody")
	f.Add("A: 1\r\n\tcont\r\nB:2\n\nbody")
	f.Add(" leading\r\nX: y\r\n")
	f.Fuzz(func(t *testing.T, msg string) {
		br := bufio.NewReaderSize(strings.NewReader(msg), 16)
		fields, sep, err := readHeader(br)
		if err != nil {
			return
		}
		rest, _ := br.ReadString(0)
		var b strings.Builder
		for _, fl := range fields {
			b.WriteString(fl.raw)
			_ = fl.value()
		}
		b.WriteString(sep)
		b.WriteString(rest)
		if b.String() != msg {
			t.Fatalf("header split loses bytes: %q -> %q", msg, b.String())
		}
	})
}

func FuzzParseReply(f *testing.F) {
	f.Add("554 5.7.1 Gtube pattern")
	f.Add("550-5.7.1 a\r\n550 5.7.1 b")
	f.Fuzz(func(t *testing.T, s string) {
		code, rest, ok := splitReplyCode(s)
		if !ok {
			return
		}
		r := parseReply("m", code, rest)
		if r.Code < 400 || r.Code > 599 || r.Text == "" || strings.ContainsAny(r.Text, "\r\x00") {
			t.Fatalf("bad reply %+v from %q", r, s)
		}
	})
}
