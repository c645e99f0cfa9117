// Package dsn builds delivery status notifications: bounces, delay warnings
// and delivery confirmations.
//
// The notifications follow RFC 3464 (the message/delivery-status format)
// with the semantics of the SMTP DSN extension of RFC 3461 (NOTIFY, RET,
// ENVID, ORCPT), packed as an RFC 6522 multipart/report. They are marked
// "Auto-Submitted: auto-replied" (RFC 3834) and always go out with the null
// reverse-path, so that a notification never causes another one. For
// SMTPUTF8 envelopes, the RFC 6533 types message/global-delivery-status,
// message/global and message/global-headers are used.
//
// The human-readable part is written in English and German.
package dsn

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"os"
	"strings"
	"time"

	"github.com/posthorn/posthorn/queue"
)

// Action is the RFC 3464 action of a per-recipient block.
type Action string

// The actions of RFC 3464 section 2.3.3.
const (
	Failed    Action = "failed"
	Delayed   Action = "delayed"
	Delivered Action = "delivered"
	Relayed   Action = "relayed"
	Expanded  Action = "expanded"
)

// DefaultMaxReturn is the largest original returned in full when
// Report.MaxReturn is zero.
const DefaultMaxReturn = 10 << 20

// maxHeader caps the header block that is buffered from the original.
const maxHeader = 1 << 20

// RecipientReport is what the notification says about one recipient.
type RecipientReport struct {
	// Addr is the final recipient.
	Addr string
	// ORcpt is the RFC 3461 original recipient, "rfc822;addr", if given.
	ORcpt  string
	Action Action
	// Status is the RFC 3463 status ("5.1.1"); derived from Action when
	// empty.
	Status string
	// Diagnostic is the reply or reason, "smtp; 550 5.1.1 no such user";
	// without a "type;" prefix, "x-posthorn; " is added.
	Diagnostic string
	// RemoteMTA is the host that gave the reply, if any.
	RemoteMTA      string
	LastAttempt    time.Time
	WillRetryUntil time.Time
}

// Report is the notification about one message.
type Report struct {
	// ReportingMTA is the host name of this MTA.
	ReportingMTA string
	// Envelope is the envelope of the original message.
	Envelope   *queue.Envelope
	Recipients []RecipientReport
	// Arrival is when the original arrived; Envelope.Received when zero.
	Arrival time.Time
	// Postmaster receives notifications about messages with the null
	// sender (double bounces).
	Postmaster string
	// MaxReturn is the largest original returned in full (RET=FULL);
	// larger ones are returned as headers only. 0 means DefaultMaxReturn.
	MaxReturn int64
}

// Recipient returns where the notification about env goes: its sender.
// ok is false for the null sender, since a notification about a
// notification must not be sent to its (empty) sender.
func Recipient(env *queue.Envelope) (to string, ok bool) {
	if env == nil {
		return "", false
	}
	from := strings.TrimSpace(env.From)
	from = strings.TrimSuffix(strings.TrimPrefix(from, "<"), ">")
	if from == "" {
		return "", false
	}
	return from, true
}

// Wants reports whether a recipient with the RFC 3461 NOTIFY list notify
// asked for a notification with action a. An empty list means the default,
// FAILURE and DELAY; NEVER means none; SUCCESS covers delivered, relayed
// and expanded. Keywords are case-insensitive.
func Wants(notify []string, a Action) bool {
	if len(notify) == 0 {
		notify = []string{"FAILURE", "DELAY"}
	}
	for _, n := range notify {
		if strings.EqualFold(strings.TrimSpace(n), "NEVER") {
			return false
		}
	}
	for _, n := range notify {
		n = strings.ToUpper(strings.TrimSpace(n))
		switch a {
		case Failed:
			if n == "FAILURE" {
				return true
			}
		case Delayed:
			if n == "DELAY" {
				return true
			}
		case Delivered, Relayed, Expanded:
			if n == "SUCCESS" {
				return true
			}
		}
	}
	return false
}

// Build writes the notification described by r as a complete RFC 5322
// message with CRLF line endings to w. original is the original message;
// it is read once, as a stream: its header block is buffered, the rest is
// copied only when the full message is returned (RET=FULL, a failed
// recipient, and no larger than MaxReturn; an original of unknown size,
// Envelope.Size 0, is cut at MaxReturn). original may be nil: then the
// third part is left out.
func Build(r Report, original io.Reader, w io.Writer) error {
	env := r.Envelope
	if env == nil {
		return errors.New("dsn: no envelope")
	}
	if len(r.Recipients) == 0 {
		return errors.New("dsn: no recipients to report on")
	}
	for _, rr := range r.Recipients {
		switch rr.Action {
		case Failed, Delayed, Delivered, Relayed, Expanded:
		default:
			return fmt.Errorf("dsn: invalid action %q for %s", rr.Action, rr.Addr)
		}
	}
	mta := r.ReportingMTA
	if mta == "" {
		mta, _ = os.Hostname()
		if mta == "" {
			mta = "localhost"
		}
	}
	to, ok := Recipient(env)
	if !ok {
		to = r.Postmaster
		if to == "" {
			to = "postmaster@" + mta
		}
	}
	maxReturn := r.MaxReturn
	if maxReturn <= 0 {
		maxReturn = DefaultMaxReturn
	}
	arrival := r.Arrival
	if arrival.IsZero() {
		arrival = env.Received
	}
	global := env.SMTPUTF8 || !isASCII(env.From)
	for _, rr := range r.Recipients {
		if !isASCII(rr.Addr) || !isASCII(rr.ORcpt) {
			global = true
		}
	}

	// The header of the original comes first: it names the message in
	// the text, and decides what is returned.
	var (
		br     *bufio.Reader
		header []byte
		eoh    bool // the header block ended with a blank line
	)
	if original != nil {
		br = bufio.NewReaderSize(original, 64<<10)
		var err error
		header, eoh, err = readHeader(br)
		if err != nil {
			return fmt.Errorf("dsn: read original: %w", err)
		}
	}
	anyFailed := false
	for _, rr := range r.Recipients {
		if rr.Action == Failed {
			anyFailed = true
		}
	}
	full := original != nil && anyFailed && strings.EqualFold(env.Ret, "FULL") &&
		env.Size <= maxReturn && int64(len(header)) <= maxReturn

	boundary := randHex(16) + "/" + sanitizeToken(mta)
	var out bytes.Buffer // the message up to the original
	hw := &out

	kind := overall(r.Recipients)
	subjEN, subjDE := subjects(kind)
	fmt.Fprintf(hw, "From: \"Mail Delivery System\" <MAILER-DAEMON@%s>\r\n", mta)
	fmt.Fprintf(hw, "To: <%s>\r\n", clean(to, true))
	fmt.Fprintf(hw, "Subject: %s / %s\r\n", subjEN, mime.QEncoding.Encode("utf-8", subjDE))
	fmt.Fprintf(hw, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(hw, "Message-ID: <%d.%s@%s>\r\n", time.Now().UnixNano(), randHex(8), mta)
	if id := headerValue(header, "Message-Id"); id != "" && strings.HasPrefix(id, "<") && strings.HasSuffix(id, ">") && isASCII(id) {
		fmt.Fprintf(hw, "In-Reply-To: %s\r\n", id)
		fmt.Fprintf(hw, "References: %s\r\n", id)
	}
	hw.WriteString("Auto-Submitted: auto-replied\r\n")
	hw.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(hw, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary)
	hw.WriteString("\r\nThis is a MIME-encapsulated delivery status notification (RFC 3464).\r\n")

	// Part 1: for people.
	fmt.Fprintf(hw, "\r\n--%s\r\n", boundary)
	hw.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	hw.WriteString("Content-Transfer-Encoding: quoted-printable\r\n")
	hw.WriteString("Content-Language: en, de\r\n")
	hw.WriteString("Content-Description: Notification\r\n\r\n")
	qp := quotedprintable.NewWriter(hw)
	qp.Write([]byte(humanText(r, mta, header, original != nil, full)))
	if err := qp.Close(); err != nil {
		return err
	}

	// Part 2: for programs.
	fmt.Fprintf(hw, "\r\n--%s\r\n", boundary)
	if global {
		hw.WriteString("Content-Type: message/global-delivery-status\r\n")
		hw.WriteString("Content-Transfer-Encoding: 8bit\r\n")
	} else {
		hw.WriteString("Content-Type: message/delivery-status\r\n")
	}
	hw.WriteString("Content-Description: Delivery report\r\n\r\n")
	writeStatus(hw, r, mta, arrival, global)

	if _, err := w.Write(out.Bytes()); err != nil {
		return err
	}
	if original == nil {
		_, err := fmt.Fprintf(w, "\r\n--%s--\r\n", boundary)
		return err
	}

	// Part 3: the original, or its header.
	bw := bufio.NewWriterSize(w, 64<<10)
	fmt.Fprintf(bw, "\r\n--%s\r\n", boundary)
	eight := global || strings.EqualFold(env.BodyType, "8BITMIME") || strings.EqualFold(env.BodyType, "BINARYMIME") || !isASCII(string(header))
	switch {
	case full && global:
		bw.WriteString("Content-Type: message/global\r\n")
	case full:
		bw.WriteString("Content-Type: message/rfc822\r\n")
	case global:
		bw.WriteString("Content-Type: message/global-headers\r\n")
	default:
		bw.WriteString("Content-Type: text/rfc822-headers\r\n")
	}
	if eight {
		bw.WriteString("Content-Transfer-Encoding: 8bit\r\n")
	}
	if full {
		bw.WriteString("Content-Description: Undelivered message\r\n\r\n")
	} else {
		bw.WriteString("Content-Description: Message headers\r\n\r\n")
	}
	cw := &crlfWriter{w: bw}
	if full {
		cw.Write(header)
		if eoh {
			limit := maxReturn - int64(len(header))
			if _, err := io.Copy(cw, io.LimitReader(br, limit)); err != nil {
				return fmt.Errorf("dsn: read original: %w", err)
			}
		}
	} else {
		cw.Write(trimBlank(header))
	}
	fmt.Fprintf(bw, "\r\n--%s--\r\n", boundary)
	return bw.Flush()
}

// readHeader reads the header block, including the blank line that ends
// it, up to maxHeader bytes (cut at a line boundary).
func readHeader(br *bufio.Reader) (header []byte, eoh bool, err error) {
	var buf bytes.Buffer
	partial := false // the previous piece did not end a line
	for {
		line, err := br.ReadSlice('\n')
		if buf.Len()+len(line) > maxHeader {
			return buf.Bytes(), false, nil
		}
		buf.Write(line)
		if err == bufio.ErrBufferFull {
			// A very long line: take it in pieces.
			partial = true
			continue
		}
		if !partial && (string(line) == "\n" || string(line) == "\r\n") {
			return buf.Bytes(), true, nil
		}
		partial = false
		if err == io.EOF {
			return buf.Bytes(), false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// trimBlank removes the blank line that ends a header block.
func trimBlank(h []byte) []byte {
	switch {
	case bytes.HasSuffix(h, []byte("\r\n\r\n")):
		return h[:len(h)-2]
	case bytes.HasSuffix(h, []byte("\n\n")):
		return h[:len(h)-1]
	case string(h) == "\r\n" || string(h) == "\n":
		return nil
	}
	return h
}

// headerValue returns the unfolded value of the first field name in h.
func headerValue(h []byte, name string) string {
	lines := strings.Split(strings.ReplaceAll(string(h), "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		k, v, ok := strings.Cut(lines[i], ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), name) {
			continue
		}
		for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], " ") || strings.HasPrefix(lines[i+1], "\t")) {
			i++
			v += " " + strings.TrimSpace(lines[i])
		}
		return strings.TrimSpace(v)
	}
	return ""
}

// overall is the action that gives the notification its subject: a
// failure outweighs a delay, which outweighs success.
func overall(rs []RecipientReport) Action {
	a := Delivered
	for _, r := range rs {
		switch r.Action {
		case Failed:
			return Failed
		case Delayed:
			a = Delayed
		}
	}
	return a
}

// writeStatus writes the message/delivery-status body.
func writeStatus(w *bytes.Buffer, r Report, mta string, arrival time.Time, global bool) {
	env := r.Envelope
	field := func(name, value string) {
		writeField(w, name, clean(value, global))
	}
	field("Reporting-MTA", "dns; "+mta)
	if env.ID != "" {
		field("X-Posthorn-Queue-ID", env.ID)
	}
	if env.EnvID != "" {
		field("Original-Envelope-Id", env.EnvID)
	}
	if env.ClientHelo != "" {
		field("Received-From-MTA", "dns; "+env.ClientHelo)
	}
	if !arrival.IsZero() {
		field("Arrival-Date", arrival.Format(time.RFC1123Z))
	}
	for _, rr := range r.Recipients {
		w.WriteString("\r\n")
		if rr.ORcpt != "" {
			field("Original-Recipient", addrType(rr.ORcpt))
		}
		typ := "rfc822"
		if !isASCII(rr.Addr) {
			typ = "utf-8"
		}
		field("Final-Recipient", typ+"; "+rr.Addr)
		field("Action", string(rr.Action))
		field("Status", status(rr))
		if rr.RemoteMTA != "" {
			field("Remote-MTA", "dns; "+rr.RemoteMTA)
		}
		if rr.Diagnostic != "" {
			field("Diagnostic-Code", diagnostic(rr.Diagnostic))
		}
		if !rr.LastAttempt.IsZero() {
			field("Last-Attempt-Date", rr.LastAttempt.Format(time.RFC1123Z))
		}
		if rr.Action == Delayed && !rr.WillRetryUntil.IsZero() {
			field("Will-Retry-Until", rr.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
}

// writeField writes "Name: value" folded at spaces to keep lines short.
func writeField(w *bytes.Buffer, name, value string) {
	line := name + ": "
	n := len(line)
	w.WriteString(line)
	for i, word := range strings.Split(value, " ") {
		if i > 0 {
			if n+1+len(word) > 76 && n > len(name)+2 {
				w.WriteString("\r\n ")
				n = 1
			} else {
				w.WriteString(" ")
				n++
			}
		}
		w.WriteString(word)
		n += len(word)
	}
	w.WriteString("\r\n")
}

// status returns the RFC 3463 status of rr, derived from the action when
// missing or malformed.
func status(rr RecipientReport) string {
	if validStatus(rr.Status) {
		return rr.Status
	}
	switch rr.Action {
	case Failed:
		return "5.0.0"
	case Delayed:
		return "4.0.0"
	}
	return "2.0.0"
}

func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || !strings.Contains("245", parts[0]) {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 {
			return false
		}
		for _, c := range p {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

// diagnostic makes sure d has a "type;" prefix.
func diagnostic(d string) string {
	d = strings.TrimSpace(d)
	if t, rest, ok := strings.Cut(d, ";"); ok && isToken(t) {
		return strings.ToLower(t) + "; " + strings.TrimSpace(rest)
	}
	return "x-posthorn; " + d
}

// addrType makes sure an ORCPT value has an address type.
func addrType(a string) string {
	if t, rest, ok := strings.Cut(a, ";"); ok && isToken(t) {
		return t + ";" + strings.TrimSpace(rest)
	}
	return "rfc822;" + a
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// clean makes s safe for one header line: no control characters, and
// only ASCII unless utf8 is allowed.
func clean(s string, utf8 bool) string {
	var b strings.Builder
	space := false
	for _, c := range s {
		switch {
		case c == '\r' || c == '\n' || c == '\t' || c == ' ':
			space = true
			continue
		case c < 0x20 || c == 0x7f:
			continue
		case c >= 0x80 && !utf8:
			c = '?'
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(c)
	}
	return b.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func sanitizeToken(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' {
			b.WriteRune(c)
		}
	}
	return b.String()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// crlfWriter turns bare LF line endings into CRLF.
type crlfWriter struct {
	w      io.Writer
	lastCR bool
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := c.w.Write(p); err != nil {
				return 0, err
			}
			c.lastCR = p[len(p)-1] == '\r'
			break
		}
		prevCR := c.lastCR
		if i > 0 {
			prevCR = p[i-1] == '\r'
		}
		if _, err := c.w.Write(p[:i]); err != nil {
			return 0, err
		}
		if prevCR {
			_, err := c.w.Write([]byte{'\n'})
			if err != nil {
				return 0, err
			}
		} else if _, err := c.w.Write([]byte{'\r', '\n'}); err != nil {
			return 0, err
		}
		c.lastCR = false
		p = p[i+1:]
	}
	return n, nil
}
