package webmailbox

import (
	"fmt"
	"strings"
	"time"
)

// texts holds every user-visible text: key → {German, English}.
var texts = map[string][2]string{
	"title":                 {"Sicheres Postfach", "Secure mailbox"},
	"skip":                  {"Zum Inhalt springen", "Skip to content"},
	"login":                 {"Anmelden", "Log in"},
	"address":               {"E-Mail-Adresse", "Email address"},
	"password":              {"Passwort", "Password"},
	"password2":             {"Passwort wiederholen", "Repeat password"},
	"login_failed":          {"Anmeldung fehlgeschlagen. Bitte prüfen Sie Adresse und Passwort oder versuchen Sie es später erneut.", "Login failed. Please check address and password or try again later."},
	"forgot":                {"Passwort vergessen?", "Forgot your password?"},
	"activate":              {"Postfach einrichten", "Set up your mailbox"},
	"activate_intro":        {"Für Sie liegt eine vertrauliche Nachricht bereit. Legen Sie Sprache und Passwort fest, um sie zu lesen.", "A confidential message is waiting for you. Choose a language and a password to read it."},
	"language":              {"Sprache", "Language"},
	"pw_hint":               {"Mindestens 8 Zeichen.", "At least 8 characters."},
	"question":              {"Sicherheitsfrage (selbst gewählt)", "Security question (your own)"},
	"answer":                {"Antwort", "Answer"},
	"question_hint":         {"Mit Frage und Antwort können Sie später ein neues Passwort setzen.", "With question and answer you can set a new password later."},
	"noreset_warning":       {"Achtung: Dieses Passwort kann weder geändert noch zurückgesetzt werden. Wenn Sie es vergessen, sind alle Nachrichten in diesem Postfach verloren.", "Warning: this password can never be changed or reset. If you forget it, every message in this mailbox is lost."},
	"noreset_ack":           {"Ich habe verstanden, dass ein vergessenes Passwort nicht ersetzt werden kann.", "I understand that a forgotten password cannot be replaced."},
	"pin":                   {"PIN vom Absender", "PIN from the sender"},
	"pin_hint":              {"Der Absender hat Ihnen die PIN auf anderem Weg mitgeteilt.", "The sender gave you the PIN by another way."},
	"tan":                   {"Code aus dem Brief", "Code from the letter"},
	"tan_hint":              {"Steht im Brief unter „Ihr Code“; Groß- und Kleinschreibung egal, Bindestriche nicht nötig.", "Printed in the letter under “Your code”; upper or lower case, dashes not needed."},
	"intro_pin":             {"Sie brauchen außerdem die PIN, die Ihnen der Absender auf anderem Weg mitgeteilt hat.", "You also need the PIN the sender gave you by another way."},
	"intro_tan":             {"Sie brauchen außerdem den Code aus dem Brief, den Sie per Post erhalten haben.", "You also need the code from the letter you received by post."},
	"activate_button":       {"Postfach aktivieren", "Activate mailbox"},
	"activated":             {"Ihr Postfach ist eingerichtet. Bitte melden Sie sich an.", "Your mailbox is ready. Please log in."},
	"link_invalid":          {"Dieser Link ist ungültig, abgelaufen oder wurde bereits benutzt.", "This link is invalid, expired or already used."},
	"err_language":          {"Bitte wählen Sie eine Sprache.", "Please choose a language."},
	"err_pw_short":          {"Das Passwort muss mindestens 8 Zeichen lang sein.", "The password must be at least 8 characters long."},
	"err_pw_mismatch":       {"Die Passwörter stimmen nicht überein.", "The passwords do not match."},
	"err_question":          {"Bitte geben Sie eine Sicherheitsfrage und eine Antwort (mindestens 3 Zeichen) an.", "Please enter a security question and an answer (at least 3 characters)."},
	"err_pin":               {"Die PIN ist falsch.", "The PIN is wrong."},
	"err_tan":               {"Die TAN ist falsch.", "The TAN is wrong."},
	"err_pin_tan":           {"PIN oder TAN ist falsch.", "The PIN or the TAN is wrong."},
	"err_wait":              {"Zu viele Fehlversuche von Ihrem Anschluss. Sie können es wieder versuchen in", "Too many failed attempts from your connection. You can try again in"},
	"err_ack":               {"Bitte bestätigen Sie den Hinweis zum Passwort.", "Please confirm the note about the password."},
	"err_csrf":              {"Das Formular ist abgelaufen. Bitte laden Sie die Seite neu.", "The form has expired. Please reload the page."},
	"err_internal":          {"Ein interner Fehler ist aufgetreten. Bitte versuchen Sie es später erneut.", "An internal error occurred. Please try again later."},
	"err_not_found":         {"Nicht gefunden.", "Not found."},
	"err_recipient":         {"Nachrichten können nur an diese Adressen gesendet werden:", "Messages can only be sent to these addresses:"},
	"err_no_recipient":      {"Bitte geben Sie einen Empfänger an.", "Please enter a recipient."},
	"err_unknown_recipient": {"Nicht gesendet: Diese Adresse gibt es nicht. Bitte prüfen Sie die Schreibweise – Ihr Text ist erhalten:", "Not sent: this address does not exist. Please check the spelling – your text has been kept:"},
	"err_send":              {"Die Nachricht konnte gerade nicht gesendet werden. Ihr Text ist erhalten; bitte versuchen Sie es in einigen Minuten erneut.", "The message could not be sent just now. Your text has been kept; please try again in a few minutes."},
	"reset":                 {"Neues Passwort setzen", "Set a new password"},
	"reset_intro":           {"Geben Sie die Adresse Ihres Postfachs ein. Wir senden Ihnen einen Link, mit dem Sie nach Beantwortung Ihrer Sicherheitsfrage ein neues Passwort setzen können.", "Enter the address of your mailbox. We will send you a link with which you can set a new password after answering your security question."},
	"send_link":             {"Link senden", "Send me a link"},
	"reset_link_sent":       {"Wenn zu dieser Adresse ein Postfach gehört, haben wir soeben einen Link dorthin gesendet. Er ist eine Stunde gültig. Prüfen Sie auch den Spam-Ordner.", "If this address has a mailbox, we have just sent a link to it. It is valid for one hour. Please check your spam folder too."},
	"reset_step2":           {"Beantworten Sie Ihre Sicherheitsfrage und wählen Sie ein neues Passwort. Alle anderen Anmeldungen dieses Postfachs werden danach beendet.", "Answer your security question and choose a new password. Every other login to this mailbox ends then."},
	"reset_failed":          {"Das hat nicht geklappt. Bitte prüfen Sie Ihre Angaben oder versuchen Sie es später erneut.", "That did not work. Please check your entries or try again later."},
	"reset_done":            {"Ihr Passwort wurde geändert. Bitte melden Sie sich an.", "Your password has been changed. Please log in."},
	"reset_none":            {"Für dieses Postfach kann das Passwort nicht zurückgesetzt werden.", "The password of this mailbox cannot be reset."},
	"next":                  {"Weiter", "Next"},
	"new_password":          {"Neues Passwort", "New password"},
	"inbox":                 {"Posteingang", "Inbox"},
	"sent":                  {"Gesendet", "Sent"},
	"unread":                {"ungelesen", "unread"},
	"from":                  {"Von", "From"},
	"to":                    {"An", "To"},
	"subject":               {"Betreff", "Subject"},
	"date":                  {"Datum", "Date"},
	"size":                  {"Größe", "Size"},
	"empty":                 {"Keine Nachrichten.", "No messages."},
	"logout":                {"Abmelden", "Log out"},
	"reply":                 {"Antworten", "Reply"},
	"forward":               {"Weiterleiten", "Forward"},
	"delete":                {"Löschen", "Delete"},
	"deleted":               {"Die Nachricht wurde gelöscht.", "The message has been deleted."},
	"delete_title":          {"Nachricht löschen?", "Delete this message?"},
	"delete_confirm":        {"Die Nachricht wird endgültig gelöscht und kann nicht wiederhergestellt werden.", "The message will be deleted for good and cannot be restored."},
	"delete_yes":            {"Endgültig löschen", "Delete for good"},
	"cancel":                {"Abbrechen", "Cancel"},
	"print":                 {"Drucken", "Print"},
	"print_hint":            {"Drucken Sie diese Seite mit der Druckfunktion Ihres Browsers.", "Print this page with your browser's print function."},
	"export":                {"Exportieren", "Export"},
	"attachments":           {"Anhänge", "Attachments"},
	"html_version":          {"HTML-Fassung (eingeschränkt dargestellt)", "HTML version (shown restricted)"},
	"back":                  {"Zurück", "Back"},
	"compose":               {"Nachricht schreiben", "Write a message"},
	"body":                  {"Text", "Text"},
	"send":                  {"Senden", "Send"},
	"sent_ok":               {"Die Nachricht wurde gesendet.", "The message has been sent."},
	"allowed":               {"Erlaubte Empfänger:", "Allowed recipients:"},
	"quota":                 {"Belegt", "Used"},
	"of":                    {"von", "of"},
	"switch_lang":           {"English", "Deutsch"},
	"keys":                  {"Schlüssel und Zertifikate", "Keys and certificates"},
	"keys_intro":            {"Laden Sie Ihr S/MIME-Zertifikat oder Ihren öffentlichen PGP-Schlüssel hoch. Künftige Nachrichten können Ihnen dann verschlüsselt direkt zugestellt werden.", "Upload your S/MIME certificate or public PGP key. Future messages can then be sent to you directly, encrypted."},
	"upload":                {"Hochladen", "Upload"},
	"key_file":              {"Datei (PEM, DER oder ASCII-armored)", "File (PEM, DER or ASCII armored)"},
	"key_ok":                {"Der Schlüssel wurde übernommen.", "The key has been accepted."},
	"key_bad":               {"Die Datei ist weder ein gültiges Zertifikat noch ein öffentlicher PGP-Schlüssel für diese Adresse.", "The file is neither a valid certificate nor a public PGP key for this address."},
	"key_private":           {"Das ist ein privater Schlüssel. Laden Sie nur das Zertifikat bzw. den öffentlichen Schlüssel hoch – und geben Sie Ihren privaten Schlüssel niemandem.", "This is a private key. Upload only the certificate or public key – and never give anyone your private key."},
	"key_other_addr":        {"Zertifikat bzw. Schlüssel gehören nicht zur Adresse dieses Postfachs.", "The certificate or key does not belong to this mailbox's address."},
	"session_expired":       {"Ihre Sitzung ist abgelaufen. Bitte melden Sie sich erneut an.", "Your session has expired. Please log in again."},
	"logged_out":            {"Sie wurden abgemeldet.", "You have been logged out."},
	"message":               {"Nachricht", "Message"},
	"bad_message":           {"Die Nachricht ist fehlerhaft aufgebaut; angezeigt wird, was lesbar ist.", "The message is malformed; what is readable is shown."},
	"actions":               {"Aktionen", "Actions"},
	"no_subject":            {"(kein Betreff)", "(no subject)"},
	"folders":               {"Ordner", "Folders"},
	"main_nav":              {"Hauptnavigation", "Main navigation"},
	"forwarded_message":     {"Weitergeleitete Nachricht", "Forwarded message"},
	"wrote":                 {"schrieb", "wrote"},
	"settings":              {"Einstellungen", "Settings"},
	"pw_section":            {"Passwort", "Password"},
	"tz":                    {"Zeitzone", "Time zone"},
	"tz_hint":               {"Für alle Zeitangaben in Ihrem Postfach, in Exporten und in den Benachrichtigungen an Sie.", "For every date and time in your mailbox, in exports and in the notifications to you."},
	"tz_now":                {"Jetzt in dieser Zeitzone:", "Now in this time zone:"},
	"tz_saved":              {"Die Zeitzone wurde gespeichert.", "The time zone has been saved."},
	"err_zone":              {"Bitte wählen Sie eine Zeitzone aus der Liste.", "Please choose a time zone from the list."},
	"save":                  {"Speichern", "Save"},
	"old_password":          {"Bisheriges Passwort", "Current password"},
	"pw_changed":            {"Ihr Passwort wurde geändert. Alle anderen Anmeldungen dieses Postfachs wurden beendet.", "Your password has been changed. Every other login to this mailbox has been ended."},
	"pw_fixed":              {"Das Passwort dieses Postfachs kann nicht geändert werden.", "The password of this mailbox cannot be changed."},
	"old_pw_wrong":          {"Das bisherige Passwort ist falsch.", "The current password is wrong."},
	"new_question":          {"Neue Sicherheitsfrage (optional)", "New security question (optional)"},
	"support":               {"Hilfe", "Help"},
	"imprint":               {"Impressum", "Imprint"},
	"privacy":               {"Datenschutz", "Privacy"},
	"problem":               {"Das hat nicht geklappt", "Something went wrong"},
	"change":                {"Ändern", "Change"},
}

// waitText says how long to wait, rounded up to seconds or minutes.
func waitText(lang string, d time.Duration) string {
	if d <= time.Minute {
		n := int((d + time.Second - 1) / time.Second)
		if lang == "en" {
			return fmt.Sprintf("%d seconds.", n)
		}
		return fmt.Sprintf("%d Sekunden.", n)
	}
	n := int((d + time.Minute - 1) / time.Minute)
	if lang == "en" {
		return fmt.Sprintf("%d minutes.", n)
	}
	return fmt.Sprintf("%d Minuten.", n)
}

// T returns the text for key in lang ("de" or "en").
func T(lang, key string) string {
	t, ok := texts[key]
	if !ok {
		return key
	}
	if lang == "en" {
		return t[1]
	}
	return t[0]
}

// pickLang chooses "de" or "en" from an Accept-Language header.
func pickLang(accept, def string) string {
	for _, part := range strings.Split(accept, ",") {
		tag := strings.ToLower(strings.TrimSpace(strings.SplitN(part, ";", 2)[0]))
		switch {
		case tag == "de" || strings.HasPrefix(tag, "de-"):
			return "de"
		case tag == "en" || strings.HasPrefix(tag, "en-"):
			return "en"
		}
	}
	return def
}
