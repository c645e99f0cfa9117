package webmailbox

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
)

func FuzzParseMessage(f *testing.F) {
	f.Add([]byte(testMsg))
	f.Add([]byte("Subject: x\r\n\r\nbody"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n--a--\r\n"))
	f.Add([]byte("Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParseMessage(raw)
		if p == nil {
			t.Fatal("nil result")
		}
		if !utf8.ValidString(p.Text) || !utf8.ValidString(p.HTML) {
			t.Fatalf("invalid UTF-8 out (err %v)", err)
		}
		for _, a := range p.Attachments {
			if strings.ContainsAny(a.Name, "/\\\"\r\n") {
				t.Fatalf("unsafe attachment name %q", a.Name)
			}
		}
	})
}

func FuzzSanitize(f *testing.F) {
	f.Add(`<p onclick="x()">hi <script>alert(1)</script><a href="javascript:alert(1)">x</a><img src="https://t/x"></p>`)
	f.Add(`<svg><script>x</script></svg><style>body{}</style><iframe src=x></iframe>`)
	f.Add(`<a href="https://ok.example/?a=1&b=2">ok</a><<script>>`)
	f.Fuzz(func(t *testing.T, in string) {
		out := Sanitize(in)
		// Parse the output again: only allowed tags, only allowed
		// attributes, only safe URLs.
		z := html.NewTokenizer(strings.NewReader(out))
		for {
			tt := z.Next()
			if tt == html.ErrorToken {
				return
			}
			if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
				continue
			}
			tok := z.Token()
			if !allowedTags[tok.DataAtom] {
				t.Fatalf("tag %q in %q (from %q)", tok.Data, out, in)
			}
			for _, a := range tok.Attr {
				low := strings.ToLower(strings.TrimSpace(a.Val))
				switch {
				case strings.HasPrefix(a.Key, "on") || a.Key == "style":
					t.Fatalf("attribute %q in %q (from %q)", a.Key, out, in)
				case a.Key == "href" && !(strings.HasPrefix(low, "http:") || strings.HasPrefix(low, "https:") || strings.HasPrefix(low, "mailto:")):
					t.Fatalf("href %q in %q (from %q)", a.Val, out, in)
				case a.Key == "src" && !strings.HasPrefix(low, "data:image/"):
					t.Fatalf("src %q in %q (from %q)", a.Val, out, in)
				}
			}
		}
	})
}

func FuzzParseUploadedKey(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxsBN\n-----END PGP PUBLIC KEY BLOCK-----\n"))
	f.Add([]byte{0x30, 0x82, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseUploadedKey(data, "bob@partner.test")
		if err == nil && (k.Kind == "" || k.Fingerprint == "" || k.Armored == "") {
			t.Fatalf("accepted without details: %+v", k)
		}
	})
}

func FuzzExportMSG(f *testing.F) {
	f.Add([]byte(testMsg))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Disposition: attachment; filename=averyveryverylongnamewithoutdot\r\n\r\nx\r\n--a--\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := ExportMSG(raw)
		if err != nil {
			return
		}
		if len(b) < 1024 || len(b)%512 != 0 || string(b[:4]) != "\xD0\xCF\x11\xE0" {
			t.Fatalf("not a compound file: %d bytes", len(b))
		}
	})
}

func FuzzExportPDF(f *testing.F) {
	f.Add([]byte(testMsg))
	f.Add([]byte("Subject: =?utf-8?b?5pel5pys6Kqe?=\r\n\r\n\x00\xff\t\t" + strings.Repeat("x", 300)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := ExportPDF(raw, "en", time.UTC, time.Time{})
		if err == nil && !strings.HasPrefix(string(b), "%PDF-") {
			t.Fatal("not a PDF")
		}
	})
}
