package dsn

import (
	"fmt"
	"mime"
	"strings"
	"time"
)

// wording is the text of a notification in one language: the Subject and
// the people's part. Fields ending in "f" are fmt formats. Adding a
// language is adding a value to languages (and to Content-Language).
type wording struct {
	name string // in the divider before the language; unused for the first

	subjects map[Action]string // the Subject, by the overall action; Delivered for the rest

	introf    string // the MTA's name
	about     string
	subjectf  string // the original's Subject, quoted
	receivedf string // the arrival time

	headings map[Action]string // leads in to each group of recipients

	reasonf, detailsf, reportedByf, retryUntilf string // lines under a recipient

	next map[Action]string // what happens next, by group; Delivered for the rest
	// nextTLS replaces next[Failed] when every failure of the group is
	// a missing secure connection (5.7.10, 5.7.11, 5.7.30, 5.7.4, 5.7.5):
	// the address is not at fault, so no advice to check it for typos.
	nextTLS string

	attachedFull, attachedHeader string // the original, or its header, is attached

	// reasons says in plain words what an RFC 3463 status means, by
	// "subject.detail" ("1.1") and, as a fallback, by subject ("1").
	reasons map[string]string
}

// languages are the languages of a notification, in the order they appear.
var languages = []*wording{english, german}

var english = &wording{
	subjects: map[Action]string{
		Failed:    "Undelivered Mail Returned to Sender",
		Delayed:   "Delayed Mail (still being retried)",
		Delivered: "Successful Mail Delivery Report",
	},
	introf:    "This is the mail system at %s.\n\n",
	about:     "This is a report about your message",
	subjectf:  " \"%s\"",
	receivedf: ", received %s",
	headings: map[Action]string{
		Failed:    "Your message could NOT be delivered to the following recipients. The problem is permanent; the mail system has given up:\n",
		Delayed:   "Your message has not yet been delivered to the following recipients. The mail system is still trying:\n",
		Delivered: "Your message was delivered successfully to the following recipients:\n",
		Relayed:   "Your message was passed on to the following recipients' mail systems, which do not send delivery confirmations:\n",
		Expanded:  "Your message was delivered to the following addresses, which pass it on to further recipients (a list or forwarding):\n",
	},
	reasonf:     "    Reason: %s\n",
	detailsf:    "    Details: %s\n",
	reportedByf: "    Reported by: %s\n",
	retryUntilf: "    Will keep trying until: %s\n",
	next: map[Action]string{
		Failed:    "What happens next: nothing more will happen with this message for these recipients. Please check the address for typing mistakes, or reach the recipient in another way. If the problem persists, forward this report to your postmaster.\n",
		Delayed:   "What happens next: you do not need to do anything, and you should not send the message again. If it still cannot be delivered when the mail system gives up, you will receive another report.\n",
		Delivered: "What happens next: nothing; this is only a confirmation.\n",
	},
	nextTLS:        "What happens next: nothing more will happen with this message for these recipients. It was not sent because no secure (encrypted, and where required authenticated) connection to the recipient's mail server could be had; the address itself is not at fault. Send the information another way, or ask the recipient to have their provider support secure connections. If the problem persists, forward this report to your postmaster.\n",
	attachedFull:   "\nThe original message is attached.\n",
	attachedHeader: "\nThe header of the original message is attached.\n",
	reasons: map[string]string{
		"1.1":  "The mailbox does not exist.",
		"1.2":  "The recipient's domain does not exist or does not accept mail.",
		"1.3":  "The recipient address is not valid.",
		"1.6":  "The recipient has moved and left no forwarding address.",
		"2.1":  "The mailbox is disabled and does not accept messages.",
		"2.2":  "The recipient's mailbox is full.",
		"2.3":  "The message is too large for the recipient's mail system.",
		"3.4":  "The message is too large for the recipient's mail system.",
		"4.1":  "The recipient's mail server did not answer.",
		"4.2":  "The connection to the recipient's mail server was lost.",
		"4.3":  "The recipient's mail server could not be found.",
		"4.4":  "The recipient's mail server could not be found.",
		"4.6":  "The message was caught in a mail loop.",
		"4.7":  "The message could not be delivered in time and has expired.",
		"7.1":  "The recipient's mail system refused the message.",
		"7.10": "The message needs an encrypted (TLS) connection, and none was possible.",
		"7.11": "The message needs an encrypted (TLS) connection, and none was possible.",
		"7.30": "The message asks for REQUIRETLS, and the recipient's server could not be authenticated or does not support it.",
		"1":    "There is a problem with the recipient address.",
		"2":    "There is a problem with the recipient's mailbox.",
		"3":    "The recipient's mail system has a problem.",
		"4":    "There was a network or routing problem.",
		"5":    "The mail servers could not understand each other.",
		"6":    "The message content could not be handled.",
		"7":    "The message was refused for security or policy reasons.",
	},
}

var german = &wording{
	name: "Deutsch",
	subjects: map[Action]string{
		Failed:    "Unzustellbare Nachricht",
		Delayed:   "Verzögerte Zustellung",
		Delivered: "Zustellbestätigung",
	},
	introf:    "Dies ist das Mailsystem von %s.\n\n",
	about:     "Dies ist ein Bericht über Ihre Nachricht",
	subjectf:  " „%s“",
	receivedf: ", eingegangen am %s",
	headings: map[Action]string{
		Failed:    "Ihre Nachricht konnte an die folgenden Empfänger NICHT zugestellt werden. Das Problem ist dauerhaft; das Mailsystem hat aufgegeben:\n",
		Delayed:   "Ihre Nachricht wurde an die folgenden Empfänger noch nicht zugestellt. Das Mailsystem versucht es weiter:\n",
		Delivered: "Ihre Nachricht wurde an die folgenden Empfänger erfolgreich zugestellt:\n",
		Relayed:   "Ihre Nachricht wurde an die Mailsysteme der folgenden Empfänger weitergegeben, die keine Zustellbestätigungen senden:\n",
		Expanded:  "Ihre Nachricht wurde an die folgenden Adressen zugestellt, die sie an weitere Empfänger weitergeben (Verteiler oder Weiterleitung):\n",
	},
	reasonf:     "    Grund: %s\n",
	detailsf:    "    Einzelheiten: %s\n",
	reportedByf: "    Gemeldet von: %s\n",
	retryUntilf: "    Weitere Versuche bis: %s\n",
	next: map[Action]string{
		Failed:    "Wie es weitergeht: Für diese Empfänger geschieht mit der Nachricht nichts weiter. Bitte prüfen Sie die Adresse auf Tippfehler oder erreichen Sie den Empfänger auf anderem Weg. Besteht das Problem weiter, leiten Sie diesen Bericht an Ihren Postmaster weiter.\n",
		Delayed:   "Wie es weitergeht: Sie müssen nichts tun und sollten die Nachricht nicht erneut senden. Kann sie auch bis zum Ende der Zustellversuche nicht zugestellt werden, erhalten Sie einen weiteren Bericht.\n",
		Delivered: "Wie es weitergeht: Nichts; dies ist nur eine Bestätigung.\n",
	},
	nextTLS:        "Wie es weitergeht: Für diese Empfänger geschieht mit der Nachricht nichts weiter. Sie wurde nicht gesendet, weil keine sichere (verschlüsselte und, wo verlangt, authentifizierte) Verbindung zum Mailserver des Empfängers möglich war; an der Adresse selbst liegt es nicht. Übermitteln Sie die Information auf anderem Weg, oder bitten Sie den Empfänger, dass sein Anbieter sichere Verbindungen unterstützt. Besteht das Problem weiter, leiten Sie diesen Bericht an Ihren Postmaster weiter.\n",
	attachedFull:   "\nDie ursprüngliche Nachricht ist angehängt.\n",
	attachedHeader: "\nDie Kopfzeilen der ursprünglichen Nachricht sind angehängt.\n",
	reasons: map[string]string{
		"1.1":  "Das Postfach existiert nicht.",
		"1.2":  "Die Domain des Empfängers existiert nicht oder nimmt keine E-Mail an.",
		"1.3":  "Die Empfängeradresse ist ungültig.",
		"1.6":  "Der Empfänger ist umgezogen und hat keine Weiterleitung hinterlassen.",
		"2.1":  "Das Postfach ist gesperrt und nimmt keine Nachrichten an.",
		"2.2":  "Das Postfach des Empfängers ist voll.",
		"2.3":  "Die Nachricht ist für das Mailsystem des Empfängers zu groß.",
		"3.4":  "Die Nachricht ist für das Mailsystem des Empfängers zu groß.",
		"4.1":  "Der Mailserver des Empfängers hat nicht geantwortet.",
		"4.2":  "Die Verbindung zum Mailserver des Empfängers ist abgebrochen.",
		"4.3":  "Der Mailserver des Empfängers wurde nicht gefunden.",
		"4.4":  "Der Mailserver des Empfängers wurde nicht gefunden.",
		"4.6":  "Die Nachricht kreiste zwischen Mailservern (Mail-Schleife).",
		"4.7":  "Die Nachricht konnte nicht rechtzeitig zugestellt werden und ist abgelaufen.",
		"7.1":  "Das Mailsystem des Empfängers hat die Nachricht abgelehnt.",
		"7.10": "Die Nachricht erfordert eine verschlüsselte (TLS-)Verbindung, die nicht möglich war.",
		"7.30": "Die Nachricht verlangt REQUIRETLS, und der Mailserver des Empfängers ließ sich nicht authentifizieren oder unterstützt es nicht.",
		"7.11": "Die Nachricht erfordert eine verschlüsselte (TLS-)Verbindung, die nicht möglich war.",
		"1":    "Es gibt ein Problem mit der Empfängeradresse.",
		"2":    "Es gibt ein Problem mit dem Postfach des Empfängers.",
		"3":    "Das Mailsystem des Empfängers hat ein Problem.",
		"4":    "Es gab ein Netzwerk- oder Weiterleitungsproblem.",
		"5":    "Die Mailserver konnten sich nicht verständigen.",
		"6":    "Der Inhalt der Nachricht konnte nicht verarbeitet werden.",
		"7":    "Die Nachricht wurde aus Sicherheits- oder Richtliniengründen abgelehnt.",
	},
}

// reason says in plain words what an RFC 3463 status means, or "".
func (w *wording) reason(st string) string {
	parts := strings.SplitN(st, ".", 3)
	if len(parts) != 3 {
		return ""
	}
	if r, ok := w.reasons[parts[1]+"."+parts[2]]; ok {
		return r
	}
	return w.reasons[parts[1]]
}

// subject is the Subject for a notification whose overall action is a.
func (w *wording) subject(a Action) string {
	if s, ok := w.subjects[a]; ok {
		return s
	}
	return w.subjects[Delivered]
}

// subjects is the Subject in English and in German.
func subjects(a Action) (en, de string) {
	return english.subject(a), german.subject(a)
}

func fmtTime(t time.Time) string {
	return t.Format("2006-01-02 15:04 MST")
}

// groupOrder is the order of the groups of recipients in the text.
var groupOrder = []Action{Failed, Delayed, Delivered, Relayed, Expanded}

// humanText is the text/plain part: every language of languages in turn,
// English first, then German.
func humanText(r Report, mta string, header []byte, haveOriginal, full bool) string {
	var b strings.Builder
	subject := clean(decodeHeader(headerValue(header, "Subject")), true)
	arrival := r.Arrival
	if arrival.IsZero() {
		arrival = r.Envelope.Received
	}
	groups := map[Action][]RecipientReport{}
	for _, rr := range r.Recipients {
		groups[rr.Action] = append(groups[rr.Action], rr)
	}
	for i, w := range languages {
		if i > 0 {
			fmt.Fprintf(&b, "\n-------- %s --------\n\n", w.name)
		}
		fmt.Fprintf(&b, w.introf, mta)
		b.WriteString(w.about)
		if subject != "" {
			fmt.Fprintf(&b, w.subjectf, subject)
		}
		if !arrival.IsZero() {
			fmt.Fprintf(&b, w.receivedf, fmtTime(arrival))
		}
		b.WriteString(".\n")
		for _, a := range groupOrder {
			if rs := groups[a]; len(rs) > 0 {
				w.writeGroup(&b, a, rs)
			}
		}
		if haveOriginal {
			if full {
				b.WriteString(w.attachedFull)
			} else {
				b.WriteString(w.attachedHeader)
			}
		}
	}
	return b.String()
}

// writeGroup writes the recipients with action a and what happens next.
func (w *wording) writeGroup(b *strings.Builder, a Action, rs []RecipientReport) {
	b.WriteString("\n")
	b.WriteString(w.headings[a])
	for _, rr := range rs {
		fmt.Fprintf(b, "\n  <%s>\n", clean(rr.Addr, true))
		if why := w.reason(status(rr)); why != "" && (a == Failed || a == Delayed) {
			fmt.Fprintf(b, w.reasonf, why)
		}
		if rr.Diagnostic != "" {
			fmt.Fprintf(b, w.detailsf, clean(rr.Diagnostic, true))
		}
		if rr.RemoteMTA != "" {
			fmt.Fprintf(b, w.reportedByf, clean(rr.RemoteMTA, true))
		}
		if a == Delayed && !rr.WillRetryUntil.IsZero() {
			fmt.Fprintf(b, w.retryUntilf, fmtTime(rr.WillRetryUntil))
		}
	}
	b.WriteString("\n")
	next, ok := w.next[a]
	if !ok {
		next = w.next[Delivered]
	}
	if a == Failed && allTLS(rs) {
		next = w.nextTLS
	}
	b.WriteString(next)
}

// allTLS reports whether every recipient failed for want of a secure
// connection.
func allTLS(rs []RecipientReport) bool {
	for _, rr := range rs {
		switch status(rr) {
		case "5.7.10", "5.7.11", "5.7.30", "5.7.4", "5.7.5":
		default:
			return false
		}
	}
	return len(rs) > 0
}

// decodeHeader decodes RFC 2047 encoded words, leaving s as it is when
// that fails.
func decodeHeader(s string) string {
	d, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

var wordDecoder = &mime.WordDecoder{}
