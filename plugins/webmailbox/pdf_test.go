package webmailbox

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExportPDF(t *testing.T) {
	b, err := ExportPDF([]byte(testMsg), "de", time.UTC, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "%PDF-") || !strings.Contains(string(b[len(b)-10:]), "%%EOF") {
		t.Fatalf("not a PDF: %q", b[:20])
	}
	if bin, err := exec.LookPath("pdftotext"); err == nil {
		f := filepath.Join(t.TempDir(), "m.pdf")
		os.WriteFile(f, b, 0o600)
		out, err := exec.Command(bin, "-enc", "UTF-8", f, "-").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Quarterly figures SECRETSUBJECT", "Von:", "SECRETBODY. Grüße", "figures.pdf"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("pdftotext lacks %q:\n%s", want, out)
			}
		}
	}
}

// TestExportPDFUnicode: characters outside Windows-1252 print (the Go
// fonts are embedded), an HTML-only message prints as text, and a message
// without a Date header gets the arrival date in the reader's language
// and time zone.
func TestExportPDFUnicode(t *testing.T) {
	bin, err := exec.LookPath("pdftotext")
	if err != nil {
		t.Skip("pdftotext not installed (Debian poppler-utils; .ci/run installs it)")
	}
	msg := "From: =?utf-8?q?=C5=81ukasz?= <lukasz@org.example>\r\nTo: bob@partner.test\r\nSubject: =?utf-8?b?zqnOvM61zrPOsSDQltGD0Log4oKs?=\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
		"<html><body><p>Łódź, Ωmega, Жук: 100 €</p><p>Second paragraph</p></body></html>\r\n"
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ExportPDF([]byte(msg), "de", berlin, time.Date(2026, 11, 24, 9, 30, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "m.pdf")
	os.WriteFile(f, b, 0o600)
	out, err := exec.Command(bin, "-enc", "UTF-8", f, "-").Output()
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, want := range []string{"Łukasz", "Ωμεγα Жук €", "Łódź, Ωmega, Жук: 100 €", "Second paragraph", "Datum:", "Di. 24.11.2026, 10:30 CET"} {
		if !strings.Contains(text, want) {
			t.Errorf("pdftotext lacks %q:\n%s", want, text)
		}
	}
}
