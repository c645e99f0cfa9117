package webmailbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"codeberg.org/go-pdf/fpdf"
	"rsc.io/qr"

	"github.com/posthorn/posthorn/sdk"
)

const tanAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789" // no 0/O, 1/I

func newTAN() string {
	var b strings.Builder
	for i := 0; i < 12; i++ {
		if i > 0 && i%4 == 0 {
			b.WriteByte('-')
		}
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(tanAlphabet))))
		if err != nil {
			panic(err)
		}
		b.WriteByte(tanAlphabet[n.Int64()])
	}
	return b.String()
}

// IssueTAN prepares addr's mailbox for registration by letter: the mailbox
// is created if needed (pending), a one-time TAN is stored (hashed) and a
// fresh activation link valid for validity is made. Only a pending mailbox
// gets a TAN.
func (sv *Service) IssueTAN(ctx context.Context, addr string, validity time.Duration) (tan, link string, expires time.Time, err error) {
	addr = normAddr(addr)
	if a, err := mail.ParseAddress(addr); err != nil || a.Address != addr {
		return "", "", time.Time{}, fmt.Errorf("%q is not a mail address", addr)
	}
	now := sv.Now()
	mb, err := sv.store.GetMailbox(ctx, addr)
	if errors.Is(err, ErrNotFound) {
		priv, err := NewKeyPair()
		if err != nil {
			return "", "", time.Time{}, err
		}
		mb = &Mailbox{Address: addr, State: StatePending, Language: sv.s.defaultLang, PublicKey: priv.PublicKey().Bytes(),
			WrappedMK: WrapWithKey(priv, sv.master, adMK(addr)), ResetAllow: sv.s.resetAllowed, Created: now, LastActive: now}
		if _, err := sv.store.CreateMailbox(ctx, mb); err != nil {
			return "", "", time.Time{}, err
		}
		if mb, err = sv.store.GetMailbox(ctx, addr); err != nil {
			return "", "", time.Time{}, err
		}
	} else if err != nil {
		return "", "", time.Time{}, err
	}
	if mb.State != StatePending {
		return "", "", time.Time{}, fmt.Errorf("the mailbox of %s is already activated", addr)
	}
	tan = newTAN()
	mb.TANHash = slowHash(normTAN(tan), pinKDF)
	if err := sv.store.UpdateMailbox(ctx, mb); err != nil {
		return "", "", time.Time{}, err
	}
	tok := newToken()
	expires = now.Add(validity)
	if err := sv.store.PutToken(ctx, &Token{Hash: tokenHash(tok), Mailbox: addr, Kind: "activate", Expires: expires}); err != nil {
		return "", "", time.Time{}, err
	}
	return tan, sv.link("/activate?t=" + tok), expires, nil
}

// Letterhead is what the TAN letter prints at its top: the operator's
// theming.
type Letterhead struct {
	Organization string
	Contact      string // support contact, e.g. a phone number or address
	LogoPNG      []byte // optional
}

// TANLetter renders the postal letter: letterhead, the recipient's postal
// address, the date, the link as a QR code and as text, and the TAN —
// the short code to type (12 characters without confusable ones).
func TANLetter(lang string, head Letterhead, postal []string, addr, link, tan string, issued, expires time.Time, loc *time.Location) ([]byte, error) {
	pdf, tr := newPDF("TAN")
	pdf.AddPage()
	de := lang != "en"
	pick := func(g, e string) string {
		if de {
			return g
		}
		return e
	}
	// Letterhead: logo left, organisation and contact right, a rule.
	if len(head.LogoPNG) > 0 {
		opt := fpdf.ImageOptions{ImageType: "PNG", ReadDpi: false}
		pdf.RegisterImageOptionsReader("logo", opt, bytes.NewReader(head.LogoPNG))
		if pdf.Ok() {
			pdf.ImageOptions("logo", 20, 15, 0, 15, false, opt, 0, "")
		} else {
			pdf.ClearError() // a broken logo must not stop the letter
		}
	}
	pdf.SetXY(90, 15)
	pdf.SetFont("go", "B", 13)
	if head.Organization != "" {
		pdf.CellFormat(100, 6, tr(head.Organization), "", 2, "R", false, 0, "")
	}
	pdf.SetFont("go", "", 9)
	if head.Contact != "" {
		pdf.CellFormat(100, 5, tr(head.Contact), "", 2, "R", false, 0, "")
	}
	pdf.Line(20, 33, 190, 33)
	pdf.SetY(50)
	pdf.SetFont("go", "", 11)
	for _, l := range postal {
		pdf.CellFormat(0, 5, tr(l), "", 1, "L", false, 0, "")
	}
	pdf.SetY(85)
	pdf.CellFormat(0, 5, tr(formatLongDate(issued, lang, loc)), "", 1, "R", false, 0, "")
	pdf.SetY(100)
	pdf.SetFont("go", "B", 13)
	pdf.MultiCell(0, 6, tr(pick("Ihre Zugangsdaten für das sichere Postfach", "Your access to the secure mailbox")), "", "L", false)
	pdf.Ln(4)
	pdf.SetFont("go", "", 11)
	until := formatLongDate(expires, lang, loc)
	pdf.MultiCell(0, 5.5, tr(pick(
		"Guten Tag,\n\nfür die Adresse "+addr+" wurde ein sicheres Postfach eingerichtet. Scannen Sie den QR-Code mit Ihrem Smartphone oder geben Sie den Link darunter ein, legen Sie Ihr Passwort fest und geben Sie den Code ein. Der Code gilt einmal und bis zum "+until+".",
		"Hello,\n\na secure mailbox has been set up for "+addr+". Scan the QR code with your phone or type the link below it, choose your password and enter the code. The code can be used once, until "+until+".")), "", "L", false)
	pdf.Ln(4)
	y := pdf.GetY()
	code, err := qr.Encode(link, qr.M)
	if err != nil {
		return nil, fmt.Errorf("webmailbox: QR code: %w", err)
	}
	code.Scale = 8
	opt := fpdf.ImageOptions{ImageType: "PNG"}
	pdf.RegisterImageOptionsReader("qr", opt, bytes.NewReader(code.PNG()))
	pdf.ImageOptions("qr", 20, y, 40, 40, false, opt, 0, "")
	pdf.SetXY(66, y+4)
	pdf.SetFont("go", "", 10)
	pdf.CellFormat(0, 5, tr(pick("Ihr Code:", "Your code:")), "", 2, "L", false, 0, "")
	pdf.SetFont("gomono", "B", 20)
	pdf.CellFormat(0, 11, tan, "", 2, "L", false, 0, "")
	pdf.SetFont("go", "", 9)
	pdf.CellFormat(0, 5, tr(pick("Groß- und Kleinschreibung egal, Bindestriche nicht nötig.", "Upper or lower case, dashes not needed.")), "", 2, "L", false, 0, "")
	pdf.SetY(y + 44)
	pdf.SetFont("go", "", 9)
	pdf.MultiCell(0, 5, tr(pick("Link zum Eintippen:", "Link to type:")), "", "L", false)
	pdf.SetFont("gomono", "", 9)
	pdf.MultiCell(0, 5, link, "", "L", false)
	pdf.Ln(6)
	pdf.SetFont("go", "", 10)
	pdf.MultiCell(0, 5, tr(pick("Bewahren Sie diesen Brief nicht zusammen mit Ihrem Passwort auf.", "Do not keep this letter together with your password.")), "", "L", false)
	var buf bytes.Buffer
	if err := pdf.Output(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// TANCommand is "posthorn-webmailbox tan issue [flags] ADDR": it issues a
// TAN and writes the letter as PDF (to -o or stdout).
func TANCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "issue" {
		return errors.New("usage: posthorn-webmailbox tan issue -data DIR -base-url URL [-o letter.pdf] [-lang de|en] [-org NAME] [-contact TEXT] [-logo FILE.png] [-tz ZONE] [-postal 'Name|Street|City'] [-valid 720h] ADDR")
	}
	fs := flag.NewFlagSet("tan issue", flag.ContinueOnError)
	dataDir := fs.String("data", "", "the plugin's data directory (holds webmailbox.db and master.key)")
	db := fs.String("database", "", "database file if not DATA/webmailbox.db")
	baseURL := fs.String("base-url", "", "the web mailbox's base_url")
	out := fs.String("o", "", "write the letter here instead of stdout")
	lang := fs.String("lang", "de", "letter language: de or en")
	org := fs.String("org", "", "sender organisation printed on the letter")
	contact := fs.String("contact", "", "support contact printed under the organisation")
	logo := fs.String("logo", "", "PNG logo for the letterhead")
	tz := fs.String("tz", "Europe/Berlin", "time zone for the letter's dates")
	postal := fs.String("postal", "", "postal address lines separated by |")
	valid := fs.Duration("valid", 30*24*time.Hour, "how long link and TAN are valid")
	reset := fs.String("reset-mode", "question", "the plugin's reset_mode (question or none)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 || *dataDir == "" || *baseURL == "" {
		return errors.New("tan issue: need -data, -base-url and one address")
	}
	if *lang != "de" && *lang != "en" {
		return fmt.Errorf("tan issue: -lang %q: want de or en", *lang)
	}
	u, err := url.Parse(*baseURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("tan issue: -base-url %q is not an absolute URL", *baseURL)
	}
	s := &settings{baseURL: u, prefix: strings.TrimRight(u.Path, "/"), dbPath: filepath.Join(*dataDir, "webmailbox.db"),
		masterKeyPath: filepath.Join(*dataDir, "master.key"), resetAllowed: *reset != "none", defaultLang: *lang, kdf: DefaultKDF}
	if *db != "" {
		s.dbPath = *db
	}
	if _, err := os.Stat(s.masterKeyPath); err != nil {
		return fmt.Errorf("tan issue: %s: %w (is -data the plugin's data directory?)", s.masterKeyPath, err)
	}
	if dsn := os.Getenv(sdk.DatabaseEnv); dsn != "" {
		s.shared = &sdk.Database{DSN: dsn, MaxConns: 2}
	}
	sv, err := newService(context.Background(), s, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer sv.Close()
	addr := fs.Arg(0)
	tan, link, exp, err := sv.IssueTAN(context.Background(), addr, *valid)
	if err != nil {
		return fmt.Errorf("tan issue: %w", err)
	}
	var lines []string
	for _, l := range strings.Split(*postal, "|") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		lines = []string{normAddr(addr)}
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		return fmt.Errorf("tan issue: -tz %q: %w", *tz, err)
	}
	head := Letterhead{Organization: *org, Contact: *contact}
	if *logo != "" {
		if head.LogoPNG, err = os.ReadFile(*logo); err != nil {
			return fmt.Errorf("tan issue: -logo: %w", err)
		}
	}
	pdf, err := TANLetter(*lang, head, lines, normAddr(addr), link, tan, sv.Now(), exp, loc)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = stdout.Write(pdf)
		return err
	}
	return os.WriteFile(*out, pdf, 0o600)
}
