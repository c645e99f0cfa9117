package notify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"slices"
	"strings"

	"github.com/posthorn/posthorn/sdk"
)

// langNames head the further languages of a notification in several.
var langNames = map[string]string{"de": "Deutsch", "en": "English"}

// footerLabels name the lines of the operator's footer.
var footerLabels = map[string][3]string{"de": {"Hilfe", "Impressum", "Datenschutz"}, "en": {"Help", "Imprint", "Privacy"}}

// footer is the operator's name, support contact and links, from the
// event's attributes org_name, org_support, org_imprint and org_privacy
// (the web mailbox's theming), below the mail in its first language.
func footer(attr map[string]string, lang string) string {
	l, ok := footerLabels[lang]
	if !ok {
		l = footerLabels["en"]
	}
	var lines []string
	if v := attr["org_name"]; v != "" {
		lines = append(lines, v)
	}
	for i, k := range []string{"org_support", "org_imprint", "org_privacy"} {
		if v := attr[k]; v != "" {
			lines = append(lines, l[i]+": "+v)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return "\n" + strings.Join(lines, "\n") + "\n"
}

// toSender lists the event types whose notification goes to the event's
// Sender; all others go to its Recipient. The attribute "notify_to"
// overrides both.
var toSender = map[string]bool{
	"webmailbox.reminder_sender": true,
	"webmailbox.pin":             true,
}

// target returns who gets the notification for ev.
func target(ev sdk.Event) string {
	if a := ev.Attributes["notify_to"]; a != "" {
		return a
	}
	if toSender[ev.Type] {
		return ev.Sender
	}
	return ev.Recipient
}

// TemplateData is what templates see.
type TemplateData struct {
	Event        sdk.Event
	Attr         map[string]string // Event.Attributes, never nil
	To           string            // the notified address
	From         string
	Organization string
	Lang         string // the template's language
}

// mail renders and submits the notification for ev.
func (p *Plugin) mail(ctx context.Context, st *state, host sdk.Host, ev sdk.Event) error {
	to := target(ev)
	if to == "" {
		sdk.Logger().Warn("event without an address to notify; no mail", "event_id", ev.ID, "event_type", ev.Type)
		return nil
	}
	if a, err := mail.ParseAddress(to); err != nil || a.Address != to {
		sdk.Logger().Warn("invalid address to notify; no mail", "event_id", ev.ID, "event_type", ev.Type, "to", to)
		return nil
	}
	msg, lang, err := p.compose(st, ev, to)
	if err != nil {
		return fmt.Errorf("notify: %s: %w", ev.Type, err)
	}
	if host == nil {
		return sdk.ErrNoHost
	}
	key := "mail:" + ev.ID + ":" + to
	id, err := host.Submit(ctx, key, &sdk.Envelope{
		MailFrom:   st.cfg.From,
		Recipients: []sdk.Recipient{{Address: to}},
		Size:       int64(len(msg)),
	}, bytes.NewReader(msg))
	if err != nil {
		sdk.Logger().Error("notification not submitted", "event_id", ev.ID, "event_type", ev.Type, "to", to, "error", err)
		return fmt.Errorf("notify: submitting the %s notification: %w", ev.Type, err)
	}
	sdk.Logger().Info("notification submitted", "event_id", ev.ID, "event_type", ev.Type, "to", to, "lang", lang, "queue_id", id)
	return nil
}

// compose renders the notification mail for ev, CRLF line endings. The
// attribute "languages" ("de,en") asks for the text in each language in
// turn, the first one's subject on top: for a recipient whose language is
// not known yet.
func (p *Plugin) compose(st *state, ev sdk.Event, to string) ([]byte, string, error) {
	attr := ev.Attributes
	if attr == nil {
		attr = map[string]string{}
	}
	want := []string{ev.Language}
	if l := attr["languages"]; l != "" {
		want = strings.Split(l, ",")
	}
	var subject, body string
	var langs []string
	for _, hint := range want {
		tm, lang := st.templates.pick(ev.Type, strings.TrimSpace(hint), st.cfg.DefaultLanguage)
		if tm == nil {
			return nil, "", fmt.Errorf("no template")
		}
		if slices.Contains(langs, lang) {
			continue
		}
		s, b, err := render(inZone(tm, lang, attr["time_zone"]), TemplateData{
			Event: ev, Attr: attr, To: to, From: st.cfg.From, Organization: st.cfg.Organization, Lang: lang,
		})
		if err != nil {
			return nil, "", err
		}
		if len(langs) == 0 {
			subject, body = s, b
		} else {
			body += "\n" + strings.Repeat("=", 60) + "\n" + langNames[lang] + "\n\n" + s + "\n\n" + b
		}
		langs = append(langs, lang)
	}
	lang := strings.Join(langs, ", ")
	body += footer(attr, langs[0])
	domain := st.cfg.From[strings.LastIndexByte(st.cfg.From, '@')+1:]
	sum := sha256.Sum256([]byte(ev.ID + "\x00" + to))

	var b bytes.Buffer
	hdr := func(name, value string) { fmt.Fprintf(&b, "%s: %s\r\n", name, value) }
	hdr("From", (&mail.Address{Name: st.cfg.FromName, Address: st.cfg.From}).String())
	hdr("To", "<"+to+">")
	// Long subjects become several encoded words: one per line.
	hdr("Subject", strings.ReplaceAll(mime.QEncoding.Encode("utf-8", subject), "?= =?", "?=\r\n =?"))
	hdr("Date", p.clock().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	hdr("Message-ID", "<notify."+hex.EncodeToString(sum[:16])+"@"+domain+">")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	hdr("Content-Language", lang)
	hdr("Auto-Submitted", "auto-generated") // RFC 3834: no auto-replies
	hdr("X-Posthorn-Event", ev.Type)
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(strings.ReplaceAll(body, "\n", "\r\n")))
	qp.Close()
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	return b.Bytes(), lang, nil
}
