package queue

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// appendEnvelopeJSON appends env as JSON, byte for byte what
// json.Marshal(env) gives (TestEnvelopeJSONMatchesEncodingJSON compares
// them): encoding/json's reflection was 3% of the 10 KB relay's CPU
// (issue 19), for one record per message. Strings of plain printable
// ASCII are copied; any other string, and any time, goes through
// encoding/json's own code, so escaping and formats cannot drift.
func appendEnvelopeJSON(b []byte, env *Envelope) ([]byte, error) {
	var err error
	b = append(b, `{"id":`...)
	b = appendJSONString(b, env.ID)
	b = append(b, `,"from":`...)
	b = appendJSONString(b, env.From)
	b = append(b, `,"recipients":`...)
	if env.Recipients == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, r := range env.Recipients {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendRecipientJSON(b, r); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	b = append(b, `,"received":`...)
	if b, err = appendJSONTime(b, env.Received); err != nil {
		return nil, err
	}
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, env.Size, 10)
	b = appendOptString(b, `,"ret":`, env.Ret)
	b = appendOptString(b, `,"envid":`, env.EnvID)
	b = appendOptString(b, `,"body_type":`, env.BodyType)
	b = appendOptBool(b, `,"smtputf8":true`, env.SMTPUTF8)
	b = appendOptBool(b, `,"requiretls":true`, env.RequireTLS)
	b = appendOptString(b, `,"auth_user":`, env.AuthUser)
	b = appendOptString(b, `,"client_addr":`, env.ClientAddr)
	b = appendOptString(b, `,"client_helo":`, env.ClientHelo)
	b = appendOptBool(b, `,"held":true`, env.Held)
	if len(env.Attrs) > 0 {
		b = append(b, `,"attrs":{`...)
		keys := make([]string, 0, len(env.Attrs))
		for k := range env.Attrs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, env.Attrs[k])
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

func appendRecipientJSON(b []byte, r *Recipient) ([]byte, error) {
	if r == nil {
		return append(b, "null"...), nil
	}
	var err error
	b = append(b, `{"addr":`...)
	b = appendJSONString(b, r.Addr)
	b = appendOptString(b, `,"orcpt":`, r.ORcpt)
	if len(r.Notify) > 0 {
		b = append(b, `,"notify":[`...)
		for i, n := range r.Notify {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, n)
		}
		b = append(b, ']')
	}
	b = append(b, `,"state":`...)
	b = appendJSONString(b, string(r.State))
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(r.Attempts), 10)
	if !r.LastAttempt.IsZero() {
		b = append(b, `,"last_attempt":`...)
		if b, err = appendJSONTime(b, r.LastAttempt); err != nil {
			return nil, err
		}
	}
	if !r.NextAttempt.IsZero() {
		b = append(b, `,"next_attempt":`...)
		if b, err = appendJSONTime(b, r.NextAttempt); err != nil {
			return nil, err
		}
	}
	b = appendOptString(b, `,"status":`, r.Status)
	b = appendOptString(b, `,"diagnostic":`, r.Diagnostic)
	b = appendOptString(b, `,"remote_mta":`, r.RemoteMTA)
	b = appendOptBool(b, `,"delay_warned":true`, r.DelayWarned)
	return append(b, '}'), nil
}

func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendJSONString(append(b, key...), s)
}

func appendOptBool(b []byte, text string, v bool) []byte {
	if !v {
		return b
	}
	return append(b, text...)
}

// appendJSONString appends s quoted as encoding/json does: printable
// ASCII other than '"', '\\' and the HTML characters '<', '>', '&' as it
// is; anything else through json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONTime appends t as encoding/json does (time.Time.MarshalJSON).
func appendJSONTime(b []byte, t time.Time) ([]byte, error) {
	q, err := t.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return append(b, q...), nil
}
