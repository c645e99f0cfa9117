package sdk

import (
	"bufio"
	"fmt"
	"io"
	"mime"
	"net/textproto"
	"regexp"
	"strings"

	pb "github.com/posthorn/posthorn/sdk/proto/posthorn/plugin/v1"
)

// InboundFilter says which received mail a plugin's Inspect wants to see
// (protocol minor 2). The host evaluates it before calling the plugin: a
// message the filter does not select is not shown to the plugin at all,
// and when the plugin is down or fails, its on_failure applies only to
// mail it would have seen — unrelated mail keeps flowing.
//
// A message is selected when it matches at least one rule. A nil filter
// or one without rules selects every message (what a plugin built
// against minor 0 or 1 gets).
//
// Declare it in Description.InboundFilter; a plugin whose filter depends
// on its configuration implements InboundFilterer as well.
type InboundFilter struct {
	Rules []InboundMatch
}

// InboundMatch is one rule of an InboundFilter: every condition that is
// set must hold; a rule with no condition set matches every message.
type InboundMatch struct {
	// ContentTypes: the top-level Content-Type (type/subtype,
	// case-insensitive, parameters ignored) is one of these; "type/*"
	// matches every subtype. A message without a Content-Type field is
	// "text/plain" (RFC 2045 §5.2).
	ContentTypes []string
	// LocalRecipient: at least one envelope recipient is in one of the
	// host's local domains.
	LocalRecipient bool
	// Recipients: at least one envelope recipient is one of these, an
	// address ("a@example.org") or a whole domain ("example.org"),
	// case-insensitive.
	Recipients []string
	// Headers: at least one of these header fields is present
	// (case-insensitive names).
	Headers []string
}

// InboundFilterer is implemented by a plugin whose inbound filter depends
// on its configuration. After a successful Configure the SDK calls it and
// sends the result to the host, where it replaces
// Description.InboundFilter. Returning nil keeps the Description's.
type InboundFilterer interface {
	InboundFilter() *InboundFilter
}

// FilterInput is what a filter is evaluated on: facts the host knows
// before calling the plugin.
type FilterInput struct {
	// ContentType is the top-level Content-Type field's value, as found
	// (parameters and all); empty when the message has none.
	ContentType string
	// Recipients are the envelope recipients.
	Recipients []string
	// HasHeader reports whether the message has a header field of that
	// name (case-insensitive).
	HasHeader func(name string) bool
	// IsLocal reports whether a domain is one of the host's local domains.
	IsLocal func(domain string) bool
}

// maxFilterHeader bounds how much of a message ReadFilterInput reads.
const maxFilterHeader = 256 << 10

// ReadFilterInput reads the header of msg (at most 256 KiB; the body is
// not touched) and returns the input a filter is evaluated on. A
// malformed header yields what could be read before the fault. This is
// how the host evaluates filters; plugin tests may use it too.
func ReadFilterInput(msg io.Reader, recipients []string, isLocal func(domain string) bool) FilterInput {
	hdr, _ := textproto.NewReader(bufio.NewReader(io.LimitReader(msg, maxFilterHeader))).ReadMIMEHeader()
	return FilterInput{
		ContentType: hdr.Get("Content-Type"),
		Recipients:  recipients,
		HasHeader: func(name string) bool {
			_, ok := hdr[textproto.CanonicalMIMEHeaderKey(name)]
			return ok
		},
		IsLocal: isLocal,
	}
}

// Match reports whether the filter selects the message described by in.
func (f *InboundFilter) Match(in FilterInput) bool {
	if f == nil || len(f.Rules) == 0 {
		return true
	}
	ct := mediaType(in.ContentType)
	for _, r := range f.Rules {
		if r.match(ct, in) {
			return true
		}
	}
	return false
}

func mediaType(v string) string {
	if strings.TrimSpace(v) == "" {
		return "text/plain"
	}
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		// A broken parameter list still names the type.
		mt, _, _ = strings.Cut(v, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
	}
	return mt
}

func (r InboundMatch) match(ct string, in FilterInput) bool {
	if len(r.ContentTypes) > 0 && !matchContentType(r.ContentTypes, ct) {
		return false
	}
	if r.LocalRecipient {
		ok := false
		for _, rc := range in.Recipients {
			if _, dom, found := strings.Cut(rc, "@"); found && in.IsLocal != nil && in.IsLocal(strings.ToLower(dom)) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.Recipients) > 0 && !matchRecipients(r.Recipients, in.Recipients) {
		return false
	}
	if len(r.Headers) > 0 {
		ok := false
		for _, h := range r.Headers {
			if in.HasHeader != nil && in.HasHeader(h) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func matchContentType(patterns []string, ct string) bool {
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == ct {
			return true
		}
		if typ, ok := strings.CutSuffix(p, "/*"); ok && strings.HasPrefix(ct, typ+"/") {
			return true
		}
	}
	return false
}

func matchRecipients(patterns, rcpts []string) bool {
	for _, rc := range rcpts {
		rc = strings.ToLower(rc)
		_, dom, _ := strings.Cut(rc, "@")
		for _, p := range patterns {
			p = strings.ToLower(strings.TrimSpace(p))
			if p == rc || (!strings.Contains(p, "@") && p == dom) {
				return true
			}
		}
	}
	return false
}

var (
	contentTypeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9!#$&^_.+-]*/([a-z0-9][a-z0-9!#$&^_.+-]*|\*)$`)
	fieldNameRE   = regexp.MustCompile(`^[!-9;-~]+$`)
)

// Validate reports whether f is well formed: content types "type/subtype"
// or "type/*", header names RFC 5322 field names, recipients addresses or
// domains, no empty strings.
func (f *InboundFilter) Validate() error {
	if f == nil {
		return nil
	}
	for i, r := range f.Rules {
		for _, ct := range r.ContentTypes {
			if !contentTypeRE.MatchString(strings.ToLower(ct)) {
				return fmt.Errorf("inbound filter rule %d: content type %q is not type/subtype or type/*", i, ct)
			}
		}
		for _, h := range r.Headers {
			if !fieldNameRE.MatchString(h) {
				return fmt.Errorf("inbound filter rule %d: %q is not a header field name", i, h)
			}
		}
		for _, rc := range r.Recipients {
			local, dom, hasAt := strings.Cut(rc, "@")
			if strings.TrimSpace(rc) == "" || strings.ContainsAny(rc, " \t\r\n<>") || (hasAt && (local == "" || dom == "")) {
				return fmt.Errorf("inbound filter rule %d: recipient %q is not an address or a domain", i, rc)
			}
		}
	}
	return nil
}

func inboundFilterToPB(f *InboundFilter) *pb.InboundFilter {
	if f == nil {
		return nil
	}
	out := &pb.InboundFilter{}
	for _, r := range f.Rules {
		out.Rules = append(out.Rules, &pb.InboundMatch{ContentTypes: r.ContentTypes, LocalRecipient: r.LocalRecipient,
			Recipients: r.Recipients, Headers: r.Headers})
	}
	return out
}

func inboundFilterFromPB(f *pb.InboundFilter) *InboundFilter {
	if f == nil {
		return nil
	}
	out := &InboundFilter{}
	for _, r := range f.GetRules() {
		out.Rules = append(out.Rules, InboundMatch{ContentTypes: r.GetContentTypes(), LocalRecipient: r.GetLocalRecipient(),
			Recipients: r.GetRecipients(), Headers: r.GetHeaders()})
	}
	return out
}
