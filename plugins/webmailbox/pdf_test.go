package webmailbox

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestExportPDF(t *testing.T) {
	b, err := ExportPDF([]byte(testMsg), "de")
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
