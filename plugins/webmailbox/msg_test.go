package webmailbox

import (
	"bytes"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestExportMSGWithMsgconvert(t *testing.T) {
	b, err := ExportMSG([]byte(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:8]) != "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1" || len(b)%512 != 0 {
		t.Fatalf("not a compound file: % x, %d bytes", b[:8], len(b))
	}
	bin, err := exec.LookPath("msgconvert")
	if err != nil {
		t.Skip("msgconvert (Debian libemail-outlook-message-perl) not installed")
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "m.msg")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--outfile", filepath.Join(dir, "out.eml"), f)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("msgconvert: %v\n%s", err, out)
	}
	eml, err := os.ReadFile(filepath.Join(dir, "out.eml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(eml)
	for _, want := range []string{"Quarterly figures SECRETSUBJECT", "alice@org.example", "bob@partner.test", "figures.pdf", "SECRETBODY"} {
		if !strings.Contains(s, want) {
			t.Errorf("msgconvert output lacks %q:\n%s", want, s)
		}
	}
	if len(out) > 0 {
		t.Logf("msgconvert said: %s", out)
	}
}

func TestExportMSGLargeParts(t *testing.T) {
	bin, err := exec.LookPath("msgconvert")
	if err != nil {
		t.Skip("msgconvert not installed")
	}
	big := strings.Repeat("Zeile mit Umlauten äöü LARGEBODY\r\n", 400) // > 4096 bytes: regular sectors
	raw := "From: a@org.example\r\nTo: b@x.test, \"C\" <c@x.test>\r\nCc: d@x.test\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n" + big
	b, err := ExportMSG([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "m.msg")
	os.WriteFile(f, b, 0o600)
	if out, err := exec.Command(bin, "--outfile", filepath.Join(dir, "o.eml"), f).CombinedOutput(); err != nil {
		t.Fatalf("msgconvert: %v %s", err, out)
	}
	eml, _ := os.ReadFile(filepath.Join(dir, "o.eml"))
	if strings.Count(string(eml), "LARGEBODY") != 400 || !strings.Contains(string(eml), "c@x.test") {
		t.Errorf("large body or recipients lost: %d copies", strings.Count(string(eml), "LARGEBODY"))
	}
}

func TestExportMSGBigAttachmentDIFAT(t *testing.T) {
	bin, err := exec.LookPath("msgconvert")
	if err != nil || testing.Short() {
		t.Skip("msgconvert not installed or -short")
	}
	data := make([]byte, 8<<20) // > 6.8 MB: needs DIFAT sectors
	for i := range data {
		data[i] = byte(i * 7)
	}
	raw := "From: a@org.example\r\nTo: b@x.test\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--q\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64Lines(data) + "--q--\r\n"
	b, err := ExportMSG([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "m.msg")
	os.WriteFile(f, b, 0o600)
	if out, err := exec.Command(bin, "--outfile", filepath.Join(dir, "o.eml"), f).CombinedOutput(); err != nil {
		t.Fatalf("msgconvert: %v %s", err, out)
	}
	eml, _ := os.ReadFile(filepath.Join(dir, "o.eml"))
	p, err := ParseMessage(eml)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Attachments) != 1 || !bytes.Equal(p.Attachments[0].Data, data) {
		t.Fatalf("attachment did not survive: %d attachments", len(p.Attachments))
	}
}

func base64Lines(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 76 {
		out.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	out.WriteString(s + "\r\n")
	return out.String()
}
