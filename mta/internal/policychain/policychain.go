// Package policychain is the encryption policy chain: for one sender and
// one recipient of an outgoing message it decides whether the mail must be
// encrypted, may be, or must not be, and which encryption methods (outbound
// plugins such as "smime", "pgp", "webmailbox") to try in which order; then,
// given which methods can handle the recipient, it picks one or says why
// the mail cannot go.
//
// It is pure logic over conf.Encryption, no I/O:
//
//	chain, err := policychain.New(cfg.Encryption)
//	d := chain.Decide(env.MailFrom, rcpt, subject, headers)
//	// ask each method in d.Methods (plugin CanHandle) → answers
//	c := policychain.ChooseDetail(d, answers)
//	policychain.Audit(ctx, log, queueID, d, c)
//	switch {
//	case c.Method != "": // Transform with plugin c.Method (sign if d.Sign)
//	case c.OK:           // send as is
//	case c.Temporary:    // defer: a method that might have handled it is down
//	default:             // bounce with c.Why
//	}
//
// # Order
//
// Rules ([[encryption.rule]]) are checked in the order they are written;
// the first whose senders and recipients both match decides (as in a
// firewall or Postfix's access maps), so put specific rules before general
// ones. No matching rule means "never". A message whose Subject contains
// the subject tag, or which carries the trigger header with the value
// "required", has encryption "required" whatever the rule said, with the
// rule's methods (or encryption.methods when the rule names none or no rule
// matches). Both are removed before sending (StripTag; the caller drops the
// header).
//
// # Patterns
//
// Case-insensitive: "alice@example.org" (that address), "*@example.org" and
// "example.org" (anyone at example.org), "*.example.org" (anyone at a
// subdomain of example.org, not example.org itself), "*" (anyone, also the
// null sender <>). An empty list matches anyone.
//
// # Choosing
//
// The first method in the decision's order whose answer is true wins. A
// method without an answer (its plugin is down or failed) counts as
// "cannot" — principle 2, fail closed. When none can: "opportunistic" and
// "never" send the mail as it is; "required" does not send it: Temporary
// is set when some method gave no answer (defer and retry), otherwise the
// recipient bounces with Why.
//
// # Notifications and the web mailbox
//
// The web mailbox keeps a recipient's mail and tells them by mail (the
// notify plugin) how to read it. A rule that sends that recipient to the
// web mailbox for every sender would catch the notification too, which
// the web mailbox keeps and notifies about again: an endless series of
// activation mails. So mail a plugin generated (Auto-Submitted other than
// "no", RFC 3834) is never given to a web mailbox method (WebMailboxes):
// Unloop takes those methods out of the decision, and what only the web
// mailbox would have caught goes as it is — the notification is the web
// mailbox's way to reach the recipient and carries none of the protected
// mail. Other methods (a certificate, a key) still encrypt it.
package policychain

import (
	"context"
	"fmt"
	"log/slog"
	"mime"
	"strings"

	"github.com/posthorn/posthorn/conf"
)

// Encryption levels.
const (
	Required      = "required"
	Opportunistic = "opportunistic"
	Never         = "never"
)

// Chain is a compiled encryption policy. It is immutable and safe for
// concurrent use.
type Chain struct {
	rules         []rule
	methods       []string
	subjectTag    string
	triggerHeader string
	webMailboxes  map[string]bool // methods that keep mail in a web mailbox
}

// Option adjusts a Chain.
type Option func(*Chain)

// WebMailboxes names the methods ([[plugin]] names) that keep mail in a
// web mailbox instead of sending it, for Unloop.
func WebMailboxes(names ...string) Option {
	return func(c *Chain) {
		for _, n := range names {
			c.webMailboxes[n] = true
		}
	}
}

type rule struct {
	senders, recipients []pattern
	encrypt             string
	methods             []string
	sign                bool
}

// pattern is one compiled address pattern.
type pattern struct {
	kind  patKind
	local string // patExact
	dom   string // patExact, patDomain, patSub
}

type patKind int

const (
	patAny    patKind = iota // *
	patExact                 // local@domain
	patDomain                // *@domain or domain
	patSub                   // *.domain
)

func compile(p string) (pattern, error) {
	p = strings.ToLower(strings.TrimSpace(p))
	switch {
	case p == "*":
		return pattern{kind: patAny}, nil
	case strings.HasPrefix(p, "*@"):
		if d := p[2:]; validDomain(d) {
			return pattern{kind: patDomain, dom: d}, nil
		}
	case strings.HasPrefix(p, "*."):
		if d := p[2:]; validDomain(d) {
			return pattern{kind: patSub, dom: d}, nil
		}
	case strings.Contains(p, "@"):
		i := strings.LastIndexByte(p, '@')
		if l, d := p[:i], p[i+1:]; l != "" && !strings.Contains(l, "*") && validDomain(d) {
			return pattern{kind: patExact, local: l, dom: d}, nil
		}
	default:
		if validDomain(p) {
			return pattern{kind: patDomain, dom: p}, nil
		}
	}
	return pattern{}, fmt.Errorf("invalid address pattern %q: want \"user@domain\", \"*@domain\", \"domain\", \"*.domain\" or \"*\"", p)
}

func validDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || strings.ContainsAny(d, "@* \t") || strings.HasPrefix(d, ".") || strings.Contains(d, "..") {
		return false
	}
	return true
}

// match reports whether addr (lower-case, "" for the null sender)
// matches.
func (p pattern) match(local, domain string, null bool) bool {
	if p.kind == patAny {
		return true
	}
	if null {
		return false
	}
	switch p.kind {
	case patExact:
		return local == p.local && domain == p.dom
	case patDomain:
		return domain == p.dom
	case patSub:
		return strings.HasSuffix(domain, "."+p.dom)
	}
	return false
}

func matchAny(ps []pattern, addr string) bool {
	if len(ps) == 0 {
		return true
	}
	addr = strings.ToLower(strings.TrimSpace(addr))
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
	var local, domain string
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain = addr[:i], strings.TrimSuffix(addr[i+1:], ".")
	} else {
		local = addr
	}
	null := addr == ""
	for _, p := range ps {
		if p.match(local, domain, null) {
			return true
		}
	}
	return false
}

// New compiles the [encryption] section. It checks what conf's validation
// checks about patterns and levels too, so a Chain is always sound.
func New(cfg conf.Encryption, opts ...Option) (*Chain, error) {
	c := &Chain{
		methods:       append([]string(nil), cfg.Methods...),
		subjectTag:    cfg.SubjectTag,
		triggerHeader: cfg.TriggerHeader,
		webMailboxes:  map[string]bool{},
	}
	for _, o := range opts {
		o(c)
	}
	for i, r := range cfg.Rules {
		cr := rule{encrypt: r.Encrypt, methods: append([]string(nil), r.Methods...), sign: r.Sign}
		switch r.Encrypt {
		case Required, Opportunistic, Never:
		default:
			return nil, fmt.Errorf("encryption.rule[%d].encrypt: %q is not required, opportunistic or never", i, r.Encrypt)
		}
		if r.Encrypt != Never && len(r.Methods) == 0 && len(cfg.Methods) == 0 {
			return nil, fmt.Errorf("encryption.rule[%d]: encrypt = %q without methods", i, r.Encrypt)
		}
		for j, s := range r.Senders {
			p, err := compile(s)
			if err != nil {
				return nil, fmt.Errorf("encryption.rule[%d].senders[%d]: %v", i, j, err)
			}
			cr.senders = append(cr.senders, p)
		}
		for j, s := range r.Recipients {
			p, err := compile(s)
			if err != nil {
				return nil, fmt.Errorf("encryption.rule[%d].recipients[%d]: %v", i, j, err)
			}
			cr.recipients = append(cr.recipients, p)
		}
		c.rules = append(c.rules, cr)
	}
	return c, nil
}

// Decision is what the chain decided for one recipient.
type Decision struct {
	// Recipient the decision is for.
	Recipient string
	// Rule is the index of the deciding [[encryption.rule]], -1 when none
	// matched.
	Rule int
	// Encrypt is Required, Opportunistic or Never.
	Encrypt string
	// Methods to try, in order ([[plugin]] names).
	Methods []string
	// Sign asks the method to sign as well.
	Sign bool
	// Triggered: the subject tag or the trigger header made encryption
	// required.
	Triggered bool
	// Reason says in words how the decision came about, for logs.
	Reason string
	// Unlooped: the web mailbox methods were taken out because a plugin
	// generated the message (Unloop).
	Unlooped bool
}

// ruleName is how rules are named to people: 1-based.
func ruleName(i int) string { return fmt.Sprintf("rule %d", i+1) }

// Decide applies the chain to one recipient of a message. sender is the
// envelope sender ("" for <>), subject the Subject header (RFC 2047
// encoded words are decoded to look for the tag) and headers the message
// header (keys in any case) to look for the trigger header.
func (c *Chain) Decide(sender, rcpt, subject string, headers map[string][]string) Decision {
	d := Decision{Recipient: rcpt, Rule: -1, Encrypt: Never}
	for i, r := range c.rules {
		if matchAny(r.senders, sender) && matchAny(r.recipients, rcpt) {
			d.Rule, d.Encrypt, d.Sign = i, r.encrypt, r.sign
			d.Methods = append([]string(nil), r.methods...)
			d.Reason = fmt.Sprintf("%s matches: encrypt %s", ruleName(i), r.encrypt)
			break
		}
	}
	why := c.trigger(subject, headers)
	if d.Rule < 0 {
		d.Reason = "no rule matches: not encrypted"
		if why != "" {
			d.Reason = "no rule matches"
		}
	}
	if why != "" {
		d.Triggered = true
		d.Encrypt = Required
		if len(d.Methods) == 0 {
			d.Methods = append([]string(nil), c.methods...)
		}
		d.Reason = why + " requires encryption (" + d.Reason + ")"
	}
	if d.Encrypt != Never && len(d.Methods) == 0 {
		d.Methods = append([]string(nil), c.methods...)
	}
	return d
}

// Unloop adjusts d for mail a plugin generated (Auto-Submitted other than
// "no"): the web mailbox methods are taken out, so that the web mailbox's
// own notifications never go into a web mailbox again (see the package
// comment). Required becomes opportunistic when a web mailbox method was
// among the methods, since the web mailbox was the last resort; a
// decision without a web mailbox method is returned as it is. Unlooped
// says whether anything changed.
func (c *Chain) Unloop(d Decision) Decision {
	var keep []string
	for _, m := range d.Methods {
		if !c.webMailboxes[m] {
			keep = append(keep, m)
		}
	}
	if len(keep) == len(d.Methods) {
		return d
	}
	d.Methods, d.Unlooped = keep, true
	if d.Encrypt == Required {
		d.Encrypt = Opportunistic
	}
	d.Reason += "; generated by a plugin (Auto-Submitted): never into the web mailbox, sent as it is unless another method can encrypt it"
	return d
}

// IsWebMailbox reports whether method keeps mail in a web mailbox.
func (c *Chain) IsWebMailbox(method string) bool { return c.webMailboxes[method] }

// trigger says why the message asks for encryption, "" when it does not.
func (c *Chain) trigger(subject string, headers map[string][]string) string {
	if c.subjectTag != "" {
		if containsFold(subject, c.subjectTag) {
			return fmt.Sprintf("subject tag %q", c.subjectTag)
		}
		if dec, err := new(mime.WordDecoder).DecodeHeader(subject); err == nil && containsFold(dec, c.subjectTag) {
			return fmt.Sprintf("subject tag %q", c.subjectTag)
		}
	}
	if c.triggerHeader != "" {
		for k, vs := range headers {
			if !strings.EqualFold(k, c.triggerHeader) {
				continue
			}
			for _, v := range vs {
				if strings.EqualFold(strings.TrimSpace(v), Required) {
					return fmt.Sprintf("header %s: required", c.triggerHeader)
				}
			}
		}
	}
	return ""
}

// TriggerHeader returns the configured trigger header name ("" for none),
// which the caller removes before sending.
func (c *Chain) TriggerHeader() string { return c.triggerHeader }

// MayStrip reports whether StripTag could change one of subjects, or
// whether stripping the trigger header could change a header that has the
// fields keys (canonical MIME keys): false means the message goes out
// byte for byte as it was queued. It errs on the side of true (a tag that
// only occurs with other spacing counts).
func (c *Chain) MayStrip(keys map[string][]string, subjects []string) bool {
	if t := c.triggerHeader; t != "" {
		for k := range keys {
			if strings.EqualFold(k, t) {
				return true
			}
		}
	}
	if c.subjectTag == "" {
		return false
	}
	squash := func(s string) string { return strings.Join(strings.Fields(s), "") }
	tag := squash(c.subjectTag)
	for _, s := range subjects {
		if containsFold(s, c.subjectTag) || (tag != "" && containsFold(squash(s), tag)) {
			return true
		}
	}
	return false
}

// StripTag removes every occurrence of the subject tag (case-insensitive)
// and the blank it leaves: "[secure] Offer" → "Offer", "Re: [SECURE] Hi" →
// "Re: Hi". Pass a decoded subject and encode the result again if needed.
func (c *Chain) StripTag(subject string) string {
	tag := c.subjectTag
	if tag == "" {
		return subject
	}
	out := subject
	for {
		i := indexFold(out, tag)
		if i < 0 {
			break
		}
		before, after := out[:i], out[i+len(tag):]
		switch {
		case before == "" || strings.HasSuffix(before, " "):
			after = strings.TrimLeft(after, " \t")
		case after == "":
			before = strings.TrimRight(before, " \t")
		}
		out = before + after
	}
	if out != subject {
		out = strings.TrimRight(out, " \t")
	}
	return out
}

// indexFold is strings.Index ignoring case, for a match of the same
// length in bytes as sub (always so for ASCII tags).
func indexFold(s, sub string) int {
	if sub == "" {
		return -1
	}
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

func containsFold(s, sub string) bool { return indexFold(s, sub) >= 0 }

// Choice is the outcome of choosing a method for one recipient.
type Choice struct {
	// Method is the chosen method; "" when the mail goes as it is (OK) or
	// not at all (!OK).
	Method string
	// OK is false when the mail must not be sent to the recipient.
	OK bool
	// Temporary (with !OK): a method that gave no answer (plugin down or
	// failing) might have handled the recipient: defer rather than
	// bounce.
	Temporary bool
	// Why, for the log and, when !OK, for the bounce.
	Why string
}

// Choose picks the first method in d.Methods that can handle the
// recipient. answers maps a method to whether it can; a method missing
// from answers counts as cannot. When none can and encryption is
// required, ok is false and why is the reason for the bounce.
func Choose(d Decision, answers map[string]bool) (method string, ok bool, why string) {
	c := ChooseDetail(d, answers)
	return c.Method, c.OK, c.Why
}

// ChooseDetail is Choose, also telling whether a failure is temporary.
func ChooseDetail(d Decision, answers map[string]bool) Choice {
	by := ruleName(d.Rule)
	switch {
	case d.Triggered && d.Rule < 0:
		by = "the sender's request"
	case d.Triggered:
		by = "the sender's request and " + by
	}
	if d.Encrypt == Never {
		if d.Rule < 0 {
			return Choice{OK: true, Why: "no encryption rule matches"}
		}
		return Choice{OK: true, Why: "encryption is off by " + by}
	}
	var missing []string
	for _, m := range d.Methods {
		can, known := answers[m]
		if can {
			return Choice{Method: m, OK: true, Why: fmt.Sprintf("%s can handle %s (encryption %s by %s)", m, d.Recipient, d.Encrypt, by)}
		}
		if !known {
			missing = append(missing, m)
		}
	}
	if d.Unlooped {
		return Choice{OK: true, Why: fmt.Sprintf("generated by a plugin (Auto-Submitted): sent to %s as it is, never into the web mailbox (loop guard; %s)", d.Recipient, by)}
	}
	if d.Encrypt == Opportunistic {
		return Choice{OK: true, Why: fmt.Sprintf("no method (%s) can handle %s; sent without encryption (opportunistic by %s)", listOr(d.Methods), d.Recipient, by)}
	}
	if len(d.Methods) == 0 {
		return Choice{Why: fmt.Sprintf("encryption is required by %s, but no encryption method is configured", by)}
	}
	if len(missing) > 0 {
		return Choice{Temporary: true, Why: fmt.Sprintf("encryption for %s is required by %s; %s unavailable, retrying later", d.Recipient, by, strings.Join(missing, ", ")+" "+isAre(len(missing)))}
	}
	return Choice{Why: fmt.Sprintf("no %s available for recipient %s; encryption is required by %s", what(d.Methods), d.Recipient, by)}
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

func listOr(ms []string) string {
	if len(ms) == 0 {
		return "none configured"
	}
	return strings.Join(ms, ", ")
}

// what names what the methods would have needed, in words a sender
// understands: "certificate, key or web mailbox".
func what(methods []string) string {
	var parts []string
	seen := map[string]bool{}
	for _, m := range methods {
		w := m
		switch strings.ToLower(m) {
		case "smime":
			w = "certificate"
		case "pgp":
			w = "key"
		case "webmailbox":
			w = "web mailbox"
		default:
			w = m + " method"
		}
		if !seen[w] {
			seen[w] = true
			parts = append(parts, w)
		}
	}
	switch len(parts) {
	case 1:
		return parts[0]
	default:
		return strings.Join(parts[:len(parts)-1], ", ") + " or " + parts[len(parts)-1]
	}
}

// Audit logs one structured record for one recipient: the rule, the
// level, the method chosen, the outcome and why. Outcome is "encrypt",
// "plain", "defer" or "bounce".
func Audit(ctx context.Context, log *slog.Logger, queueID string, d Decision, c Choice) {
	outcome := "plain"
	level := slog.LevelInfo
	switch {
	case c.Method != "":
		outcome = "encrypt"
	case !c.OK && c.Temporary:
		outcome, level = "defer", slog.LevelWarn
	case !c.OK:
		outcome, level = "bounce", slog.LevelWarn
	}
	log.LogAttrs(ctx, level, "encryption policy",
		slog.String("queue_id", queueID),
		slog.String("rcpt", d.Recipient),
		slog.Int("rule", d.Rule),
		slog.String("encrypt", d.Encrypt),
		slog.Bool("triggered", d.Triggered),
		slog.Bool("sign", d.Sign),
		slog.String("method", c.Method),
		slog.String("outcome", outcome),
		slog.String("why", c.Why),
		slog.String("decision", d.Reason),
		slog.Bool("unlooped", d.Unlooped),
	)
}
