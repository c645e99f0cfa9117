package webmailbox

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"path"
	"strings"

	"golang.org/x/text/encoding/htmlindex"
)

// Parsed is a message taken apart for display.
type Parsed struct {
	Header      mail.Header
	Text        string // the first text/plain part, decoded to UTF-8
	HTML        string // the first text/html part, decoded, unsanitised
	Attachments []Attachment
}

// Attachment is one attached file.
type Attachment struct {
	Name        string
	ContentType string
	Data        []byte
	ContentID   string // without <>, for inline images (cid: URLs)
}

// inlineImages maps Content-IDs of image parts to data: URLs for the HTML
// view (only common raster types, at most 2 MB each).
func (p *Parsed) inlineImages() map[string]string {
	out := map[string]string{}
	for _, a := range p.Attachments {
		switch a.ContentType {
		case "image/png", "image/jpeg", "image/gif", "image/webp":
		default:
			continue
		}
		if a.ContentID != "" && len(a.Data) <= 2<<20 {
			out[a.ContentID] = "data:" + a.ContentType + ";base64," + base64.StdEncoding.EncodeToString(a.Data)
		}
	}
	return out
}

const (
	maxDepth = 16
	maxParts = 500
)

// ErrBadMessage wraps every parse failure.
var ErrBadMessage = errors.New("webmailbox: malformed message")

func charsetReader(charset string, r io.Reader) (io.Reader, error) {
	cs := strings.ToLower(strings.TrimSpace(charset))
	if cs == "" || cs == "utf-8" || cs == "us-ascii" || cs == "utf8" {
		return r, nil
	}
	enc, err := htmlindex.Get(cs)
	if err != nil {
		return nil, fmt.Errorf("unknown charset %q", charset)
	}
	return enc.NewDecoder().Reader(r), nil
}

// ParseMessage takes raw apart. A broken MIME structure gives an error
// wrapping ErrBadMessage; what could be read before is kept.
func ParseMessage(raw []byte) (*Parsed, error) {
	m, err := mail.ReadMessage(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return &Parsed{Header: mail.Header{}}, fmt.Errorf("%w: header: %v", ErrBadMessage, err)
	}
	p := &Parsed{Header: m.Header}
	n := 0
	err = p.walk(m.Header.Get("Content-Type"), m.Header.Get("Content-Transfer-Encoding"), m.Header.Get("Content-Disposition"), "", m.Body, 0, &n)
	return p, err
}

func decodeTE(te string, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(te)) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, &b64Cleaner{r: r})
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	}
	return r
}

// b64Cleaner drops whitespace so line-wrapped base64 decodes.
type b64Cleaner struct{ r io.Reader }

func (c *b64Cleaner) Read(p []byte) (int, error) {
	for {
		n, err := c.r.Read(p)
		j := 0
		for _, b := range p[:n] {
			if b != '\r' && b != '\n' && b != ' ' && b != '\t' {
				p[j] = b
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

func (p *Parsed) walk(ctype, te, disp, cid string, body io.Reader, depth int, n *int) error {
	*n++
	if depth > maxDepth || *n > maxParts {
		return fmt.Errorf("%w: too deeply nested or too many parts", ErrBadMessage)
	}
	if ctype == "" {
		ctype = "text/plain; charset=us-ascii"
	}
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		mt, params = "application/octet-stream", map[string]string{}
	}
	dispType, dparams, _ := mime.ParseMediaType(disp)
	name := dparams["filename"]
	if name == "" {
		name = params["name"]
	}
	if d, err := wordDecoder.DecodeHeader(name); err == nil {
		name = d
	}
	name = safeName(name)
	if strings.HasPrefix(mt, "multipart/") {
		b := params["boundary"]
		if b == "" {
			return fmt.Errorf("%w: %s without boundary", ErrBadMessage, mt)
		}
		mr := multipart.NewReader(body, b)
		for {
			part, err := mr.NextRawPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%w: %v", ErrBadMessage, err)
			}
			if err := p.walk(part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"),
				part.Header.Get("Content-Disposition"), part.Header.Get("Content-Id"), part, depth+1, n); err != nil {
				return err
			}
		}
	}
	data, err := io.ReadAll(decodeTE(te, body))
	if err != nil {
		return fmt.Errorf("%w: %s part: %v", ErrBadMessage, mt, err)
	}
	inline := dispType != "attachment"
	if inline && (mt == "text/plain" || mt == "text/html") && ((mt == "text/plain" && p.Text == "") || (mt == "text/html" && p.HTML == "")) {
		r, err := charsetReader(params["charset"], bytes.NewReader(data))
		if err != nil {
			r = bytes.NewReader(data)
		}
		dec, err := io.ReadAll(r)
		if err != nil {
			dec = data
		}
		s := strings.ToValidUTF8(string(dec), "\uFFFD")
		if mt == "text/plain" {
			p.Text = s
		} else {
			p.HTML = s
		}
		return nil
	}
	if name == "" {
		ext := ".bin"
		if exts, _ := mime.ExtensionsByType(mt); len(exts) > 0 {
			ext = exts[0]
		}
		if mt == "message/rfc822" {
			ext = ".eml"
		}
		name = fmt.Sprintf("attachment-%d%s", len(p.Attachments)+1, ext)
	}
	p.Attachments = append(p.Attachments, Attachment{Name: name, ContentType: mt, Data: data,
		ContentID: strings.Trim(strings.TrimSpace(cid), "<>")})
	return nil
}

// safeName keeps a file name usable in a Content-Disposition header and on
// disk: no directories, no control characters.
func safeName(s string) string {
	s = strings.ReplaceAll(s, "\\", "/")
	s = path.Base(s)
	if s == "." || s == "/" {
		return ""
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' {
			return -1
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.ToValidUTF8(s, "")
}
