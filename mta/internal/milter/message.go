package milter

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"

	gomilter "github.com/emersion/go-milter"

	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/queue"
)

// Result is what the milters decided about a message they let through.
type Result struct {
	// Discard names the milter that asked to drop the message: the
	// client gets its 250, nothing is queued.
	Discard string
	// Quarantine is "milter: reason" when a milter asked to hold the
	// message; it is queued on hold.
	Quarantine string
	// From is the new envelope sender when a milter changed it.
	From *string
	// AddRcpts and DelRcpts are recipients added and removed.
	AddRcpts, DelRcpts []string
}

// Content shows the message in f (headers and body as received) to every
// milter still in the transaction, one after the other, each on the
// message as the previous one left it. It returns the file to queue (f or
// a new file in tmpDir when a milter changed the content; the caller
// removes both), what the milters decided, or a *Reply refusing the
// message.
func (s *Session) Content(f *os.File, tmpDir string) (*os.File, *Result, error) {
	return s.content(f, tmpDir, false)
}

// Rescan shows the message in f again, as a new transaction, to the
// milters that have rescan_after_plugins set: the inbound plugins changed
// it (e.g. decrypted it).
func (s *Session) Rescan(f *os.File, tmpDir string) (*os.File, *Result, error) {
	return s.content(f, tmpDir, true)
}

func (s *Session) content(f *os.File, tmpDir string, rescan bool) (*os.File, *Result, error) {
	s.busy.Lock()
	defer s.busy.Unlock()
	if s.closed.Load() {
		return f, nil, tempfailReply("")
	}
	res := &Result{}
	if s.discard != "" && !rescan {
		res.Discard = s.discard
		return f, res, nil
	}
	for _, mc := range s.conns {
		if rescan {
			if !mc.m.cfg.RescanAfterPlugins || mc.st == stDone || mc.st == stFailed {
				continue
			}
			if err := s.mail(mc); err != nil {
				return f, nil, err
			}
			for _, r := range s.rcpts {
				if err := s.rcpt(mc, r.addr, r.args); err != nil {
					return f, nil, err
				}
			}
			if s.discard != "" {
				res.Discard = s.discard
				return f, res, nil
			}
		}
		if mc.st == stFailed {
			return f, nil, tempfailReply("")
		}
		if mc.st != stOpen || !mc.inTx {
			continue
		}
		nf, err := s.message(mc, f, tmpDir, res)
		if nf != f && nf != nil {
			if f != nil && f != nf {
				f.Close()
				os.Remove(f.Name())
			}
			f = nf
		}
		if err != nil {
			return f, nil, err
		}
		if res.Discard != "" {
			return f, res, nil
		}
	}
	return f, res, nil
}

// message runs DATA, the headers, the body and the end of message
// against one milter and applies its modifications.
func (s *Session) message(mc *mconn, f *os.File, tmpDir string, res *Result) (*os.File, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return f, err
	}
	cfg := mc.m.cfg
	// DATA, which go-milter lacks.
	act, err := s.stage(mc, "data", func() (*gomilter.Action, error) {
		if mc.cs.ProtocolOption(gomilter.OptNoData) {
			return &gomilter.Action{Code: gomilter.ActContinue}, nil
		}
		if err := mc.cs.Macros(gomilter.CodeData, pairs("i", s.queueID)...); err != nil {
			return nil, err
		}
		if err := writePacket(mc.dc, byte(gomilter.CodeData), nil); err != nil {
			return nil, err
		}
		if mc.cs.ProtocolOption(gomilter.OptNoDataReply) {
			return &gomilter.Action{Code: gomilter.ActContinue}, nil
		}
		return readReply(mc.dc)
	})
	if err != nil {
		return f, s.fail(mc, "data", err)
	}
	if err := s.verdict(mc, "data", act); err != nil || mc.st != stOpen {
		return f, err
	}

	mc.dc.timeout = cfg.ContentTimeout.D()
	defer func() { mc.dc.timeout = cfg.CommandTimeout.D() }()
	br := bufio.NewReaderSize(f, 64<<10)
	fields, sep, err := readHeader(br)
	if err != nil {
		return f, err // our own file: a local problem
	}
	bodyStart := int64(len(sep))
	for _, fl := range fields {
		bodyStart += int64(len(fl.raw))
	}
	var mods []gomilter.ModifyAction
	act, err = s.stage(mc, "content", func() (*gomilter.Action, error) {
		for _, fl := range fields {
			a, err := mc.cs.HeaderField(fl.name, fl.value())
			if err != nil || a.Code != gomilter.ActContinue {
				return a, err
			}
		}
		if err := mc.cs.Macros(gomilter.CodeEOH, pairs("i", s.queueID)...); err != nil {
			return nil, err
		}
		a, err := mc.cs.HeaderEnd()
		if err != nil || a.Code != gomilter.ActContinue {
			return a, err
		}
		buf := make([]byte, gomilter.MaxBodyChunk)
		for {
			n, rerr := io.ReadFull(br, buf)
			if n > 0 {
				a, err := mc.cs.BodyChunk(buf[:n])
				if err != nil || a.Code != gomilter.ActContinue {
					return a, err
				}
			}
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				break
			}
			if rerr != nil {
				return nil, &localError{rerr}
			}
		}
		if err := mc.cs.Macros(gomilter.CodeEOB, pairs("i", s.queueID)...); err != nil {
			return nil, err
		}
		m, a, err := mc.cs.End()
		mods = m
		return a, err
	})
	if err != nil {
		var le *localError
		if errors.As(err, &le) {
			return f, le.err
		}
		return f, s.fail(mc, "content", err)
	}
	mc.inTx = false
	if act.Code == gomilter.ActAccept || act.Code == gomilter.ActContinue {
		// The message is done for this milter either way.
		metrics.MilterActions.WithLabelValues(mc.name(), "accept").Inc()
		mc.st = stSkipMsg
	} else if err := s.verdict(mc, "content", act); err != nil || res.Discard != "" || s.discard != "" {
		if s.discard != "" {
			res.Discard = s.discard
		}
		return f, err
	}
	if len(mods) == 0 {
		return f, nil
	}
	return s.apply(mc, f, fields, sep, bodyStart, mods, tmpDir, res)
}

// localError marks a failure on our side (reading the spooled message),
// which is not the milter's fault.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }

// apply carries out a milter's modifications: envelope changes and
// quarantine go into res, header and body changes into a new file.
func (s *Session) apply(mc *mconn, f *os.File, fields []field, sep string, bodyStart int64,
	mods []gomilter.ModifyAction, tmpDir string, res *Result) (*os.File, error) {
	name := mc.name()
	count := func(a string) { metrics.MilterActions.WithLabelValues(name, a).Inc() }
	ed := &editor{fields: append([]field(nil), fields...)}
	headersChanged := false
	var body *bytes.Buffer
	for _, m := range mods {
		switch m.Code {
		case gomilter.ActAddHeader, gomilter.ActInsertHeader, gomilter.ActChangeHeader:
			if !validName(m.HeaderName) {
				s.log.Warn("milter sent an invalid header field name; ignored", "milter", name, "name", m.HeaderName, "queue_id", s.queueID)
				continue
			}
			headersChanged = true
			switch m.Code {
			case gomilter.ActAddHeader:
				count("add_header")
				ed.add(m.HeaderName, m.HeaderValue)
			case gomilter.ActInsertHeader:
				count("insert_header")
				ed.insert(int(m.HeaderIndex), m.HeaderName, m.HeaderValue)
			default:
				if ed.change(int(m.HeaderIndex), m.HeaderName, m.HeaderValue) {
					count("delete_header")
				} else {
					count("change_header")
				}
			}
			s.log.Debug("milter header change", "milter", name, "action", string(rune(m.Code)), "name", m.HeaderName, "index", m.HeaderIndex, "queue_id", s.queueID)
		case gomilter.ActReplBody:
			if body == nil {
				count("replace_body")
				body = &bytes.Buffer{}
			}
			body.Write(m.Body)
		case gomilter.ActQuarantine:
			count("quarantine")
			res.Quarantine = name + ": " + cleanText(m.Reason)
			s.log.Info("milter quarantines the message", "milter", name, "reason", cleanText(m.Reason), "queue_id", s.queueID)
		case gomilter.ActChangeFrom:
			addr, ok := envAddr(m.From)
			if !ok {
				s.log.Warn("milter sent an invalid sender; ignored", "milter", name, "from", m.From, "queue_id", s.queueID)
				continue
			}
			count("change_from")
			res.From = &addr
			s.log.Info("milter changed the sender", "milter", name, "from", addr, "queue_id", s.queueID)
		case gomilter.ActAddRcpt, gomilter.ActDelRcpt:
			addr, ok := envAddr(m.Rcpt)
			if !ok || addr == "" {
				s.log.Warn("milter sent an invalid recipient; ignored", "milter", name, "rcpt", m.Rcpt, "queue_id", s.queueID)
				continue
			}
			if m.Code == gomilter.ActAddRcpt {
				count("add_rcpt")
				res.AddRcpts = append(res.AddRcpts, addr)
			} else {
				count("delete_rcpt")
				res.DelRcpts = append(res.DelRcpts, addr)
			}
			s.log.Info("milter changed the recipients", "milter", name, "action", string(rune(m.Code)), "rcpt", addr, "queue_id", s.queueID)
		}
	}
	if !headersChanged && body == nil {
		return f, nil
	}
	nf, err := os.CreateTemp(tmpDir, "milter-*")
	if err != nil {
		return f, err
	}
	err = func() error {
		if err := ed.writeTo(nf); err != nil {
			return err
		}
		if sep == "" {
			sep = "\r\n"
		}
		if _, err := io.WriteString(nf, sep); err != nil {
			return err
		}
		if body != nil {
			cw := &crlfWriter{w: nf}
			if _, err := cw.Write(body.Bytes()); err != nil {
				return err
			}
			return cw.Close()
		}
		if _, err := f.Seek(bodyStart, io.SeekStart); err != nil {
			return err
		}
		_, err := io.Copy(nf, f)
		return err
	}()
	if err == nil {
		_, err = nf.Seek(0, io.SeekStart)
	}
	if err != nil {
		nf.Close()
		os.Remove(nf.Name())
		return f, err
	}
	return nf, nil
}

// envAddr takes the address out of "<addr>" and checks it can go into an
// envelope.
func envAddr(s string) (string, bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "<")
	s = strings.TrimSuffix(s, ">")
	if len(s) > 320 {
		return "", false
	}
	for _, c := range s {
		if c <= ' ' || c == 0x7f || c == '<' || c == '>' {
			return "", false
		}
	}
	if s != "" && (!strings.Contains(s, "@") || strings.HasPrefix(s, "@") || strings.HasSuffix(s, "@")) {
		return "", false
	}
	return s, true
}

func cleanText(s string) string {
	s = strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f {
			return ' '
		}
		return c
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// AttrQuarantine is the queue attribute that says why a message is held.
const AttrQuarantine = "milter.quarantine"

// Apply carries the decision over to the queue envelope: a new sender,
// removed and added recipients (added ones go through expand, e.g. alias
// expansion), and the hold for quarantine. It fails when no recipient is
// left.
func (r *Result) Apply(env *queue.Envelope, expand func([]*queue.Recipient) ([]*queue.Recipient, error)) error {
	if r == nil {
		return nil
	}
	if r.From != nil {
		env.From = *r.From
	}
	if len(r.DelRcpts) > 0 {
		var keep []*queue.Recipient
		for _, rc := range env.Recipients {
			drop := false
			for _, d := range r.DelRcpts {
				if strings.EqualFold(rc.Addr, d) || strings.EqualFold(rc.ORcpt, "rfc822;"+d) {
					drop = true
				}
			}
			if !drop {
				keep = append(keep, rc)
			}
		}
		env.Recipients = keep
	}
	if len(r.AddRcpts) > 0 {
		var add []*queue.Recipient
		for _, a := range r.AddRcpts {
			add = append(add, &queue.Recipient{Addr: a})
		}
		add, err := expand(add)
		if err != nil {
			return err
		}
		env.Recipients = append(env.Recipients, add...)
	}
	if len(env.Recipients) == 0 {
		return ErrNoRecipients
	}
	if r.Quarantine != "" {
		env.Held = true
		if env.Attrs == nil {
			env.Attrs = map[string]string{}
		}
		env.Attrs[AttrQuarantine] = r.Quarantine
	}
	return nil
}

// ErrNoRecipients is Apply's answer when milters removed every recipient:
// the message is dropped as if discarded.
var ErrNoRecipients = errors.New("milters removed every recipient")
