package tlsrpt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/mail"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

// Resolver looks up TXT records; *resolver.Resolver has it.
type Resolver interface {
	TXT(ctx context.Context, name string) ([]string, bool, error)
}

// ErrNoPolicy: the domain publishes no (single, valid) TLSRPT record.
var ErrNoPolicy = errors.New("tlsrpt: no TLSRPT record")

// Rua returns the reporting URIs of domain from its "_smtp._tls" TXT
// record (RFC 8460 section 3): records not starting with "v=TLSRPTv1" are
// discarded, exactly one must remain, its fields are separated by ";"
// (with optional spaces), rua= holds comma-separated URIs, of which the
// mailto: and https: ones are returned (percent-encoded commas and
// semicolons stay encoded). Unknown fields are ignored. ErrNoPolicy when
// there is no usable record; DNS failures are returned as they are.
func Rua(ctx context.Context, res Resolver, domain string) ([]string, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	txt, _, err := res.TXT(ctx, "_smtp._tls."+domain)
	if err != nil {
		if errors.Is(err, resolver.ErrNotFound) {
			return nil, ErrNoPolicy
		}
		return nil, err
	}
	return ParseRecord(txt)
}

// ParseRecord picks and parses the TLSRPT record among TXT records (see
// Rua).
func ParseRecord(txt []string) ([]string, error) {
	var recs []string
	for _, t := range txt {
		if rest, ok := strings.CutPrefix(t, "v=TLSRPTv1"); ok && (rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t') {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return nil, fmt.Errorf("%w (%d records start with v=TLSRPTv1)", ErrNoPolicy, len(recs))
	}
	fields := strings.Split(recs[0], ";")
	if n := len(fields); n > 1 && strings.Trim(fields[n-1], " \t") == "" {
		fields = fields[:n-1]
	}
	var out []string
	seenRua := false
	for _, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		k, v, ok := strings.Cut(f, "=")
		if !ok || !validName(k) {
			return nil, fmt.Errorf("%w: bad field %q", ErrNoPolicy, f)
		}
		if k != "rua" || seenRua {
			continue
		}
		seenRua = true
		for _, u := range strings.Split(v, ",") {
			u = strings.Trim(u, " \t")
			pu, err := url.Parse(u)
			if err != nil {
				continue
			}
			switch strings.ToLower(pu.Scheme) {
			case "mailto":
				if _, err := mailtoAddress(u); err == nil {
					out = append(out, u)
				}
			case "https":
				if pu.Host != "" {
					out = append(out, u)
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no usable rua URI", ErrNoPolicy)
	}
	return out, nil
}

// validName: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
func validName(k string) bool {
	if k == "" || len(k) > 32 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '-' && c != '.') {
			return false
		}
	}
	return true
}

// mailtoAddress returns the address of a mailto: URI (query ignored).
func mailtoAddress(u string) (string, error) {
	rest := u[len("mailto:"):]
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest = rest[:i]
	}
	a, err := url.PathUnescape(rest)
	if err != nil {
		return "", err
	}
	addr, err := mail.ParseAddress(a)
	if err != nil {
		return "", err
	}
	if addr.Name != "" || !strings.Contains(addr.Address, "@") {
		return "", fmt.Errorf("bad mailto address %q", a)
	}
	return addr.Address, nil
}

// FileName is the report's file name (RFC 8460 section 5.1):
// "submitter!policy-domain!begin!end.json.gz", times as Unix seconds.
func (r *Report) FileName() string {
	return r.Submitter + "!" + r.Domain + "!" + strconv.FormatInt(r.DateRange.Start.Unix(), 10) + "!" +
		strconv.FormatInt(r.DateRange.End.Unix(), 10) + ".json.gz"
}

// Message builds the mail that carries report to the address to (RFC
// 8460 section 5.3): a multipart/report; report-type="tlsrpt" with a
// short text part and the gzip JSON as an application/tlsrpt+gzip
// attachment, the Subject "Report Domain: D Submitter: S Report-ID: <ID>"
// and the TLS-Report-Domain and TLS-Report-Submitter headers. Lines end
// in CRLF. (The RFC wants it DKIM-signed: our outbound path signs.)
func Message(report *Report, to string, now time.Time) ([]byte, error) {
	gz, err := report.Gzip()
	if err != nil {
		return nil, err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	th := textproto.MIMEHeader{}
	th.Set("Content-Type", `text/plain; charset="us-ascii"`)
	th.Set("Content-Transfer-Encoding", "7bit")
	pw, err := mw.CreatePart(th)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(pw, "This is an aggregate TLS report (RFC 8460) from %s\r\nfor %s, %s to %s.\r\n",
		report.Submitter, report.Domain, report.DateRange.Start.Format(time.RFC3339), report.DateRange.End.Format(time.RFC3339))
	ah := textproto.MIMEHeader{}
	ah.Set("Content-Type", "application/tlsrpt+gzip")
	ah.Set("Content-Transfer-Encoding", "base64")
	ah.Set("Content-Disposition", `attachment; filename="`+report.FileName()+`"`)
	aw, err := mw.CreatePart(ah)
	if err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > 76 {
		io.WriteString(aw, enc[:76]+"\r\n")
		enc = enc[76:]
	}
	io.WriteString(aw, enc+"\r\n")
	if err := mw.Close(); err != nil {
		return nil, err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	var m bytes.Buffer
	hdr := func(k, v string) { m.WriteString(k + ": " + v + "\r\n") }
	hdr("From", report.From)
	hdr("To", to)
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Subject", "Report Domain: "+report.Domain+" Submitter: "+report.Submitter+" Report-ID: <"+report.ReportID+">")
	hdr("Message-ID", "<tlsrpt."+hex.EncodeToString(rnd[:])+"."+report.ReportID+">")
	hdr("TLS-Report-Domain", report.Domain)
	hdr("TLS-Report-Submitter", report.Submitter)
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", `multipart/report; report-type="tlsrpt"; boundary="`+mw.Boundary()+`"`)
	m.WriteString("\r\n")
	m.Write(body.Bytes())
	return m.Bytes(), nil
}

// Send delivers report to each rua URI (RFC 8460 section 5): mailto: as
// the message of Message, handed to submit; https: as a POST of the gzip
// JSON with Content-Type application/tlsrpt+gzip through httpClient (nil:
// a client with a one-minute timeout), where any 2xx answer is success
// and redirects are not followed. Every URI is tried; the errors are
// joined.
func Send(ctx context.Context, report *Report, rua []string, submit func(to string, msg []byte) error, httpClient *http.Client) error {
	var errs []error
	var gz []byte
	for _, u := range rua {
		switch {
		case strings.HasPrefix(strings.ToLower(u), "mailto:"):
			to, err := mailtoAddress(u)
			if err != nil {
				errs = append(errs, fmt.Errorf("tlsrpt: %s: %w", u, err))
				continue
			}
			if submit == nil {
				errs = append(errs, fmt.Errorf("tlsrpt: %s: no way to submit mail", u))
				continue
			}
			msg, err := Message(report, to, time.Now())
			if err == nil {
				err = submit(to, msg)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("tlsrpt: %s: %w", u, err))
			}
		case strings.HasPrefix(strings.ToLower(u), "https:"):
			if gz == nil {
				var err error
				if gz, err = report.Gzip(); err != nil {
					return err
				}
			}
			if err := post(ctx, httpClient, u, gz); err != nil {
				errs = append(errs, fmt.Errorf("tlsrpt: %s: %w", u, err))
			}
		default:
			errs = append(errs, fmt.Errorf("tlsrpt: %s: unsupported URI scheme", u))
		}
	}
	return errors.Join(errs...)
}

func post(ctx context.Context, c *http.Client, u string, gz []byte) error {
	if c == nil {
		c = &http.Client{Timeout: time.Minute}
	}
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(gz))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/tlsrpt+gzip")
	resp, err := cc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP status %s", resp.Status)
	}
	return nil
}

// SendDay sends the reports for day (UTC) to every domain with attempts
// that publishes a TLSRPT record, once: domains done are remembered in
// the state directory (sent-DAY). A domain without a record is done; one
// whose lookup or sending failed is tried again on the next call.
func (r *Recorder) SendDay(ctx context.Context, day time.Time) error {
	_, err := r.sendDay(ctx, day, false)
	return err
}

// SendDayNow sends the reports for day at once, on an operator's demand
// (`posthorn tls report`): also to domains that were sent one already,
// and for a day that is not over. It returns the domains sent to.
func (r *Recorder) SendDayNow(ctx context.Context, day time.Time) ([]string, error) {
	return r.sendDay(ctx, day, true)
}

func (r *Recorder) sendDay(ctx context.Context, day time.Time, force bool) ([]string, error) {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	if r.o.DB == nil {
		return r.sendDayLocked(ctx, day, force)
	}
	// Shared: one node sends at a time; the others find the lock taken
	// and the next of them finds the reports marked sent.
	var sent []string
	err := sqldb.Locked(ctx, r.o.DB, sqldb.Postgres, "posthorn tlsrpt send", func(ctx context.Context) error {
		var err error
		sent, err = r.sendDayLocked(ctx, day, force)
		return err
	})
	if errors.Is(err, sqldb.ErrBusy) {
		return nil, nil
	}
	return sent, err
}

func (r *Recorder) sendDayLocked(ctx context.Context, day time.Time, force bool) ([]string, error) {
	ds := dayString(day)
	done, err := r.sentDomains(ctx, ds)
	if err != nil {
		return nil, err
	}
	domains, err := r.Domains(day)
	if err != nil {
		return nil, err
	}
	var errs []error
	var sent []string
	for _, d := range domains {
		if done[d] && !force || ctx.Err() != nil {
			continue
		}
		rua, err := Rua(ctx, r.o.Resolver, d)
		if err == nil {
			var rep *Report
			rep, err = r.Report(day, d)
			if err == nil {
				err = Send(ctx, rep, rua, r.o.Submit, r.o.HTTPClient)
			}
			if err == nil {
				r.log.Info("TLS report sent", "domain", d, "day", ds, "rua", strings.Join(rua, ","))
				sent = append(sent, d)
			}
		} else if errors.Is(err, ErrNoPolicy) {
			err = nil
		}
		if err != nil {
			errs = append(errs, err)
			r.log.Warn("TLS report not sent; will retry", "domain", d, "day", ds, "err", err)
			continue
		}
		if ferr := r.markSent(ctx, ds, d); ferr != nil {
			errs = append(errs, ferr)
		}
	}
	return sent, errors.Join(errs...)
}

// prune removes attempt and sent files older than KeepDays.
func (r *Recorder) prune() {
	cut := dayString(r.o.Now().AddDate(0, 0, -r.o.KeepDays))
	if r.o.DB != nil {
		r.pruneDB(cut)
		return
	}
	ents, err := os.ReadDir(r.o.Dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		day := strings.TrimSuffix(strings.TrimPrefix(n, "sent-"), ".jsonl")
		if _, err := time.Parse("2006-01-02", day); err != nil {
			continue
		}
		if day < cut {
			os.Remove(filepath.Join(r.o.Dir, n))
		}
	}
}

// DailyLoop sends yesterday's reports (UTC) until ctx is done: at start
// and then every hour, so that the reports leave within the first hour
// of a day and failed ones are retried; each domain's report is sent
// once. Old files are pruned.
func (r *Recorder) DailyLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		yesterday := r.o.Now().UTC().AddDate(0, 0, -1)
		r.SendDay(ctx, yesterday)
		r.prune()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
