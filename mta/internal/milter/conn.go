package milter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// deadlineConn gives every read and write on a milter connection the
// timeout of the stage under way (go-milter has one timeout for all; we
// switch between command and content timeouts). Each read restarts the
// clock, so a milter's progress packets keep a long scan alive. It also
// follows the packet framing of what it reads to count progress packets,
// which go-milter swallows.
type deadlineConn struct {
	net.Conn
	timeout  time.Duration
	progress func()

	// read-side framing: bytes of the length still to come, then the
	// code byte, then the rest of the packet to skip
	lenBuf  [4]byte
	lenHave int
	skip    uint32
	inBody  bool
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if c.timeout > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
	n, err := c.Conn.Read(p)
	c.sniff(p[:n])
	return n, err
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if c.timeout > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	return c.Conn.Write(p)
}

// sniff walks the packet framing of b (length, code, data) to spot
// progress packets.
func (c *deadlineConn) sniff(b []byte) {
	for len(b) > 0 {
		switch {
		case c.lenHave < 4:
			k := copy(c.lenBuf[c.lenHave:], b)
			c.lenHave += k
			b = b[k:]
			if c.lenHave == 4 {
				c.skip = binary.BigEndian.Uint32(c.lenBuf[:])
				c.inBody = false
				if c.skip == 0 {
					c.lenHave = 0
				}
			}
		case !c.inBody:
			if b[0] == 'p' && c.progress != nil {
				c.progress()
			}
			c.inBody = true
			c.skip--
			b = b[1:]
			if c.skip == 0 {
				c.lenHave = 0
			}
		default:
			k := uint32(len(b))
			if k > c.skip {
				k = c.skip
			}
			c.skip -= k
			b = b[k:]
			if c.skip == 0 {
				c.lenHave = 0
			}
		}
	}
}

// dialer hands go-milter our deadlineConn and keeps it for the session.
type dialer struct {
	timeout  time.Duration
	progress func()
	conn     *deadlineConn
}

func (d *dialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, d.timeout)
	if err != nil {
		return nil, err
	}
	d.conn = &deadlineConn{Conn: c, timeout: d.timeout, progress: d.progress}
	return d.conn, nil
}

// maxPacket bounds what we read from a milter in one packet (go-milter's
// own reader has the same kind of limit).
const maxPacket = 1 << 20

// The go-milter client has no SMFIC_DATA command: writePacket and
// readReply speak it on the same connection (go-milter reads without
// buffering, so packets interleave cleanly).
func writePacket(w io.Writer, code byte, data []byte) error {
	buf := make([]byte, 5+len(data))
	binary.BigEndian.PutUint32(buf, uint32(len(data)+1))
	buf[4] = code
	copy(buf[5:], data)
	_, err := w.Write(buf)
	return err
}

// readReply reads one reply packet, skipping progress packets.
func readReply(r io.Reader) (*gomilter.Action, error) {
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > maxPacket {
			return nil, fmt.Errorf("milter: bad packet length %d", n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			return nil, err
		}
		switch gomilter.ActionCode(data[0]) {
		case 'p':
			continue
		case gomilter.ActAccept, gomilter.ActContinue, gomilter.ActDiscard, gomilter.ActReject, gomilter.ActTempFail:
			return &gomilter.Action{Code: gomilter.ActionCode(data[0])}, nil
		case gomilter.ActReplyCode:
			code, text, ok := splitReplyCode(string(trimNUL(data[1:])))
			if !ok {
				return nil, errors.New("milter: malformed reply code")
			}
			return &gomilter.Action{Code: gomilter.ActReplyCode, SMTPCode: code, SMTPText: text}, nil
		default:
			return nil, fmt.Errorf("milter: unexpected reply %q", data[0])
		}
	}
}

func trimNUL(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}
