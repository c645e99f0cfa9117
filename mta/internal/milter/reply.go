package milter

import (
	"fmt"
	"strconv"
	"strings"
)

// Reply is a milter's refusal (or the default action's tempfail) as the
// SMTP reply the client is to get; smtpd/reply.go turns it into one.
type Reply struct {
	Code     int
	Enhanced [3]int // zero: none given
	Text     string // may hold several lines, separated by "\n"
	Milter   string // who said it; "" for the default action
}

func (r *Reply) Error() string {
	s := strconv.Itoa(r.Code)
	if r.Enhanced[0] != 0 {
		s += fmt.Sprintf(" %d.%d.%d", r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
	}
	return s + " " + strings.ReplaceAll(r.Text, "\n", " ")
}

// Temporary reports whether the reply is a 4xx.
func (r *Reply) Temporary() bool { return r.Code/100 == 4 }

// The replies Postfix gives for SMFIR_REJECT, SMFIR_TEMPFAIL and a failed
// milter whose default action is tempfail.
func rejectReply(name string) *Reply {
	return &Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Command rejected", Milter: name}
}

func tempfailReply(name string) *Reply {
	return &Reply{Code: 451, Enhanced: [3]int{4, 7, 1}, Text: "Service unavailable - try again later", Milter: name}
}

// splitReplyCode splits the text of SMFIR_REPLYCODE ("554 5.7.1 Gtube
// pattern", possibly several lines "550-5.7.1 a\r\n550 5.7.1 b") into the
// code and the rest; only 4xx and 5xx are allowed (milter protocol).
func splitReplyCode(s string) (int, string, bool) {
	if len(s) < 3 {
		return 0, "", false
	}
	code, err := strconv.Atoi(s[:3])
	if err != nil || code < 400 || code > 599 {
		return 0, "", false
	}
	return code, s[3:], true
}

// parseReply makes a Reply from SMFIR_REPLYCODE's code and text.
func parseReply(name string, code int, rest string) *Reply {
	r := &Reply{Code: code, Milter: name}
	var lines []string
	for i, line := range strings.Split(strings.ReplaceAll(rest, "\r\n", "\n"), "\n") {
		if i > 0 {
			// Later lines repeat the code: "550-..." or "550 ...".
			if len(line) >= 3 && line[:3] == strconv.Itoa(code) {
				line = line[3:]
			}
		}
		line = strings.TrimLeft(line, "- ")
		if ec, text, ok := cutEnhanced(line, code); ok {
			if r.Enhanced[0] == 0 {
				r.Enhanced = ec
			}
			line = text
		}
		line = strings.Map(func(c rune) rune {
			if c < ' ' || c == 0x7f {
				return -1
			}
			return c
		}, line)
		if line != "" || len(lines) == 0 {
			lines = append(lines, line)
		}
	}
	r.Text = strings.Join(lines, "\n")
	if r.Text == "" {
		r.Text = "Command rejected"
		if code/100 == 4 {
			r.Text = "Service unavailable - try again later"
		}
	}
	return r
}

// cutEnhanced takes an RFC 3463 code "x.y.z " off the front of s if its
// class matches the reply code.
func cutEnhanced(s string, code int) ([3]int, string, bool) {
	word, rest, _ := strings.Cut(s, " ")
	parts := strings.Split(word, ".")
	if len(parts) != 3 {
		return [3]int{}, s, false
	}
	var ec [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return [3]int{}, s, false
		}
		ec[i] = n
	}
	if ec[0] != code/100 {
		return [3]int{}, s, false
	}
	return ec, rest, true
}
