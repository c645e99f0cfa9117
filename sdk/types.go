package sdk

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Hook names a hook a plugin can implement.
type Hook string

const (
	HookInbound  Hook = "inbound"  // InboundHook
	HookOutbound Hook = "outbound" // OutboundHook
	HookEvents   Hook = "events"   // EventHook
)

// Envelope is the SMTP envelope of a message and what is known about how it
// arrived.
type Envelope struct {
	// ID is the queue id; empty on Inbound, where the message is not queued
	// yet.
	ID string
	// MailFrom is the reverse path; empty for the null sender <>.
	MailFrom   string
	Recipients []Recipient
	// ClientAddr is the SMTP client's "ip:port"; empty for local submission.
	ClientAddr string
	Helo       string
	// AuthUser is the SASL identity; empty when not authenticated.
	AuthUser string
	// TLS is nil when the message did not arrive over TLS.
	TLS *TLSInfo
	// Size is the message size in bytes when known, else 0.
	Size     int64
	SMTPUTF8 bool
}

// Recipient is one envelope recipient.
type Recipient struct {
	Address string
}

// Addresses returns the addresses of rcpts.
func Addresses(rcpts []Recipient) []string {
	out := make([]string, len(rcpts))
	for i, r := range rcpts {
		out[i] = r.Address
	}
	return out
}

// TLSInfo describes the TLS connection a message arrived on.
type TLSInfo struct {
	Version       string // "TLS1.3"
	CipherSuite   string // "TLS_AES_128_GCM_SHA256"
	ServerName    string // SNI sent by the client
	ClientSubject string // subject of a verified client certificate
}

// Header is one message header field. Value is unfolded and contains no CR
// or LF; the host folds long values.
type Header struct {
	Name  string
	Value string
}

// Validate reports whether h can be added to a message.
func (h Header) Validate() error {
	if h.Name == "" {
		return errors.New("header name is empty")
	}
	for i := 0; i < len(h.Name); i++ {
		c := h.Name[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("header name %q: invalid character %q", h.Name, c)
		}
	}
	for i := 0; i < len(h.Value); i++ {
		if c := h.Value[i]; c == '\r' || c == '\n' || c == 0 {
			return fmt.Errorf("header %s: value contains CR, LF or NUL", h.Name)
		}
	}
	return nil
}

// VerdictAction is what an InboundHook decided. The zero value is invalid,
// so a forgotten verdict is an error, never a silent accept.
type VerdictAction int

const (
	ActionAccept     VerdictAction = iota + 1 // accept unchanged
	ActionReject                              // refuse permanently (5xx)
	ActionTempfail                            // refuse temporarily (4xx)
	ActionAddHeaders                          // accept, prepend Headers
	ActionReplace                             // accept Replacement instead
)

func (a VerdictAction) String() string {
	switch a {
	case ActionAccept:
		return "accept"
	case ActionReject:
		return "reject"
	case ActionTempfail:
		return "tempfail"
	case ActionAddHeaders:
		return "add-headers"
	case ActionReplace:
		return "replace"
	}
	return fmt.Sprintf("VerdictAction(%d)", int(a))
}

// Verdict is an InboundHook's answer. Build it with Accept, Reject,
// Tempfail, AddHeaders or Replace.
type Verdict struct {
	Action VerdictAction
	// Code, EnhancedCode and Text are the SMTP reply for Reject (5xx) and
	// Tempfail (4xx).
	Code         int
	EnhancedCode string
	Text         string
	// Headers to prepend (ActionAddHeaders).
	Headers []Header
	// Replacement is the complete new message (ActionReplace), streamed to
	// the host after the verdict; closed afterwards if it is an io.Closer.
	// It may read from the body the hook was given. Always nil on the host
	// side (sdk/hostside returns the replacement separately).
	Replacement io.Reader
}

// Accept accepts the message unchanged.
func Accept() Verdict { return Verdict{Action: ActionAccept} }

// Reject refuses the message permanently with a 5xx reply, e.g.
// Reject(550, "5.7.1", "message refused by policy"). code 0 means 550;
// enhanced "" means "5.7.1".
func Reject(code int, enhanced, text string) Verdict {
	if code == 0 {
		code = 550
	}
	if enhanced == "" {
		enhanced = "5.7.1"
	}
	return Verdict{Action: ActionReject, Code: code, EnhancedCode: enhanced, Text: text}
}

// Tempfail refuses the message temporarily (451 4.3.0); the client retries.
func Tempfail(text string) Verdict {
	return Verdict{Action: ActionTempfail, Code: 451, EnhancedCode: "4.3.0", Text: text}
}

// AddHeaders accepts the message and prepends headers to it.
func AddHeaders(h ...Header) Verdict { return Verdict{Action: ActionAddHeaders, Headers: h} }

// Replace accepts the message r yields instead of the received one.
func Replace(r io.Reader) Verdict { return Verdict{Action: ActionReplace, Replacement: r} }

// Validate reports whether v is a complete, well-formed verdict.
func (v Verdict) Validate() error {
	switch v.Action {
	case ActionAccept:
	case ActionReject:
		return validateReply(v, 5)
	case ActionTempfail:
		return validateReply(v, 4)
	case ActionAddHeaders:
		if len(v.Headers) == 0 {
			return errors.New("add-headers verdict without headers")
		}
		for _, h := range v.Headers {
			if err := h.Validate(); err != nil {
				return err
			}
		}
	case ActionReplace:
		// The host side carries the replacement outside the Verdict.
	default:
		return fmt.Errorf("verdict has no valid action (%v); use sdk.Accept(), sdk.Reject(…) and the like", v.Action)
	}
	return nil
}

func validateReply(v Verdict, class int) error {
	if v.Code/100 != class || v.Code%100 > 59 {
		return fmt.Errorf("%s verdict: SMTP code %d is not %dxx", v.Action, v.Code, class)
	}
	if v.EnhancedCode != "" && !validEnhanced(v.EnhancedCode, class) {
		return fmt.Errorf("%s verdict: enhanced code %q is not %d.x.y", v.Action, v.EnhancedCode, class)
	}
	for i := 0; i < len(v.Text); i++ {
		if c := v.Text[i]; c == '\r' || c == '\n' || c == 0 {
			return fmt.Errorf("%s verdict: text contains CR, LF or NUL", v.Action)
		}
	}
	return nil
}

// validEnhanced checks RFC 3463 class.subject.detail with the given class.
func validEnhanced(s string, class int) bool {
	var c, sub, det int
	var rest string
	n, _ := fmt.Sscanf(s, "%d.%d.%d%s", &c, &sub, &det, &rest)
	return n == 3 && c == class && sub >= 0 && sub <= 999 && det >= 0 && det <= 999 &&
		s == fmt.Sprintf("%d.%d.%d", c, sub, det)
}

// Answer is an OutboundHook's answer for one recipient.
type Answer struct {
	Recipient string
	CanHandle bool
	Reason    string // why (not); logged by the host
}

// OutboundAction is what an OutboundHook did with a recipient group. The
// zero value is invalid.
type OutboundAction int

const (
	OutboundTransformed OutboundAction = iota + 1 // new message(s) follow
	OutboundDiverted                              // the plugin took the recipients
	OutboundDeclined                              // the plugin did not handle them
)

func (a OutboundAction) String() string {
	switch a {
	case OutboundTransformed:
		return "transformed"
	case OutboundDiverted:
		return "diverted"
	case OutboundDeclined:
		return "declined"
	}
	return fmt.Sprintf("OutboundAction(%d)", int(a))
}

// OutboundResult is an OutboundHook's Transform answer. Build it with
// Transformed, Diverted or Declined.
type OutboundResult struct {
	Action OutboundAction
	// Outputs (Transformed): the new messages. Together they cover every
	// recipient of the group exactly once.
	Outputs []Output
	// Pending (Diverted): the host keeps the recipients pending until the
	// plugin settles each with Host.Confirm.
	Pending bool
	Reason  string
}

// Output is one transformed message for a subset of the recipient group.
type Output struct {
	Recipients []string
	// Body is the complete new message; closed after sending if it is an
	// io.Closer.
	Body io.Reader
}

// Transformed returns the new messages for the recipient group.
func Transformed(outputs ...Output) OutboundResult {
	return OutboundResult{Action: OutboundTransformed, Outputs: outputs}
}

// Diverted tells the host the plugin took responsibility for every recipient
// of the group. With pending the host keeps them pending until Host.Confirm.
func Diverted(pending bool, reason string) OutboundResult {
	return OutboundResult{Action: OutboundDiverted, Pending: pending, Reason: reason}
}

// Declined tells the host the plugin did not handle the group.
func Declined(reason string) OutboundResult {
	return OutboundResult{Action: OutboundDeclined, Reason: reason}
}

// Validate reports whether r is a complete answer for the recipient group.
// The host side validates Outputs as they stream in instead.
func (r OutboundResult) Validate(group []Recipient) error {
	switch r.Action {
	case OutboundDiverted, OutboundDeclined:
		if len(r.Outputs) > 0 {
			return fmt.Errorf("%s result with outputs", r.Action)
		}
		return nil
	case OutboundTransformed:
	default:
		return fmt.Errorf("outbound result has no valid action (%v); use sdk.Transformed(...), sdk.Diverted(...) or sdk.Declined(...)", r.Action)
	}
	if len(r.Outputs) == 0 {
		return errors.New("transformed result without outputs")
	}
	cov := newCoverage(group)
	for i, o := range r.Outputs {
		if o.Body == nil {
			return fmt.Errorf("output %d has no body", i)
		}
		if err := cov.add(o.Recipients); err != nil {
			return fmt.Errorf("output %d: %w", i, err)
		}
	}
	return cov.complete()
}

// coverage checks that outputs partition a recipient group.
type coverage struct {
	want map[string]bool // address → seen
}

func newCoverage(group []Recipient) *coverage {
	c := &coverage{want: make(map[string]bool, len(group))}
	for _, r := range group {
		c.want[r.Address] = false
	}
	return c
}

func (c *coverage) add(rcpts []string) error {
	if len(rcpts) == 0 {
		return errors.New("no recipients")
	}
	for _, a := range rcpts {
		seen, ok := c.want[a]
		if !ok {
			return fmt.Errorf("recipient %q is not in the group", a)
		}
		if seen {
			return fmt.Errorf("recipient %q is in more than one output", a)
		}
		c.want[a] = true
	}
	return nil
}

func (c *coverage) complete() error {
	for a, seen := range c.want {
		if !seen {
			return fmt.Errorf("recipient %q is in no output", a)
		}
	}
	return nil
}

// Event types the host emits. Plugin-emitted types carry a dotted prefix
// naming the plugin: "webmailbox.activation", "smime.cert_expiring".
const (
	EventReceived  = "received"
	EventDelivered = "delivered"
	EventDeferred  = "deferred"
	EventBounced   = "bounced"
	EventDiverted  = "diverted"
)

// Event is a delivery event or a plugin-emitted event.
type Event struct {
	// ID is unique per event and stays the same on redelivery; use it to
	// deduplicate. The host assigns it.
	ID        string
	Type      string
	QueueID   string
	Sender    string
	Recipient string
	Time      time.Time
	// Attributes carry type-specific data ("reason", "smtp_code", "url"…).
	Attributes map[string]string
	// SourcePlugin names the plugin that emitted the event; empty for host
	// events. Set by the host, never trusted from the plugin.
	SourcePlugin string
	// Language is a BCP 47 hint for human-facing output ("de").
	Language string
}

// ValidateEmitted reports whether e may be emitted by a plugin: its type
// needs a dotted prefix so it can never pose as a host event.
func (e Event) ValidateEmitted() error {
	if err := validEventType(e.Type); err != nil {
		return err
	}
	if i := strings.IndexByte(e.Type, '.'); i <= 0 || i == len(e.Type)-1 {
		return fmt.Errorf("event type %q: plugin-emitted types look like \"plugin.what\"", e.Type)
	}
	return nil
}

func validEventType(t string) error {
	if t == "" {
		return errors.New("event type is empty")
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("event type %q: only a-z 0-9 . _ - allowed", t)
		}
	}
	return nil
}

// MatchEventType reports whether an event type is selected by a plugin's
// subscription patterns: exact names, "prefix.*" or "*".
func MatchEventType(patterns []string, typ string) bool {
	for _, p := range patterns {
		switch {
		case p == "*", p == typ:
			return true
		case strings.HasSuffix(p, ".*") && len(typ) > len(p)-1 && strings.HasPrefix(typ, p[:len(p)-1]):
			return true
		}
	}
	return false
}

// ConfirmOutcome settles a recipient diverted with pending = true.
type ConfirmOutcome int

const (
	ConfirmDelivered ConfirmOutcome = iota + 1 // the plugin delivered it
	ConfirmFailed                              // the plugin gave up: the host bounces
)

func (o ConfirmOutcome) String() string {
	switch o {
	case ConfirmDelivered:
		return "delivered"
	case ConfirmFailed:
		return "failed"
	}
	return fmt.Sprintf("ConfirmOutcome(%d)", int(o))
}

// Confirmation settles one pending diverted recipient.
type Confirmation struct {
	QueueID   string
	Recipient string
	Outcome   ConfirmOutcome
	// Reason goes into the log and, for ConfirmFailed, into the bounce.
	Reason string
}

// Validate reports whether c is complete.
func (c Confirmation) Validate() error {
	switch {
	case c.QueueID == "":
		return errors.New("confirmation without queue id")
	case c.Recipient == "":
		return errors.New("confirmation without recipient")
	case c.Outcome != ConfirmDelivered && c.Outcome != ConfirmFailed:
		return fmt.Errorf("confirmation outcome %v is invalid", c.Outcome)
	}
	return nil
}
