package conf

import (
	"fmt"
	"path/filepath"
	"strings"
)

// WebMailboxPlugins names the [[plugin]]s that keep mail in a web mailbox
// instead of sending it: Posthorn's web mailbox, a plugin named
// "webmailbox" or running the binary posthorn-webmailbox. The encryption
// chain never hands them mail a plugin generated (the loop guard, see
// mta/internal/policychain).
func (c *Config) WebMailboxPlugins() []string {
	var out []string
	for _, p := range c.Plugins {
		if p.Name == "webmailbox" || filepath.Base(p.Path) == "posthorn-webmailbox" {
			out = append(out, p.Name)
		}
	}
	return out
}

// Warnings lists what in a valid config is probably not what was meant:
// `posthorn check` prints them, the daemon logs them when it starts.
func (c *Config) Warnings() []string {
	var out []string
	wmb := map[string]bool{}
	for _, n := range c.WebMailboxPlugins() {
		wmb[n] = true
	}
	// Who sends the notifications (the notify plugin's "from").
	var notifiers []string
	for _, p := range c.Plugins {
		if p.Name == "notify" || filepath.Base(p.Path) == "posthorn-notify" {
			if f, ok := p.Config["from"].(string); ok && f != "" {
				notifiers = append(notifiers, strings.ToLower(f))
			}
		}
	}
	for i, r := range c.Encryption.Rules {
		if r.Encrypt == "never" {
			continue
		}
		methods := r.Methods
		if len(methods) == 0 {
			methods = c.Encryption.Methods
		}
		name := firstIn(methods, wmb)
		if name == "" {
			continue
		}
		why := ""
		if len(r.Senders) == 0 {
			why = "for every sender (no senders)"
		}
		for _, s := range r.Senders {
			if strings.TrimSpace(s) == "*" {
				why = `for every sender (senders = ["*"])`
				break
			}
			for _, n := range notifiers {
				if senderPatternMatches(s, n) {
					why = fmt.Sprintf("for senders matching %q, the notify plugin's from address %s too", s, n)
				}
			}
		}
		if why != "" && len(notifiers) > 0 && allCovered(c.Encryption.Rules[:i], notifiers, func(r EncryptionRule) bool {
			return r.Encrypt == "never" || !usesAny(r.Methods, c.Encryption.Methods, wmb)
		}) {
			why = "" // an earlier rule decides for the notifications
		}
		if why != "" {
			out = append(out, fmt.Sprintf("encryption.rule[%d]: sends recipients to the web mailbox (%s) %s, so also the web mailbox's own notifications to them; "+
				"the loop guard keeps mail a plugin generated out of the web mailbox and sends it as it is, but say what you mean: "+
				"limit senders to your own people, or put a rule with encrypt = \"never\" for the notify plugin's from address before this one", i, name, why))
		}
	}
	return out
}

// allCovered reports whether for each address one of rules that is safe
// names it (or its domain) among its senders and matches every
// recipient, so that the rules after it never see its mail.
func allCovered(rules []EncryptionRule, addrs []string, safe func(EncryptionRule) bool) bool {
	for _, a := range addrs {
		covered := false
		for _, r := range rules {
			if !safe(r) {
				continue
			}
			anyRcpt := len(r.Recipients) == 0
			for _, p := range r.Recipients {
				anyRcpt = anyRcpt || strings.TrimSpace(p) == "*"
			}
			for _, s := range r.Senders {
				if anyRcpt && strings.TrimSpace(s) != "*" && senderPatternMatches(s, a) {
					covered = true
				}
			}
		}
		if !covered {
			return false
		}
	}
	return true
}

// senderPatternMatches is the policy chain's address pattern match for
// the forms a sender list uses ("user@domain", "*@domain", "domain",
// "*.domain"), enough for a warning.
func senderPatternMatches(pattern, addr string) bool {
	p := strings.ToLower(strings.TrimSpace(pattern))
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	domain := addr[at+1:]
	switch {
	case strings.HasPrefix(p, "*@"):
		return domain == p[2:]
	case strings.HasPrefix(p, "*."):
		return strings.HasSuffix(domain, p[1:])
	case strings.Contains(p, "@"):
		return p == addr
	}
	return domain == p
}

// firstIn returns the first of methods in set, "" when none is.
func firstIn(methods []string, set map[string]bool) string {
	for _, m := range methods {
		if set[m] {
			return m
		}
	}
	return ""
}

// usesAny reports whether a rule with methods (defaults when empty) uses
// a method in set.
func usesAny(methods, defaults []string, set map[string]bool) bool {
	if len(methods) == 0 {
		methods = defaults
	}
	return firstIn(methods, set) != ""
}
