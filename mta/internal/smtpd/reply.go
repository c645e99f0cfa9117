package smtpd

import (
	"errors"
	"log/slog"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/milter"
)

// Replies used in more than one place. Texts are generic on purpose: the
// client learns what to do, not how we are built.
var (
	errAuthRequired  = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errAuthFailed    = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errRelayDenied   = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relay access denied"}
	errNoSuchUser    = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
	errSenderNotOwn  = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address not owned by the authenticated user"}
	errTooBig        = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message size exceeds the limit"}
	errTooManyRcpts  = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}
	errTempFail      = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem, try again later"}
	errTimeout       = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Timeout while receiving the message"}
	errNeedTLS       = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}
	errBadAddress    = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad address syntax"}
	errRequireTLS    = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 10}, Message: "REQUIRETLS needs a TLS session"}
	errAuthTemp      = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	errAuthThrottled = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentications, try again later"}
	errLowSpace      = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage, try again later"}
	errNoUTF8        = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "Non-ASCII address requires SMTPUTF8"}
)

// reply is the one place where an error becomes an SMTP reply. go-smtp
// sends any plain error from Data as a permanent 554 with the error's text,
// so everything leaves here as an unwrapped *smtp.SMTPError: an SMTPError
// found in the chain is passed on as it is, so is a milter's reply
// (milter.Reply), a timeout becomes 451 4.4.2,
// and everything else is a temporary 451 with a generic text, logged with
// its detail.
func reply(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		out := *se
		return &out
	}
	// A milter's refusal is passed on with its code and text.
	var mr *milter.Reply
	if errors.As(err, &mr) {
		ec := smtp.EnhancedCode(mr.Enhanced)
		if ec[0] == 0 {
			ec = smtp.EnhancedCode{mr.Code / 100, 0, 0}
		}
		return &smtp.SMTPError{Code: mr.Code, EnhancedCode: ec, Message: mr.Text}
	}
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		log.Warn("timeout", "err", err)
		return errTimeout
	}
	log.Error("temporary failure", "err", err)
	return errTempFail
}
