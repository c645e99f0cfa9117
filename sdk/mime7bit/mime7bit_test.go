package mime7bit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"
	"testing/iotest"
)

func convert(t *testing.T, in string) string {
	t.Helper()
	out, err := Bytes([]byte(in))
	if err != nil {
		t.Fatalf("Convert(%q): %v", in, err)
	}
	return string(out)
}

// convertCases pin the output byte for byte; their inputs are also in the
// fuzz corpus.
var convertCases = []struct{ name, in, want string }{
	{"7-bit entity unchanged",
		"Content-Type: text/plain\r\n\r\nhello\r\n",
		"Content-Type: text/plain\r\n\r\nhello\r\n"},
	{"empty", "", ""},
	{"8bit label, ASCII body: relabelled",
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nhello\r\n",
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nhello\r\n"},
	{"message without MIME fields, 8-bit body: text/plain",
		"Subject: x\r\n\r\nGrüße\r\n",
		"Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n"},
	{"the label is replaced where it stands, folded, and duplicates go",
		"Content-Transfer-Encoding:\r\n 8bit\r\nContent-Type: text/plain; charset=utf-8\r\ncontent-transfer-encoding: 8bit\r\nX: y\r\n\r\nä\r\n",
		"Content-Transfer-Encoding: quoted-printable\r\nContent-Type: text/plain; charset=utf-8\r\nX: y\r\n\r\n=C3=A4\r\n"},
	{"already quoted-printable or base64: unchanged even with 8-bit bytes",
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\nbad \xff\r\n",
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\nbad \xff\r\n"},
	{"binary text: byte-exact quoted-printable",
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\na\rb\x00ü\r\n",
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=0Db=00=C3=BC=0D=0A"},
	{"not text: base64, the whole body at the end of the message",
		"Content-Type: application/octet-stream\r\n\r\n\xff\xfe\r\n",
		"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n//4NCg==\r\n"},
	{"unparseable Content-Type counts as text/plain",
		"Content-Type: ;;;\r\n\r\n\xe4\r\n",
		"Content-Type: ;;;\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E4\r\n"},
	{"a bare CR before an encoded byte keeps the line break after it",
		"Content-Type: text/plain\r\n\r\n\r\xd9\n0",
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\r\n=D9\r\n0"},
	{"8-bit header text is left alone",
		"Subject: Grüße\r\n\r\nhello\r\n",
		"Subject: Grüße\r\n\r\nhello\r\n"},
	{"bare LF line endings kept",
		"Content-Type: text/plain\nContent-Transfer-Encoding: 8bit\n\nä\nb\n",
		"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=C3=A4\r\nb\r\n"},
	{"header without a body",
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit",
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable"},
	{"label added after a last line without line break",
		"Content-Type: text/plain\r\n\r\n",
		"Content-Type: text/plain\r\n\r\n"},
	// The case of the smime plugin: preamble and epilogue stay, the
	// 8bit text part becomes quoted-printable, the unlabelled binary
	// part base64, the ASCII part stays as it is.
	{"multipart",
		"Content-Type: multipart/mixed; boundary=xx\r\n\r\npre\r\n--xx\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n" +
			"--xx\r\nContent-Type: application/octet-stream\r\n\r\n\xff\xfe\r\n" +
			"--xx\r\nContent-Type: text/plain\r\n\r\nascii only\r\n--xx--\r\nepilogue\r\n",
		"Content-Type: multipart/mixed; boundary=xx\r\n\r\npre\r\n--xx\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n" +
			"--xx\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n//4=\r\n\r\n" +
			"--xx\r\nContent-Type: text/plain\r\n\r\nascii only\r\n--xx--\r\nepilogue\r\n"},
	// The case of the remote transport (8BITMIME to a server without).
	{"multipart labelled 8bit",
		"From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n--b1\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n--b1\r\n" +
			"Content-Type: text/plain; charset=us-ascii\r\n\r\nplain part\r\n--b1--\r\n",
		"From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n--b1\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln\r\n--b1\r\n" +
			"Content-Type: text/plain; charset=us-ascii\r\n\r\nplain part\r\n--b1--\r\n"},
	{"nested multipart, delimiter with padding, inner part never closed",
		"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o  \r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n" +
			"--i\r\nContent-Type: text/plain\r\n\r\nä\r\n--o--\r\n",
		"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o  \r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n" +
			"--i\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A4\r\n--o--\r\n"},
	{"a delimiter with more on its line is content",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--bx\r\n--b--\r\n",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--bx\r\n--b--\r\n"},
	{"multipart without a closing delimiter ends with the input",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nä",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A4"},
	{"a part header without a blank line",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: 8bit\r\n--b--\r\n",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n--b--\r\n"},
	{"multipart without boundary is a leaf",
		"Content-Type: multipart/mixed\r\n\r\nhello\r\n",
		"Content-Type: multipart/mixed\r\n\r\nhello\r\n"},
	{"message/rfc822 is walked into",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
			"Subject: inner\r\nContent-Type: text/plain\r\n\r\nGrüß\r\n--b--\r\n",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" +
			"Subject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9F\r\n--b--\r\n"},
	{"message/partial is not",
		"Content-Type: message/partial; id=x; number=1\r\n\r\nä\r\n",
		"Content-Type: message/partial; id=x; number=1\r\n\r\nä\r\n"},
}

func TestConvert(t *testing.T) {
	for _, c := range convertCases {
		t.Run(c.name, func(t *testing.T) {
			got := convert(t, c.in)
			if got != c.want {
				t.Errorf("\n got %q\nwant %q", got, c.want)
			}
			if again := convert(t, got); again != got {
				t.Errorf("not idempotent:\n got %q\nthen %q", got, again)
			}
		})
	}
}

// TestLongLines: lines longer than the read buffer, in a header and in
// bodies of each kind, survive in one piece (or decode to the same bytes).
func TestLongLines(t *testing.T) {
	long := strings.Repeat("x", readSize*2+17)
	in := "Content-Type: multipart/mixed; boundary=b\r\nX-Long: " + long + "\r\n\r\n--b\r\n" +
		"Content-Type: text/plain\r\n\r\n" + long + "\r\n" +
		"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" + long + "ü" + long + "\r\n" +
		"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nä" + long + "\r\n--b--\r\n"
	out := convert(t, in)
	if Is8bit([]byte(out)) {
		t.Fatal("8-bit output")
	}
	if !strings.Contains(out, "X-Long: "+long+"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"+long+"\r\n--b\r\n") {
		t.Error("long 7-bit lines changed")
	}
	body := func(after string) string {
		_, rest, ok := strings.Cut(out, after)
		if !ok {
			t.Fatalf("no %q in the output", after)
		}
		b, _, _ := strings.Cut(rest, "\r\n--b")
		return b
	}
	b64 := strings.TrimSpace(body("Content-Transfer-Encoding: base64\r\n\r\n"))
	dec, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(b64, "\r\n", ""))
	if err != nil || string(dec) != long+"ü"+long {
		t.Errorf("base64 part: %v", err)
	}
	for _, l := range strings.Split(b64, "\r\n") {
		if len(l) > 76 {
			t.Fatalf("base64 line of %d characters", len(l))
		}
	}
	qp, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(body("Content-Transfer-Encoding: quoted-printable\r\n\r\n"))))
	if err != nil || string(qp) != "ä"+long {
		t.Errorf("quoted-printable part: %v", err)
	}
}

func TestBase64Lines(t *testing.T) {
	for _, n := range []int{0, 1, 56, 57, 58, 114, 200} {
		data := bytes.Repeat([]byte{0xff}, n)
		var b bytes.Buffer
		w := newBase64Lines(&b)
		w.Write(data[:n/2])
		w.Write(data[n/2:])
		w.Close()
		s := base64.StdEncoding.EncodeToString(data)
		var want strings.Builder
		for len(s) > 76 {
			want.WriteString(s[:76] + "\r\n")
			s = s[76:]
		}
		want.WriteString(s + "\r\n")
		if b.String() != want.String() {
			t.Errorf("%d bytes: %q, want %q", n, b.String(), want.String())
		}
	}
}

// TestDepth: MaxDepth levels are converted, one more is an error.
func TestDepth(t *testing.T) {
	nest := func(levels int) string {
		var b strings.Builder
		for i := range levels {
			b.WriteString("Content-Type: multipart/mixed; boundary=b" + string(rune('A'+i%26)) + string(rune('a'+i/26)) + "\r\n\r\n--b" + string(rune('A'+i%26)) + string(rune('a'+i/26)) + "\r\n")
		}
		b.WriteString("Content-Type: text/plain\r\n\r\nä\r\n")
		return b.String()
	}
	out, err := Bytes([]byte(nest(MaxDepth)))
	if err != nil || Is8bit(out) {
		t.Fatalf("depth %d: %v", MaxDepth, err)
	}
	if _, err := Bytes([]byte(nest(MaxDepth + 1))); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("depth %d: %v", MaxDepth+1, err)
	}
	msg := "Content-Type: text/plain\r\n\r\nä\r\n"
	for range MaxDepth + 1 {
		msg = "Content-Type: message/rfc822\r\n\r\n" + msg
	}
	if _, err := Bytes([]byte(msg)); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("message/rfc822 nested %d deep: %v", MaxDepth+1, err)
	}
}

func TestReader(t *testing.T) {
	in := "Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n"
	got, err := io.ReadAll(Reader(iotest.OneByteReader(strings.NewReader(in))))
	if err != nil || string(got) != "Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n" {
		t.Fatalf("%q %v", got, err)
	}
	// A read error reaches the reader of the result.
	boom := errors.New("boom")
	if _, err := io.ReadAll(Reader(io.MultiReader(strings.NewReader(in[:40]), iotest.ErrReader(boom)))); !errors.Is(err, boom) {
		t.Fatalf("read error: %v", err)
	}
	// Closing early ends the conversion.
	r := Reader(strings.NewReader(in + strings.Repeat("ä", 1<<20)))
	r.Close()
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestWriteError: a failing writer fails Convert.
func TestWriteError(t *testing.T) {
	boom := errors.New("boom")
	err := Convert(failWriter{boom}, strings.NewReader("Content-Type: text/plain\r\n\r\n"+strings.Repeat("ä", 10000)))
	if !errors.Is(err, boom) {
		t.Fatalf("%v", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

// TestCleanAndIs8bit: a high byte or a Content-Transfer-Encoding field at
// any offset (the word-at-a-time scan and the search at '-' have edges).
func TestCleanAndIs8bit(t *testing.T) {
	for n := 0; n < 40; n++ {
		for at := 0; at < n; at++ {
			b := bytes.Repeat([]byte("a"), n)
			if Is8bit(b) || !Clean(b) {
				t.Fatalf("n=%d: %q counts as 8-bit or unclean", n, b)
			}
			b[at] = 0x80
			if !Is8bit(b) || Clean(b) {
				t.Fatalf("n=%d: 0x80 at %d not seen", n, at)
			}
		}
	}
	for _, c := range []struct {
		in    string
		clean bool
	}{
		{"Content-Type: text/plain\r\n\r\nhi - there -\r\n", true},
		{"Content-Transfer-Encoding: 7bit\r\n\r\nhi\r\n", true},
		{"content-transfer-encoding:base64 \r\n\r\n", true},
		{"Content-Transfer-Encoding : Quoted-Printable\r\n\r\nhi=20\r\n", true},
		{"Content-Transfer-Encoding: 8bit\r\n\r\nhi\r\n", false},
		{"Content-Transfer-Encoding: binary\r\n\r\nhi\r\n", false},
		{"Content-Transfer-Encoding: 7bit (or so)\r\n\r\nhi\r\n", false},
		{"Content-Transfer-Encoding: 7bit\r\n binary\r\n\r\nhi\r\n", false},
		{"Content-Transfer-Encoding:\r\n 8bit\r\n\r\nhi\r\n", false},
		{"Content-Transfer-Encoding: 7bit", false},
		{"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nCONTENT-TRANSFER-ENCODING: 8bit\r\n\r\nx\r\n--b--\r\n", false},
		{"Content-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: 7bit\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\neA==\r\n--b--\r\n", true},
		{"content-transfer-encodin", true},
		{"-transfer-encoding", true},
		{"Content-", true},
		{"", true},
	} {
		if Clean([]byte(c.in)) != c.clean {
			t.Errorf("Clean(%q) = %v", c.in, !c.clean)
		}
		if out, err := Bytes([]byte(c.in)); c.clean && (err != nil || string(out) != c.in) {
			t.Errorf("Convert changed Clean %q: %q, %v", c.in, out, err)
		}
	}
}
