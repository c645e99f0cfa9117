package mime7bit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"
)

// FuzzConvert checks, on any input: Is8bit and Clean are right, and
// Convert leaves a Clean input as it is; no failure but ErrTooDeep; the
// output is a fixed point; a 7-bit input without 8bit or binary labels
// comes out unchanged; and a message that is a single leaf comes out
// with a 7-bit body that decodes to the original one. The seed corpus is
// in testdata/fuzz/FuzzConvert.
func FuzzConvert(f *testing.F) {
	// Seeds for Clean: labels it lets through and ones it must not.
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: 7bit\r\n\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx=3D\r\n--b\r\ncontent-transfer-encoding :BASE64\r\n\r\neA==\r\n--b--\r\n"))
	f.Add([]byte("Content-Transfer-Encoding: 7bit\r\n\tbinary\r\n\r\nx\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		naive8 := false
		for _, c := range in {
			naive8 = naive8 || c >= 0x80
		}
		if Is8bit(in) != naive8 {
			t.Fatalf("Is8bit(%q) = %v", in, !naive8)
		}
		clean := Clean(in)
		if clean && naive8 || !clean && !naive8 && !strings.Contains(strings.ToLower(string(in)), "content-transfer-encoding") {
			t.Fatalf("Clean(%q) = %v", in, clean)
		}
		out, err := Bytes(in)
		if err == nil && clean && !bytes.Equal(in, out) {
			t.Fatalf("Clean input changed:\n in %q\nout %q", in, out)
		}
		if err != nil {
			if !errors.Is(err, ErrTooDeep) {
				t.Fatalf("Convert: %v", err)
			}
			return
		}
		again, err := Bytes(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not a fixed point (%v):\n out %q\nthen %q", err, out, again)
		}
		lower := strings.ToLower(string(in))
		if !Is8bit(in) && !strings.Contains(lower, "8bit") && !strings.Contains(lower, "binary") && !bytes.Equal(in, out) {
			t.Fatalf("7-bit input changed:\n in %q\nout %q", in, out)
		}
		if strings.Contains(lower, "multipart") || strings.Contains(lower, "message") {
			return
		}
		inHead, inBody := split(in)
		outHead, outBody := split(out)
		if bytes.Equal(inBody, outBody) {
			return
		}
		if Is8bit(outBody) {
			t.Fatalf("8-bit body after conversion: %q", out)
		}
		if strings.Contains(strings.ToLower(string(inHead)), "quoted-printable") || strings.Contains(strings.ToLower(string(inHead)), "base64") {
			return // a first label of 8bit, then one of base64: whatever it meant
		}
		var dec []byte
		switch {
		case bytes.Contains(outHead, []byte("Content-Transfer-Encoding: base64")):
			dec, err = base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(outBody)))
		case bytes.Contains(outHead, []byte("Content-Transfer-Encoding: quoted-printable")):
			dec, err = io.ReadAll(quotedprintable.NewReader(bytes.NewReader(outBody)))
			dec, inBody = canonical(dec), canonical(inBody)
		default:
			t.Fatalf("body changed without a new label: %q", out)
		}
		if err != nil || !bytes.Equal(dec, inBody) {
			t.Fatalf("decoded body differs (%v):\n  in %q\n out %q\n dec %q", err, in, out, dec)
		}
	})
}

// split cuts a message at the first blank line (the header may also end
// without one: then there is no body).
func split(b []byte) (head, body []byte) {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		line := b[i : i+j+1]
		if string(line) == "\n" || string(line) == "\r\n" {
			return b[:i+j+1], b[i+j+1:]
		}
		i += j + 1
	}
	return b, nil
}

// canonical makes every line break LF, as text-mode quoted-printable does
// not keep the kind of line break.
func canonical(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))
}
