package tlsrpt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// ValidateReport checks a report's JSON against RFC 8460 section 4.4
// (the JSON schema of the aggregate report), field by field: every
// required field present and of its type, no unknown field, dates in RFC
// 3339, policy types and result types from the RFC's lists, addresses
// that parse, counts that are not negative and add up. It returns every
// problem found.
func ValidateReport(js []byte) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&top); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	allowed(top, "report", bad, "organization-name", "date-range", "contact-info", "report-id", "policies")
	str(top, "organization-name", true, bad)
	str(top, "contact-info", true, bad)
	str(top, "report-id", true, bad)
	var dr map[string]json.RawMessage
	if obj(top, "date-range", &dr, bad) {
		allowed(dr, "date-range", bad, "start-datetime", "end-datetime")
		start := datetime(dr, "start-datetime", bad)
		end := datetime(dr, "end-datetime", bad)
		if !start.IsZero() && !end.IsZero() && end.Before(start) {
			bad("date-range: end before start")
		}
	}
	var pols []map[string]json.RawMessage
	if raw, ok := top["policies"]; !ok {
		bad("policies: missing")
	} else if err := json.Unmarshal(raw, &pols); err != nil {
		bad("policies: not an array of objects")
	}
	for i, p := range pols {
		where := fmt.Sprintf("policies[%d]", i)
		allowed(p, where, bad, "policy", "summary", "failure-details")
		var pd map[string]json.RawMessage
		if obj(p, "policy", &pd, func(f string, a ...any) { bad(where+": "+f, a...) }) {
			allowed(pd, where+".policy", bad, "policy-type", "policy-string", "policy-domain", "mx-host")
			pt := str(pd, "policy-type", true, func(f string, a ...any) { bad(where+".policy: "+f, a...) })
			if pt != "" && !slices.Contains([]string{"tlsa", "sts", "no-policy-found"}, pt) {
				bad("%s.policy.policy-type: %q is not tlsa, sts or no-policy-found", where, pt)
			}
			str(pd, "policy-domain", true, func(f string, a ...any) { bad(where+".policy: "+f, a...) })
			strs(pd, "policy-string", where+".policy", bad)
			strs(pd, "mx-host", where+".policy", bad)
			if pt == "no-policy-found" && (pd["policy-string"] != nil || pd["mx-host"] != nil) {
				bad("%s.policy: no-policy-found with a policy-string or mx-host", where)
			}
		}
		var sum map[string]json.RawMessage
		var failures int64
		if obj(p, "summary", &sum, func(f string, a ...any) { bad(where+": "+f, a...) }) {
			allowed(sum, where+".summary", bad, "total-successful-session-count", "total-failure-session-count")
			count(sum, "total-successful-session-count", where+".summary", bad)
			failures = count(sum, "total-failure-session-count", where+".summary", bad)
		}
		var fds []map[string]json.RawMessage
		if raw, ok := p["failure-details"]; ok {
			if err := json.Unmarshal(raw, &fds); err != nil {
				bad("%s.failure-details: not an array of objects", where)
			}
		}
		var sumFailed int64
		for j, fd := range fds {
			fw := fmt.Sprintf("%s.failure-details[%d]", where, j)
			allowed(fd, fw, bad, "result-type", "sending-mta-ip", "receiving-mx-hostname", "receiving-mx-helo",
				"receiving-ip", "failed-session-count", "additional-information", "failure-reason-code")
			rt := str(fd, "result-type", true, func(f string, a ...any) { bad(fw+": "+f, a...) })
			if rt != "" && !slices.Contains(ResultTypes, ResultType(rt)) {
				bad("%s.result-type: %q is not a result type of RFC 8460 §4.3.2", fw, rt)
			}
			for _, k := range []string{"sending-mta-ip", "receiving-ip"} {
				if s := str(fd, k, false, func(f string, a ...any) { bad(fw+": "+f, a...) }); s != "" {
					if _, err := netip.ParseAddr(s); err != nil {
						bad("%s.%s: %q is not an IP address", fw, k, s)
					}
				}
			}
			for _, k := range []string{"receiving-mx-hostname", "receiving-mx-helo", "additional-information", "failure-reason-code"} {
				str(fd, k, false, func(f string, a ...any) { bad(fw+": "+f, a...) })
			}
			n := count(fd, "failed-session-count", fw, bad)
			if n < 1 {
				bad("%s.failed-session-count: %d, want at least 1", fw, n)
			}
			sumFailed += n
		}
		if len(fds) > 0 && sumFailed != failures {
			bad("%s: failure-details count %d sessions, summary %d", where, sumFailed, failures)
		}
	}
	return errors.Join(errs...)
}

func allowed(m map[string]json.RawMessage, where string, bad func(string, ...any), keys ...string) {
	for k := range m {
		if !slices.Contains(keys, k) {
			bad("%s: unknown field %q", where, k)
		}
	}
}

func str(m map[string]json.RawMessage, k string, required bool, bad func(string, ...any)) string {
	raw, ok := m[k]
	if !ok {
		if required {
			bad("%s: missing", k)
		}
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		bad("%s: not a string", k)
		return ""
	}
	if required && s == "" {
		bad("%s: empty", k)
	}
	return s
}

func strs(m map[string]json.RawMessage, k, where string, bad func(string, ...any)) {
	if raw, ok := m[k]; ok {
		var ss []string
		if err := json.Unmarshal(raw, &ss); err != nil {
			bad("%s.%s: not an array of strings", where, k)
		}
	}
}

func obj(m map[string]json.RawMessage, k string, out *map[string]json.RawMessage, bad func(string, ...any)) bool {
	raw, ok := m[k]
	if !ok {
		bad("%s: missing", k)
		return false
	}
	if err := json.Unmarshal(raw, out); err != nil || *out == nil {
		bad("%s: not an object", k)
		return false
	}
	return true
}

func datetime(m map[string]json.RawMessage, k string, bad func(string, ...any)) time.Time {
	s := str(m, k, true, bad)
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		bad("%s: %q is not an RFC 3339 date-time", k, s)
	}
	return t
}

func count(m map[string]json.RawMessage, k, where string, bad func(string, ...any)) int64 {
	raw, ok := m[k]
	if !ok {
		bad("%s.%s: missing", where, k)
		return 0
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&n); err != nil {
		bad("%s.%s: not a number", where, k)
		return 0
	}
	v, err := n.Int64()
	if err != nil || v < 0 {
		bad("%s.%s: %s is not a non-negative integer", where, k, n)
	}
	return v
}
