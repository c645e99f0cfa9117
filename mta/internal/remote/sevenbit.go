package remote

import (
	"bufio"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// to7bit converts a message for a server without 8BITMIME (RFC 6152 §3):
// every leaf part labelled 8bit or binary is re-encoded as
// quoted-printable; multiparts and message/rfc822 parts are walked; headers,
// charsets and 7-bit parts stay as they are (go-message's Entity would
// transcode charsets, which a relay must not do, so only its textproto
// layer is used). The conversion streams.
func to7bit(r io.Reader) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(convert7bit(bufio.NewReader(r), pw))
	}()
	return pr
}

func convert7bit(br *bufio.Reader, w io.Writer) error {
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return err
	}
	mt, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
	if mt == "" {
		mt = "text/plain"
	}
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	switch {
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		if cte == "8bit" || cte == "binary" {
			h.Set("Content-Transfer-Encoding", "7bit")
		}
		if err := textproto.WriteHeader(w, h); err != nil {
			return err
		}
		b := params["boundary"]
		mr := textproto.NewMultipartReader(br, b)
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if _, err := io.WriteString(w, "\r\n--"+b+"\r\n"); err != nil {
				return err
			}
			var hb strings.Builder
			textproto.WriteHeader(&hb, p.Header)
			if err := convert7bit(bufio.NewReader(io.MultiReader(strings.NewReader(hb.String()), p)), w); err != nil {
				return err
			}
		}
		_, err := io.WriteString(w, "\r\n--"+b+"--\r\n")
		return err
	case mt == "message/rfc822" || mt == "message/global":
		if cte == "8bit" || cte == "binary" {
			h.Set("Content-Transfer-Encoding", "7bit")
		}
		if err := textproto.WriteHeader(w, h); err != nil {
			return err
		}
		return convert7bit(br, w)
	case cte == "8bit" || cte == "binary":
		h.Set("Content-Transfer-Encoding", "quoted-printable")
		if err := textproto.WriteHeader(w, h); err != nil {
			return err
		}
		qp := quotedprintable.NewWriter(w)
		qp.Binary = cte == "binary"
		if _, err := io.Copy(qp, br); err != nil {
			return err
		}
		if err := qp.Close(); err != nil {
			return err
		}
		_, err := io.WriteString(w, "\r\n")
		return err
	default:
		if err := textproto.WriteHeader(w, h); err != nil {
			return err
		}
		_, err := io.Copy(w, br)
		return err
	}
}
