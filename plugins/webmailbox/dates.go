package webmailbox

import (
	"net/mail"
	"strings"
	"time"
)

var (
	weekdaysDE = [...]string{"So.", "Mo.", "Di.", "Mi.", "Do.", "Fr.", "Sa."}
	monthsDE   = [...]string{"Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober", "November", "Dezember"}
)

// formatDate writes t in loc the way a reader of lang expects:
// "Di., 24.11.2026, 10:00" or "Tue, 24 Nov 2026, 10:00"; with zone the
// zone's abbreviation follows ("MEZ" is not what Go knows: "CET").
func formatDate(t time.Time, lang string, loc *time.Location, zone bool) string {
	if loc == nil {
		loc = time.UTC
	}
	t = t.In(loc)
	var s string
	if lang == "de" {
		s = weekdaysDE[t.Weekday()] + " " + t.Format("02.01.2006, 15:04")
	} else {
		s = t.Format("Mon, 2 Jan 2006, 15:04")
	}
	if zone {
		s += " " + t.Format("MST")
	}
	return s
}

// formatLongDate is a letter's date line: "24. November 2026" or
// "24 November 2026".
func formatLongDate(t time.Time, lang string, loc *time.Location) string {
	if loc == nil {
		loc = time.UTC
	}
	t = t.In(loc)
	if lang == "de" {
		return t.Format("2. ") + monthsDE[t.Month()-1] + t.Format(" 2006")
	}
	return t.Format("2 January 2006")
}

// headerDate formats a Date header for people; a header that does not
// parse is shown as it is, and an empty one as fallback.
func headerDate(h string, fallback time.Time, lang string, loc *time.Location) string {
	h = strings.TrimSpace(h)
	if h == "" {
		if fallback.IsZero() {
			return ""
		}
		return formatDate(fallback, lang, loc, true)
	}
	t, err := mail.ParseDate(h)
	if err != nil {
		return h
	}
	return formatDate(t, lang, loc, true)
}
