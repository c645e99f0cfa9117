package remote

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/delivery"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/sdk/mime7bit"
)

// go-smtp's client sends one command and waits for its reply. For servers
// that offer PIPELINING (RFC 2920) the transaction is spoken here instead:
// MAIL, every RCPT and DATA go out in one write, and the replies are read
// in order. It runs on the same connection between two go-smtp commands,
// when no reply is pending, so neither side's buffer holds anything of the
// other's.

// pipelined runs one transaction; broken reports a connection that died
// before the server said anything about this message.
func (t *Transport) pipelined(env *queue.Envelope, c *conn, idx []int, body delivery.Body, mailParams string, rcptParams []string) (map[int]delivery.Outcome, *attemptError, bool) {
	wire := c.wire
	out := map[int]delivery.Outcome{}
	var b strings.Builder
	// The previous transaction on this connection was left open: RSET
	// goes first in the same write (RFC 2920 §3.1 allows it anywhere in
	// a group).
	reset := c.txnOpen
	if reset {
		b.WriteString("RSET\r\n")
	}
	b.WriteString("MAIL FROM:<" + wireAddr(env.From) + ">" + mailParams + "\r\n")
	for k, i := range idx {
		b.WriteString("RCPT TO:<" + wireAddr(env.Recipients[i].Addr) + ">" + rcptParams[k] + "\r\n")
	}
	b.WriteString("DATA\r\n")
	wire.SetDeadline(time.Now().Add(t.commandTimeout))
	c.txnOpen = true
	if _, err := io.WriteString(wire, b.String()); err != nil {
		return nil, tempErr("4.4.2", "%s[%s]: lost connection at MAIL: %s", c.host, c.addr, oneLine(err)), true
	}
	bw := dataBufs.Get().(*dataBuf)
	defer func() {
		bw.w.Reset(nil)
		bw.r.Reset(nil)
		dataBufs.Put(bw)
	}()
	bw.r.Reset(wire)
	tp := textproto.NewReader(bw.r)
	lost := func(stage string, err error) (map[int]delivery.Outcome, *attemptError, bool) {
		return nil, tempErr("4.4.2", "%s[%s]: lost connection at %s: %s", c.host, c.addr, stage, oneLine(err)), false
	}
	if reset {
		rsetErr, err := readReply(tp, 2)
		if err != nil {
			a, e, _ := lost("RSET", err)
			return a, e, true
		}
		if rsetErr != nil {
			// Nothing was said about this message yet: another
			// connection may do better.
			return nil, tempErr("4.4.2", "%s[%s] refused RSET: %d %s", c.host, c.addr, rsetErr.Code, oneLine(errors.New(rsetErr.Message+" "))), true
		}
	}
	mailErr, err := readReply(tp, 2)
	if err != nil {
		a, e, _ := lost("MAIL", err)
		return a, e, true
	}
	if mailErr != nil && mailErr.Code == 421 {
		// The server is closing the connection (e.g. its limit of
		// messages per connection): nothing was said about this
		// message, and no more replies will come. A cached connection
		// is replaced by a fresh one (transaction).
		return nil, &attemptError{status: enhanced(mailErr), diag: fmt.Sprintf("%s[%s] said at MAIL: %d %s %s", c.host, c.addr,
			mailErr.Code, enhancedString(mailErr), oneLine(errors.New(mailErr.Message+" ")))}, true
	}
	var accepted []int
	for _, i := range idx {
		rerr, err := readReply(tp, 2)
		if err != nil {
			return lost("RCPT", err)
		}
		switch {
		case mailErr != nil:
			out[i] = outcomeFromReply(mailErr, c.host, "MAIL")
		case rerr != nil:
			out[i] = outcomeFromReply(rerr, c.host, "RCPT")
		default:
			accepted = append(accepted, i)
		}
	}
	dataErr, err := readReply(tp, 3)
	if err != nil {
		return lost("DATA", err)
	}
	if dataErr != nil {
		for _, i := range accepted {
			out[i] = outcomeFromReply(dataErr, c.host, "DATA")
		}
		return out, nil, false
	}
	// 354: send the message, or, with no recipient left, an empty one the
	// server will refuse (RFC 2920 §3.1).
	wire.SetDeadline(time.Now().Add(t.dataTimeout))
	bw.w.Reset(wire)
	dw := newDotWriter(bw.w)
	if len(accepted) > 0 {
		rc, err := body()
		if err != nil {
			// After 354 only the end of data or closing the connection
			// leaves the DATA phase; "." would deliver an empty message.
			c.unusable = true
			for _, i := range accepted {
				out[i] = delivery.Deferred("4.3.0", "x-posthorn; cannot read queued message: "+oneLine(err))
			}
			return out, nil, false
		}
		convert := env.BodyType == "8BITMIME" && !c.ext8bit // RFC 6152 §3
		if tcp, br := spooledData(c, rc, convert); br != nil {
			// Already in DATA form: the spool file goes out as it is
			// (sendfile), and it ended with CRLF.
			_, werr := br.SendTo(tcp)
			rc.Close()
			if werr != nil {
				return lost("DATA", werr)
			}
			dw.state = dotLineStart
			spooledSends.Add(1)
		} else {
			var src io.Reader = rc
			if convert {
				conv := mime7bit.Reader(rc)
				defer conv.Close()
				src = conv
			}
			_, werr := io.CopyBuffer(dw, src, bw.copy[:])
			rc.Close()
			if werr != nil {
				return lost("DATA", werr)
			}
		}
	}
	if err := dw.Close(); err != nil {
		return lost("end of DATA", err)
	}
	wire.SetDeadline(time.Now().Add(t.dataTimeout))
	endErr, text, err := readReplyText(tp, 2)
	wire.SetDeadline(time.Time{})
	if err != nil {
		// The message may or may not have arrived: retry (a duplicate is
		// better than a loss).
		return lost("end of DATA", err)
	}
	c.txnOpen = false // the end of data ended the transaction, whatever the reply
	if len(accepted) == 0 {
		return out, nil, false
	}
	if endErr != nil {
		for _, i := range accepted {
			out[i] = outcomeFromReply(endErr, c.host, "end of DATA")
		}
		return out, nil, false
	}
	c.msgs++
	diag := "smtp; 250 " + oneLine(errors.New(text+" ")) + " (" + c.tls.String() + ")"
	for _, i := range accepted {
		out[i] = delivery.Outcome{State: queue.Delivered, Status: "2.0.0",
			Diagnostic: diag, RemoteMTA: c.host, DSNPassedOn: c.extDSN}
	}
	t.log.Info("delivered", "queue_id", env.ID, "host", c.host, "addr", c.addr, "tls", c.tls.String(), "rcpts", len(accepted), "pipelined", true)
	return out, nil, false
}

// dataBuf is the per-transaction reply reader, output buffer and copy
// buffer, pooled: 100 KiB allocated per delivery was the largest
// allocation item of the 10 KB relay profile (issue 19).
type dataBuf struct {
	r    *bufio.Reader
	w    *bufio.Writer
	copy [32 << 10]byte
}

var dataBufs = sync.Pool{New: func() any {
	return &dataBuf{r: bufio.NewReader(nil), w: bufio.NewWriterSize(nil, 64<<10)}
}}

// sendfileMin is the smallest body sent from the spool file with
// sendfile: below it the copy through the pooled 64 KiB buffer is one
// write for body and end-of-data line together, where sendfile takes two.
const sendfileMin = 64 << 10

// spooledSends counts bodies sent by spooledData's path (for tests).
var spooledSends atomic.Int64

// FileBody is a body held in a file that knows whether its bytes are in
// SMTP DATA form and can hand the file to a socket (sendfile):
// *queue.BodyReader, and the encryption stage's outputs kept in the
// plugin's sealed memory file.
type FileBody interface {
	io.Reader
	io.Seeker
	// DataReady as queue.BodyReader.DataReady.
	DataReady() bool
	Size() int64
	// SendTo as queue.BodyReader.SendTo.
	SendTo(w io.ReaderFrom) (int64, error)
}

var _ FileBody = (*queue.BodyReader)(nil)

// spooledData returns the plain TCP connection and the body when the body
// can go to the server straight from its file (issue 19): rc is a
// FileBody, unread, whose bytes are in DATA form already (so the
// dot-stuffing would change nothing; any stage that changes the bytes — a
// signature, the 7-bit conversion — hands over another reader or sets
// convert), and the connection is not encrypted (TLS must see every byte).
func spooledData(c *conn, rc io.Reader, convert bool) (*net.TCPConn, FileBody) {
	if convert || c.tls.used {
		return nil, nil
	}
	g, ok := c.wire.(*greetedConn)
	if !ok {
		return nil, nil
	}
	tcp, ok := g.Conn.(*net.TCPConn)
	if !ok {
		return nil, nil
	}
	br, ok := rc.(FileBody)
	if !ok || br.Size() < sendfileMin || !br.DataReady() {
		return nil, nil
	}
	if pos, err := br.Seek(0, io.SeekCurrent); err != nil || pos != 0 {
		return nil, nil
	}
	return tcp, br
}

// readReply reads one reply; a reply of another class than want is
// returned as an *smtp.SMTPError, an I/O or syntax problem as err.
func readReply(tp *textproto.Reader, want int) (*smtp.SMTPError, error) {
	se, _, err := readReplyText(tp, want)
	return se, err
}

func readReplyText(tp *textproto.Reader, want int) (*smtp.SMTPError, string, error) {
	code, msg, err := tp.ReadResponse(want)
	if err == nil {
		return nil, msg, nil
	}
	var te *textproto.Error
	if !errors.As(err, &te) || code < 200 {
		return nil, "", err
	}
	se := asSMTPError(te).(*smtp.SMTPError)
	return se, msg, nil
}

// xtext encodes a DSN parameter value (RFC 3461 §4).
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

var _ net.Conn = (*greetedConn)(nil)
