package dsn

import (
	"fmt"
	"mime"
	"strings"
	"time"
)

// reason says in plain words what an RFC 3463 status means.
func reason(st string) (en, de string) {
	parts := strings.SplitN(st, ".", 3)
	if len(parts) != 3 {
		return "", ""
	}
	sub := parts[1] + "." + parts[2]
	switch sub {
	case "1.1":
		return "The mailbox does not exist.", "Das Postfach existiert nicht."
	case "1.2":
		return "The recipient's domain does not exist or does not accept mail.", "Die Domain des Empfängers existiert nicht oder nimmt keine E-Mail an."
	case "1.3":
		return "The recipient address is not valid.", "Die Empfängeradresse ist ungültig."
	case "1.6":
		return "The recipient has moved and left no forwarding address.", "Der Empfänger ist umgezogen und hat keine Weiterleitung hinterlassen."
	case "2.1":
		return "The mailbox is disabled and does not accept messages.", "Das Postfach ist gesperrt und nimmt keine Nachrichten an."
	case "2.2":
		return "The recipient's mailbox is full.", "Das Postfach des Empfängers ist voll."
	case "2.3", "3.4":
		return "The message is too large for the recipient's mail system.", "Die Nachricht ist für das Mailsystem des Empfängers zu groß."
	case "4.1":
		return "The recipient's mail server did not answer.", "Der Mailserver des Empfängers hat nicht geantwortet."
	case "4.2":
		return "The connection to the recipient's mail server was lost.", "Die Verbindung zum Mailserver des Empfängers ist abgebrochen."
	case "4.3", "4.4":
		return "The recipient's mail server could not be found.", "Der Mailserver des Empfängers wurde nicht gefunden."
	case "4.6":
		return "The message was caught in a mail loop.", "Die Nachricht kreiste zwischen Mailservern (Mail-Schleife)."
	case "4.7":
		return "The message could not be delivered in time and has expired.", "Die Nachricht konnte nicht rechtzeitig zugestellt werden und ist abgelaufen."
	case "7.1":
		return "The recipient's mail system refused the message.", "Das Mailsystem des Empfängers hat die Nachricht abgelehnt."
	case "7.10", "7.11":
		return "The message needs an encrypted (TLS) connection, and none was possible.", "Die Nachricht erfordert eine verschlüsselte (TLS-)Verbindung, die nicht möglich war."
	}
	switch parts[1] {
	case "1":
		return "There is a problem with the recipient address.", "Es gibt ein Problem mit der Empfängeradresse."
	case "2":
		return "There is a problem with the recipient's mailbox.", "Es gibt ein Problem mit dem Postfach des Empfängers."
	case "3":
		return "The recipient's mail system has a problem.", "Das Mailsystem des Empfängers hat ein Problem."
	case "4":
		return "There was a network or routing problem.", "Es gab ein Netzwerk- oder Weiterleitungsproblem."
	case "5":
		return "The mail servers could not understand each other.", "Die Mailserver konnten sich nicht verständigen."
	case "6":
		return "The message content could not be handled.", "Der Inhalt der Nachricht konnte nicht verarbeitet werden."
	case "7":
		return "The message was refused for security or policy reasons.", "Die Nachricht wurde aus Sicherheits- oder Richtliniengründen abgelehnt."
	}
	return "", ""
}

func fmtTime(t time.Time) string {
	return t.Format("2006-01-02 15:04 MST")
}

// humanText is the text/plain part, English first, then German.
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
	order := []Action{Failed, Delayed, Delivered, Relayed, Expanded}

	// English.
	fmt.Fprintf(&b, "This is the mail system at %s.\n\n", mta)
	fmt.Fprint(&b, "This is a report about your message")
	if subject != "" {
		fmt.Fprintf(&b, " \"%s\"", subject)
	}
	if !arrival.IsZero() {
		fmt.Fprintf(&b, ", received %s", fmtTime(arrival))
	}
	b.WriteString(".\n")
	for _, a := range order {
		rs := groups[a]
		if len(rs) == 0 {
			continue
		}
		b.WriteString("\n")
		switch a {
		case Failed:
			b.WriteString("Your message could NOT be delivered to the following recipients. The problem is permanent; the mail system has given up:\n")
		case Delayed:
			b.WriteString("Your message has not yet been delivered to the following recipients. The mail system is still trying:\n")
		case Delivered:
			b.WriteString("Your message was delivered successfully to the following recipients:\n")
		case Relayed:
			b.WriteString("Your message was passed on to the following recipients' mail systems, which do not send delivery confirmations:\n")
		case Expanded:
			b.WriteString("Your message was delivered to the following addresses, which pass it on to further recipients (a list or forwarding):\n")
		}
		for _, rr := range rs {
			fmt.Fprintf(&b, "\n  <%s>\n", clean(rr.Addr, true))
			if en, _ := reason(status(rr)); en != "" && (a == Failed || a == Delayed) {
				fmt.Fprintf(&b, "    Reason: %s\n", en)
			}
			if rr.Diagnostic != "" {
				fmt.Fprintf(&b, "    Details: %s\n", clean(rr.Diagnostic, true))
			}
			if rr.RemoteMTA != "" {
				fmt.Fprintf(&b, "    Reported by: %s\n", clean(rr.RemoteMTA, true))
			}
			if a == Delayed && !rr.WillRetryUntil.IsZero() {
				fmt.Fprintf(&b, "    Will keep trying until: %s\n", fmtTime(rr.WillRetryUntil))
			}
		}
		b.WriteString("\n")
		switch a {
		case Failed:
			b.WriteString("What happens next: nothing more will happen with this message for these recipients. Please check the address for typing mistakes, or reach the recipient in another way. If the problem persists, forward this report to your postmaster.\n")
		case Delayed:
			b.WriteString("What happens next: you do not need to do anything, and you should not send the message again. If it still cannot be delivered when the mail system gives up, you will receive another report.\n")
		default:
			b.WriteString("What happens next: nothing; this is only a confirmation.\n")
		}
	}
	if haveOriginal {
		if full {
			b.WriteString("\nThe original message is attached.\n")
		} else {
			b.WriteString("\nThe header of the original message is attached.\n")
		}
	}

	// German.
	b.WriteString("\n-------- Deutsch --------\n\n")
	fmt.Fprintf(&b, "Dies ist das Mailsystem von %s.\n\n", mta)
	fmt.Fprint(&b, "Dies ist ein Bericht über Ihre Nachricht")
	if subject != "" {
		fmt.Fprintf(&b, " „%s“", subject)
	}
	if !arrival.IsZero() {
		fmt.Fprintf(&b, ", eingegangen am %s", fmtTime(arrival))
	}
	b.WriteString(".\n")
	for _, a := range order {
		rs := groups[a]
		if len(rs) == 0 {
			continue
		}
		b.WriteString("\n")
		switch a {
		case Failed:
			b.WriteString("Ihre Nachricht konnte an die folgenden Empfänger NICHT zugestellt werden. Das Problem ist dauerhaft; das Mailsystem hat aufgegeben:\n")
		case Delayed:
			b.WriteString("Ihre Nachricht wurde an die folgenden Empfänger noch nicht zugestellt. Das Mailsystem versucht es weiter:\n")
		case Delivered:
			b.WriteString("Ihre Nachricht wurde an die folgenden Empfänger erfolgreich zugestellt:\n")
		case Relayed:
			b.WriteString("Ihre Nachricht wurde an die Mailsysteme der folgenden Empfänger weitergegeben, die keine Zustellbestätigungen senden:\n")
		case Expanded:
			b.WriteString("Ihre Nachricht wurde an die folgenden Adressen zugestellt, die sie an weitere Empfänger weitergeben (Verteiler oder Weiterleitung):\n")
		}
		for _, rr := range rs {
			fmt.Fprintf(&b, "\n  <%s>\n", clean(rr.Addr, true))
			if _, de := reason(status(rr)); de != "" && (a == Failed || a == Delayed) {
				fmt.Fprintf(&b, "    Grund: %s\n", de)
			}
			if rr.Diagnostic != "" {
				fmt.Fprintf(&b, "    Einzelheiten: %s\n", clean(rr.Diagnostic, true))
			}
			if rr.RemoteMTA != "" {
				fmt.Fprintf(&b, "    Gemeldet von: %s\n", clean(rr.RemoteMTA, true))
			}
			if a == Delayed && !rr.WillRetryUntil.IsZero() {
				fmt.Fprintf(&b, "    Weitere Versuche bis: %s\n", fmtTime(rr.WillRetryUntil))
			}
		}
		b.WriteString("\n")
		switch a {
		case Failed:
			b.WriteString("Wie es weitergeht: Für diese Empfänger geschieht mit der Nachricht nichts weiter. Bitte prüfen Sie die Adresse auf Tippfehler oder erreichen Sie den Empfänger auf anderem Weg. Besteht das Problem weiter, leiten Sie diesen Bericht an Ihren Postmaster weiter.\n")
		case Delayed:
			b.WriteString("Wie es weitergeht: Sie müssen nichts tun und sollten die Nachricht nicht erneut senden. Kann sie auch bis zum Ende der Zustellversuche nicht zugestellt werden, erhalten Sie einen weiteren Bericht.\n")
		default:
			b.WriteString("Wie es weitergeht: Nichts; dies ist nur eine Bestätigung.\n")
		}
	}
	if haveOriginal {
		if full {
			b.WriteString("\nDie ursprüngliche Nachricht ist angehängt.\n")
		} else {
			b.WriteString("\nDie Kopfzeilen der ursprünglichen Nachricht sind angehängt.\n")
		}
	}
	return b.String()
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
