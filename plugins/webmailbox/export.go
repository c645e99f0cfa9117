package webmailbox

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"codeberg.org/go-pdf/fpdf"
)

// newPDF is an A4 document with the built-in Helvetica. The core fonts
// cover Windows-1252 (German and Western European text); other characters
// print as "?".
func newPDF(title string) (*fpdf.Fpdf, func(string) string) {
	pdf := fpdf.New("P", "mm", "A4", "")
	pdf.SetMargins(20, 20, 20)
	pdf.SetAutoPageBreak(true, 20)
	pdf.SetCreator("Posthorn web mailbox", false)
	pdf.SetTitle(title, true)
	pdf.SetCreationDate(time.Unix(0, 0).UTC()) // no local time leaks into the file
	tr := pdf.UnicodeTranslatorFromDescriptor("")
	return pdf, func(s string) string { return tr(strings.ToValidUTF8(s, "?")) }
}

// ExportPDF renders a message as PDF: header block, text body (HTML mail
// as text), and the names of its attachments.
func ExportPDF(raw []byte, lang string) ([]byte, error) {
	p, _ := ParseMessage(raw)
	meta := metaOf(raw)
	pdf, tr := newPDF(meta.Subject)
	pdf.AddPage()
	pdf.SetFont("Helvetica", "B", 14)
	pdf.MultiCell(0, 7, tr(firstNonEmpty(meta.Subject, T(lang, "no_subject"))), "", "L", false)
	pdf.Ln(2)
	pdf.SetFont("Helvetica", "", 10)
	for _, h := range [][2]string{{"from", meta.From}, {"to", meta.To}, {"date", meta.Date}} {
		if h[1] == "" {
			continue
		}
		pdf.SetFont("Helvetica", "B", 10)
		pdf.CellFormat(25, 5, tr(T(lang, h[0])+":"), "", 0, "L", false, 0, "")
		pdf.SetFont("Helvetica", "", 10)
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
	pdf.SetFont("Helvetica", "", 10)
	pdf.MultiCell(0, 5, tr(strings.ReplaceAll(body, "\r\n", "\n")), "", "L", false)
	if len(p.Attachments) > 0 {
		pdf.Ln(4)
		pdf.SetFont("Helvetica", "B", 10)
		pdf.MultiCell(0, 5, tr(T(lang, "attachments")+":"), "", "L", false)
		pdf.SetFont("Helvetica", "", 10)
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
