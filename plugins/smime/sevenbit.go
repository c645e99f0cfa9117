package smime

import (
	"bytes"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// to7bit rewrites the 8-bit leaves of a MIME entity as quoted-printable
// (text) or base64 (other types), so that no relay re-encodes — and
// breaks — the signed content (RFC 8551 §3.1.3). Parts that are already
// 7-bit stay byte for byte as they are.
func to7bit(entity []byte, depth int) []byte {
	if !has8bit(entity) || depth > 16 {
		return entity
	}
	m, err := parseMessage(entity)
	if err != nil {
		return entity
	}
	mt, params, err := mime.ParseMediaType(m.get("content-type"))
	if err != nil && m.get("content-type") != "" {
		return entity
	}
	if mt == "" {
		mt = "text/plain"
	}
	var body []byte
	cte := "quoted-printable"
	switch {
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		delim := []byte("\r\n--" + params["boundary"])
		pieces := bytes.Split(append([]byte("\r\n"), m.body...), delim)
		for i := 1; i < len(pieces); i++ {
			p := pieces[i]
			if bytes.HasPrefix(p, []byte("--")) {
				break // the closing delimiter; the epilogue stays
			}
			if j := bytes.Index(p, []byte("\r\n")); j >= 0 {
				pieces[i] = append(append([]byte{}, p[:j+2]...), to7bit(p[j+2:], depth+1)...)
			}
		}
		body = bytes.Join(pieces, delim)[2:]
		cte = ""
	case strings.HasPrefix(mt, "message/"):
		return entity // 8-bit inside message/rfc822: left alone
	default:
		switch strings.ToLower(m.get("content-transfer-encoding")) {
		case "quoted-printable", "base64":
			return entity
		}
		var b bytes.Buffer
		if strings.HasPrefix(mt, "text/") {
			w := quotedprintable.NewWriter(&b)
			w.Write(m.body)
			w.Close()
		} else {
			b.Write(base64Lines(m.body))
			cte = "base64"
		}
		body = b.Bytes()
	}
	var out bytes.Buffer
	for _, f := range m.fields {
		if cte != "" && f.name == "content-transfer-encoding" {
			continue
		}
		out.WriteString(f.raw)
	}
	if cte != "" {
		out.WriteString("Content-Transfer-Encoding: " + cte + "\r\n")
	}
	out.WriteString("\r\n")
	out.Write(body)
	return out.Bytes()
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}
