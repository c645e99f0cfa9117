package webmailbox

import (
	"net/url"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// Sanitize reduces HTML mail to a safe subset: allowed tags with a few
// attributes; scripts, styles, forms, frames, event handlers and remote
// resources are removed. The result is still shown only inside a
// sandboxed frame under a CSP that forbids scripts and remote loads.
func Sanitize(in string) string { return SanitizeWith(in, nil) }

// SanitizeWith is Sanitize with inline images: src="cid:X" becomes
// cids[X] (a data: URL) when present.
func SanitizeWith(in string, cids map[string]string) string {
	var b strings.Builder
	z := html.NewTokenizer(strings.NewReader(in))
	skip := 0 // depth inside a dropped-with-content element
	var skipTag atom.Atom
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return b.String() // io.EOF or a tokenizer error: stop there
		case html.TextToken:
			if skip == 0 {
				b.WriteString(html.EscapeString(string(z.Text())))
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			tok := z.Token()
			if skip > 0 {
				if tok.DataAtom == skipTag && tt == html.StartTagToken {
					skip++
				}
				continue
			}
			if dropWithContent[tok.DataAtom] {
				if tt == html.StartTagToken && !voidElem[tok.DataAtom] {
					skip, skipTag = 1, tok.DataAtom
				}
				continue
			}
			if !allowedTags[tok.DataAtom] {
				continue
			}
			b.WriteByte('<')
			b.WriteString(tok.DataAtom.String())
			for _, a := range tok.Attr {
				if tok.DataAtom == atom.Img && a.Key == "src" && a.Namespace == "" {
					if u, ok := cids[strings.TrimPrefix(strings.TrimSpace(a.Val), "cid:")]; ok && strings.HasPrefix(strings.TrimSpace(a.Val), "cid:") {
						a.Val = u
					}
				}
				if v, ok := cleanAttr(tok.DataAtom, a); ok {
					b.WriteByte(' ')
					b.WriteString(a.Key)
					b.WriteString(`="`)
					b.WriteString(html.EscapeString(v))
					b.WriteByte('"')
				}
			}
			if tok.DataAtom == atom.A {
				b.WriteString(` rel="noopener noreferrer nofollow" target="_blank"`)
			}
			b.WriteByte('>')
		case html.EndTagToken:
			tok := z.Token()
			if skip > 0 {
				if tok.DataAtom == skipTag {
					skip--
				}
				continue
			}
			if allowedTags[tok.DataAtom] && !voidElem[tok.DataAtom] {
				b.WriteString("</" + tok.DataAtom.String() + ">")
			}
		}
	}
}

var dropWithContent = map[atom.Atom]bool{
	atom.Script: true, atom.Style: true, atom.Iframe: true, atom.Object: true, atom.Embed: true,
	atom.Frameset: true, atom.Frame: true, atom.Noscript: true, atom.Template: true, atom.Svg: true,
	atom.Math: true, atom.Head: true, atom.Title: true, atom.Textarea: true, atom.Select: true,
	atom.Applet: true, atom.Noembed: true, atom.Noframes: true, atom.Xmp: true, atom.Plaintext: true,
}

var voidElem = map[atom.Atom]bool{atom.Br: true, atom.Hr: true, atom.Img: true, atom.Wbr: true}

var allowedTags = map[atom.Atom]bool{
	atom.A: true, atom.B: true, atom.I: true, atom.U: true, atom.S: true, atom.Em: true, atom.Strong: true,
	atom.P: true, atom.Br: true, atom.Hr: true, atom.Div: true, atom.Span: true, atom.Blockquote: true,
	atom.Pre: true, atom.Code: true, atom.Ul: true, atom.Ol: true, atom.Li: true, atom.Dl: true, atom.Dt: true,
	atom.Dd: true, atom.H1: true, atom.H2: true, atom.H3: true, atom.H4: true, atom.H5: true, atom.H6: true,
	atom.Table: true, atom.Thead: true, atom.Tbody: true, atom.Tfoot: true, atom.Tr: true, atom.Td: true,
	atom.Th: true, atom.Caption: true, atom.Img: true, atom.Small: true, atom.Big: true, atom.Sub: true,
	atom.Sup: true, atom.Font: true, atom.Center: true, atom.Tt: true, atom.Abbr: true, atom.Cite: true,
	atom.Q: true, atom.Del: true, atom.Ins: true, atom.Mark: true,
}

func cleanAttr(tag atom.Atom, a html.Attribute) (string, bool) {
	if a.Namespace != "" {
		return "", false
	}
	switch a.Key {
	case "href":
		if tag != atom.A {
			return "", false
		}
		u, err := url.Parse(strings.TrimSpace(a.Val))
		if err != nil {
			return "", false
		}
		switch strings.ToLower(u.Scheme) {
		case "http", "https", "mailto":
			return u.String(), true
		}
		return "", false
	case "src":
		// Only embedded images; remote ones would tell the sender when the
		// mail is read.
		if tag == atom.Img && strings.HasPrefix(strings.ToLower(strings.TrimSpace(a.Val)), "data:image/") {
			return strings.TrimSpace(a.Val), true
		}
		return "", false
	case "alt", "title", "colspan", "rowspan", "align", "valign", "width", "height", "border", "cellpadding", "cellspacing", "color", "size":
		return a.Val, true
	}
	return "", false
}
