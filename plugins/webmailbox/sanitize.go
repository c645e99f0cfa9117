package webmailbox

import (
	"regexp"
	"strings"

	"github.com/microcosm-cc/bluemonday"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// Sanitize reduces HTML mail to a safe subset with a bluemonday policy:
// allowed tags with a few attributes; scripts, styles, forms, frames,
// event handlers and remote resources are removed. The result is still
// shown only inside a sandboxed frame under a CSP that forbids scripts
// and remote loads.
func Sanitize(in string) string { return SanitizeWith(in, nil) }

// SanitizeWith is Sanitize with inline images: src="cid:X" becomes
// cids[X] (a data: URL) when present.
func SanitizeWith(in string, cids map[string]string) string {
	if len(cids) > 0 {
		in = inlineCIDs(in, cids)
	}
	return policy.Sanitize(in)
}

// dropWithContent are elements removed together with what they contain.
var dropWithContent = []string{"script", "style", "iframe", "object", "embed", "frameset", "frame", "noscript",
	"template", "svg", "math", "head", "title", "textarea", "select", "applet", "noembed", "noframes", "xmp", "plaintext"}

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

// dataImage is the only image source kept: embedded images. Remote ones
// would tell the sender when the mail is read.
var dataImage = regexp.MustCompile(`^\s*data:image/(png|gif|jpeg|webp|bmp);base64,[A-Za-z0-9+/=\s]*$`)

var policy = func() *bluemonday.Policy {
	p := bluemonday.NewPolicy()
	var tags []string
	for a := range allowedTags {
		tags = append(tags, a.String())
	}
	p.AllowElements(tags...)
	p.SkipElementsContent(dropWithContent...)
	p.AllowAttrs("href").OnElements("a")
	p.AllowURLSchemes("http", "https", "mailto")
	p.RequireParseableURLs(true)
	p.RequireNoFollowOnLinks(true)
	p.RequireNoReferrerOnLinks(true)
	p.AddTargetBlankToFullyQualifiedLinks(true)
	p.AllowDataURIImages()
	p.AllowAttrs("src").Matching(dataImage).OnElements("img")
	p.AllowAttrs("alt", "title").Globally()
	p.AllowAttrs("colspan", "rowspan", "align", "valign", "width", "height").OnElements("td", "th", "tr", "table", "img", "p", "div", "col")
	p.AllowAttrs("border", "cellpadding", "cellspacing").OnElements("table")
	p.AllowAttrs("color", "size").OnElements("font")
	return p
}()

// inlineCIDs replaces src="cid:X" of images by cids[X].
func inlineCIDs(in string, cids map[string]string) string {
	var b strings.Builder
	z := html.NewTokenizer(strings.NewReader(in))
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			return b.String()
		}
		if tt == html.StartTagToken || tt == html.SelfClosingTagToken {
			tok := z.Token()
			if tok.DataAtom == atom.Img {
				changed := false
				for i, a := range tok.Attr {
					v := strings.TrimSpace(a.Val)
					if a.Key == "src" && strings.HasPrefix(v, "cid:") {
						if u, ok := cids[strings.TrimPrefix(v, "cid:")]; ok {
							tok.Attr[i].Val, changed = u, true
						}
					}
				}
				if changed {
					b.WriteString(tok.String())
					continue
				}
			}
		}
		b.Write(z.Raw())
	}
}
