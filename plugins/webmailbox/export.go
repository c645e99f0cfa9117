package webmailbox

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"codeberg.org/go-pdf/fpdf"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/gomonobold"
	"golang.org/x/image/font/gofont/goregular"
)

// newPDF is an A4 document with the Go fonts (golang.org/x/image's
// gofont, embedded as subsets), which cover Latin, Greek and Cyrillic
// and the euro sign: the families "go" and "gomono", styles "" and "B". tr only repairs
// invalid UTF-8; characters the font lacks print as its blank glyph.
func newPDF(title string) (*fpdf.Fpdf, func(string) string) {
	pdf := fpdf.New("P", "mm", "A4", "")
	pdf.SetMargins(20, 20, 20)
	pdf.SetAutoPageBreak(true, 20)
	pdf.SetCreator("Posthorn web mailbox", false)
	pdf.SetTitle(title, true)
	pdf.SetCreationDate(time.Unix(0, 0).UTC()) // no local time leaks into the file
	pdf.AddUTF8FontFromBytes("go", "", goregular.TTF)
	pdf.AddUTF8FontFromBytes("go", "B", gobold.TTF)
	pdf.AddUTF8FontFromBytes("gomono", "", gomono.TTF)
	pdf.AddUTF8FontFromBytes("gomono", "B", gomonobold.TTF)
	return pdf, func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
}

// ExportPDF renders a message as PDF: header block, text body (HTML mail
// as text), and the names of its attachments.
// Dates are written in lang and loc; a message without a Date header
// gets when it arrived (received).
func ExportPDF(raw []byte, lang string, loc *time.Location, received time.Time) ([]byte, error) {
	p, _ := ParseMessage(raw)
	meta := metaOf(raw)
	pdf, tr := newPDF(meta.Subject)
	pdf.AddPage()
	pdf.SetFont("go", "B", 14)
	pdf.MultiCell(0, 7, tr(firstNonEmpty(meta.Subject, T(lang, "no_subject"))), "", "L", false)
	pdf.Ln(2)
	pdf.SetFont("go", "", 10)
	for _, h := range [][2]string{{"from", meta.From}, {"to", meta.To}, {"date", headerDate(meta.Date, received, lang, loc)}} {
		if h[1] == "" {
			continue
		}
		pdf.SetFont("go", "B", 10)
		pdf.CellFormat(25, 5, tr(T(lang, h[0])+":"), "", 0, "L", false, 0, "")
		pdf.SetFont("go", "", 10)
		pdf.MultiCell(0, 5, tr(h[1]), "", "L", false)
	}
	if cc := p.Header.Get("Cc"); cc != "" {
		pdf.CellFormat(25, 5, "Cc:", "", 0, "L", false, 0, "")
		pdf.MultiCell(0, 5, tr(cc), "", "L", false)
	}
	pdf.Ln(3)
	pdf.Line(20, pdf.GetY(), 190, pdf.GetY())
	pdf.Ln(4)
	body := p.Text
	if body == "" {
		body = htmlToText(p.HTML)
	}
	pdf.SetFont("go", "", 10)
	pdf.MultiCell(0, 5, tr(strings.ReplaceAll(body, "\r\n", "\n")), "", "L", false)
	if len(p.Attachments) > 0 {
		pdf.Ln(4)
		pdf.SetFont("go", "B", 10)
		pdf.MultiCell(0, 5, tr(T(lang, "attachments")+":"), "", "L", false)
		pdf.SetFont("go", "", 10)
		for _, a := range p.Attachments {
			pdf.MultiCell(0, 5, tr(fmt.Sprintf("- %s (%s, %d B)", a.Name, a.ContentType, len(a.Data))), "", "L", false)
		}
	}
	var buf bytes.Buffer
	if err := pdf.Output(&buf); err != nil {
		return nil, fmt.Errorf("webmailbox: PDF: %w", err)
	}
	return buf.Bytes(), nil
}
