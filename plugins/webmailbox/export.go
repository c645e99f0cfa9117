package webmailbox

import "errors"

// ExportPDF renders a message as PDF.
func ExportPDF(raw []byte, lang string) ([]byte, error) {
	return nil, errors.New("webmailbox: PDF export is not available yet")
}
