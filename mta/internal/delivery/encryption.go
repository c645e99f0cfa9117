package delivery

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/posthorn/posthorn/mta/internal/header"
	"github.com/posthorn/posthorn/mta/internal/pluginhost"
	"github.com/posthorn/posthorn/mta/internal/policychain"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/sdk"
)

// Encryption is the outbound stage of the encryption policy chain: for
// each remote recipient the chain decides (rule, trigger), the plugins
// named as methods are asked in order whether they can handle the
// recipient, and the first that can transforms the message (sign/encrypt)
// or takes it over (divert). When none can and encryption is required,
// the recipient bounces with the reason; when a plugin that might have
// could not be asked (down, failing), the recipient is deferred. Nothing
// that needs encryption ever goes out without it. With a single method
// the plugin decides and transforms in one call (TransformDecide,
// protocol minor 6); a call that fails before its answers arrive defers
// every recipient that may use the method, opportunistic ones too (the
// plugin may have been encrypting for them).
type Encryption struct {
	Chain   *policychain.Chain
	Plugins *pluginhost.Host
	// SpoolDir holds transformed messages until they are delivered.
	SpoolDir string
	Logger   *slog.Logger
	// Queue records which plugin took a recipient over (pending its
	// confirmation through Host.Confirm).
	Queue interface {
		SetAttr(id, key, value string) error
	}

	mu       sync.Mutex
	inflight map[string]*inflight // queueID + "|" + plugin
	live     atomic.Pointer[policychain.Chain]
}

// SetChain replaces Chain for messages from now on (a reload).
func (e *Encryption) SetChain(c *policychain.Chain) { e.live.Store(c) }

func (e *Encryption) chain() *policychain.Chain {
	if c := e.live.Load(); c != nil {
		return c
	}
	return e.Chain
}

// inflight collects confirmations a plugin sends while its Transform call
// is still running (it may divert and confirm in one go).
type inflight struct {
	rcpts     map[string]bool
	confirmed map[string]Confirmation
}

// Confirmation is a plugin's word on a recipient it took over.
type Confirmation struct {
	Outcome, Reason string
}

// ConfirmInflight records a confirmation for a recipient of a Transform
// still running; false if there is none (the caller then looks at the
// queue).
func (e *Encryption) ConfirmInflight(queueID, plugin, rcpt string, c Confirmation) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.inflight[queueID+"|"+plugin]
	if f == nil || !f.rcpts[strings.ToLower(rcpt)] {
		return false
	}
	f.confirmed[strings.ToLower(rcpt)] = c
	return true
}

func (e *Encryption) begin(queueID, plugin string, env *queue.Envelope, group []int) (*inflight, func()) {
	f := &inflight{rcpts: map[string]bool{}, confirmed: map[string]Confirmation{}}
	for _, i := range group {
		f.rcpts[strings.ToLower(env.Recipients[i].Addr)] = true
	}
	key := queueID + "|" + plugin
	e.mu.Lock()
	if e.inflight == nil {
		e.inflight = map[string]*inflight{}
	}
	e.inflight[key] = f
	e.mu.Unlock()
	return f, func() {
		e.mu.Lock()
		delete(e.inflight, key)
		e.mu.Unlock()
	}
}

func (f *inflight) take(rcpt string, mu *sync.Mutex) (Confirmation, bool) {
	mu.Lock()
	defer mu.Unlock()
	c, ok := f.confirmed[strings.ToLower(rcpt)]
	return c, ok
}

// Output is a transformed message for some of the recipients.
type Output struct {
	Idx  []int
	Body Body
}

// Plan is what the stage decided for one message.
type Plan struct {
	// Plain recipients go out as they are (with the subject tag and the
	// trigger header removed), through PlainBody.
	Plain     []int
	PlainBody Body
	Outputs   []Output
	// Outcomes are final for this attempt (bounced, deferred, diverted).
	Outcomes map[int]Outcome
	cleanup  []string
	files    []*os.File // outputs kept as the plugin's memory files
}

// Close removes the spooled outputs.
func (p *Plan) Close() {
	for _, f := range p.cleanup {
		os.Remove(f)
	}
	for _, f := range p.files {
		f.Close()
	}
}

// AttrDiverted marks a recipient taken over by a plugin that will confirm
// its fate later: "divert.<index>" = plugin name.
func AttrDiverted(i int) string { return "divert." + strconv.Itoa(i) }

// Apply runs the chain for the remote recipients idx of env.
func (e *Encryption) Apply(ctx context.Context, env *queue.Envelope, idx []int, body Body) *Plan {
	plan := &Plan{Outcomes: map[int]Outcome{}}
	subject, headers, clean, err := readHeader(body)
	if err != nil {
		for _, i := range idx {
			plan.Outcomes[i] = Deferred("4.3.0", "x-posthorn; cannot read the queued message: "+errString(err))
		}
		return plan
	}
	chain := e.chain()
	trig := chain.TriggerHeader()
	plan.PlainBody = body
	if !clean || chain.MayStrip(headers, headers["Subject"]) {
		plan.PlainBody = stripTrigger(body, chain, trig)
	}

	decisions := map[int]policychain.Decision{}
	wants := map[string][]int{} // method -> recipients that might use it
	var methods []string
	generated := GeneratedByPlugin(env, headers)
	for _, i := range idx {
		d := chain.Decide(env.From, env.Recipients[i].Addr, subject, headers)
		if generated {
			d = chain.Unloop(d)
		}
		decisions[i] = d
		if d.Encrypt == policychain.Never {
			continue
		}
		for _, m := range d.Methods {
			if _, ok := wants[m]; !ok {
				methods = append(methods, m)
			}
			wants[m] = append(wants[m], i)
		}
	}
	senv := sdkEnvelope(env)
	answers := map[int]map[string]bool{}
	answered := func(m string, ans []sdk.Answer) {
		for k, a := range ans {
			if k < len(wants[m]) {
				i := wants[m][k]
				if answers[i] == nil {
					answers[i] = map[string]bool{}
				}
				answers[i][m] = a.CanHandle
			}
		}
	}
	// One method for every recipient that may be encrypted (the common
	// case): the plugin decides and transforms in one call (protocol
	// minor 6), not CanHandle first and Transform after.
	var one *decided
	if len(methods) == 1 {
		m := methods[0]
		d, err := e.decide(ctx, env, senv, m, wants[m], plan)
		switch {
		case err == nil:
			one = d
			answered(m, d.res.Answers)
			methods = nil
		case isNotCalled(err):
			// Down before the call: as an unanswered CanHandle below.
		default:
			// The call broke before the plugin's answers arrived: it
			// may have been encrypting. Never fall back to weaker
			// than asked: retry later.
			for _, i := range wants[m] {
				plan.Outcomes[i] = Deferred("4.7.0", fmt.Sprintf("x-posthorn; encryption method %s failed: %s", m, errString(err)))
			}
			methods = nil
		}
	}
	for _, m := range methods {
		rcpts := sdkRecipients(env, wants[m])
		ans, err := e.Plugins.CanHandle(ctx, m, senv, rcpts)
		if err != nil {
			e.Logger.Warn("encryption method could not be asked", "queue_id", env.ID, "method", m, "err", err)
			continue // missing answers count as "cannot" (and as temporary for required mail)
		}
		answered(m, ans)
	}
	groups := map[string][]int{}
	var order []string
	for _, i := range idx {
		if _, done := plan.Outcomes[i]; done {
			continue
		}
		d := decisions[i]
		c := policychain.ChooseDetail(d, answers[i])
		policychain.Audit(ctx, e.Logger, env.ID, d, c)
		switch {
		case c.Method != "":
			if _, ok := groups[c.Method]; !ok {
				order = append(order, c.Method)
			}
			groups[c.Method] = append(groups[c.Method], i)
		case c.OK:
			plan.Plain = append(plan.Plain, i)
		case c.Temporary:
			plan.Outcomes[i] = Deferred("4.7.0", "x-posthorn; "+c.Why)
		default:
			plan.Outcomes[i] = Failed("5.7.1", "x-posthorn; "+c.Why)
		}
	}
	for _, m := range order {
		if one != nil && m == one.method {
			e.useResult(env, m, groups[m], one.fl, one.res, plan)
			continue
		}
		e.transform(ctx, env, senv, m, groups[m], plan)
	}
	if one != nil {
		one.close()
	}
	e.signPlain(ctx, env, senv, decisions, plan)
	return plan
}

// decided is a TransformDecide call whose answers have arrived; its
// result is used once the policy chain has chosen (close it after).
type decided struct {
	method string
	res    *pluginhost.TransformResult
	fl     *inflight
	close  func()
}

// decide asks method for the recipients ask in one call: which it can
// handle, and the transformed messages for those.
func (e *Encryption) decide(ctx context.Context, env *queue.Envelope, senv *sdk.Envelope, method string, ask []int, plan *Plan) (*decided, error) {
	rc, err := plan.PlainBody()
	if err != nil {
		return nil, err
	}
	fl, done := e.begin(env.ID, method, env, ask)
	res, err := e.Plugins.TransformDecide(ctx, method, senv, sdkRecipients(env, ask), rc)
	if err != nil {
		done()
		rc.Close()
		return nil, err
	}
	return &decided{method: method, res: res, fl: fl, close: func() {
		res.Close()
		done()
		rc.Close()
	}}, nil
}

// isNotCalled: the plugin was not called (not running, unknown).
func isNotCalled(err error) bool {
	var pe *pluginhost.Error
	return errors.As(err, &pe) && pe.NotCalled
}

// signPlain offers recipients that go out unencrypted under a rule with
// sign = true to the rule's methods for a signature only (protocol minor
// 1); the first method that can sign for the sender does. A recipient
// nobody can sign for goes out as it is: signing is about integrity and
// about partners learning our certificate, never a reason to hold mail.
func (e *Encryption) signPlain(ctx context.Context, env *queue.Envelope, senv *sdk.Envelope, decisions map[int]policychain.Decision, plan *Plan) {
	want := map[int]bool{}
	var methods []string
	seen := map[string]bool{}
	for _, i := range plan.Plain {
		d := decisions[i]
		if !d.Sign {
			continue
		}
		want[i] = true
		for _, m := range d.Methods {
			if !seen[m] {
				seen[m] = true
				methods = append(methods, m)
			}
		}
	}
	if len(want) == 0 {
		return
	}
	sctx := sdk.WithSignOnly(ctx)
	for _, m := range methods {
		var ask []int
		for _, i := range plan.Plain {
			if want[i] && contains(decisions[i].Methods, m) {
				ask = append(ask, i)
			}
		}
		if len(ask) == 0 {
			continue
		}
		ans, err := e.Plugins.CanHandle(sctx, m, senv, sdkRecipients(env, ask))
		if err != nil {
			e.Logger.Warn("signing method could not be asked", "queue_id", env.ID, "method", m, "err", err)
			continue
		}
		var group []int
		for k, a := range ans {
			if k < len(ask) && a.CanHandle {
				group = append(group, ask[k])
			}
		}
		if len(group) == 0 {
			continue
		}
		sub := &Plan{Outcomes: map[int]Outcome{}, PlainBody: plan.PlainBody}
		e.transform(sctx, env, senv, m, group, sub)
		signed := map[int]bool{}
		for _, o := range sub.Outputs {
			for _, i := range o.Idx {
				signed[i] = true
			}
		}
		if len(signed) == 0 {
			e.Logger.Warn("signing failed; sending unsigned", "queue_id", env.ID, "method", m)
			sub.Close()
			continue
		}
		plan.Outputs = append(plan.Outputs, sub.Outputs...)
		plan.cleanup = append(plan.cleanup, sub.cleanup...)
		plan.files = append(plan.files, sub.files...)
		var rest []int
		for _, i := range plan.Plain {
			if signed[i] {
				delete(want, i)
				e.Logger.Info("signed without encryption", "queue_id", env.ID, "rcpt", env.Recipients[i].Addr, "method", m)
			} else {
				rest = append(rest, i)
			}
		}
		plan.Plain = rest
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (e *Encryption) transform(ctx context.Context, env *queue.Envelope, senv *sdk.Envelope, method string, group []int, plan *Plan) {
	fail := func(o Outcome) {
		for _, i := range group {
			plan.Outcomes[i] = o
		}
	}
	rc, err := plan.PlainBody()
	if err != nil {
		fail(Deferred("4.3.0", "x-posthorn; cannot read the queued message: "+errString(err)))
		return
	}
	defer rc.Close()
	fl, done := e.begin(env.ID, method, env, group)
	defer done()
	res, err := e.Plugins.Transform(ctx, method, senv, sdkRecipients(env, group), rc)
	if err != nil {
		// A plugin that fails is "cannot right now": defer, never send
		// the recipient a weaker message.
		fail(Deferred("4.7.0", fmt.Sprintf("x-posthorn; encryption method %s failed: %s", method, errString(err))))
		return
	}
	defer res.Close()
	e.useResult(env, method, group, fl, res, plan)
}

// useResult takes a Transform result for group into the plan.
func (e *Encryption) useResult(env *queue.Envelope, method string, group []int, fl *inflight, res *pluginhost.TransformResult, plan *Plan) {
	fail := func(o Outcome) {
		for _, i := range group {
			plan.Outcomes[i] = o
		}
	}
	byAddr := map[string]int{}
	for _, i := range group {
		byAddr[strings.ToLower(env.Recipients[i].Addr)] = i
	}
	switch res.Action {
	case sdk.OutboundDiverted:
		for _, i := range group {
			if c, ok := fl.take(env.Recipients[i].Addr, &e.mu); ok && res.Pending {
				// Confirmed while diverting.
				st, status := queue.Delivered, "2.0.0"
				if c.Outcome != "delivered" {
					st, status = queue.Failed, "5.0.0"
				}
				plan.Outcomes[i] = Outcome{State: st, Status: status, Diagnostic: "x-posthorn; " + method + ": " + c.Reason, RemoteMTA: method, diverted: method}
				continue
			}
			if res.Pending {
				if err := e.Queue.SetAttr(env.ID, AttrDiverted(i), method); err != nil {
					plan.Outcomes[i] = Deferred("4.3.0", "x-posthorn; cannot record the diversion: "+errString(err))
					continue
				}
				plan.Outcomes[i] = Outcome{State: queue.Pending, Status: "4.7.0", Diagnostic: "x-posthorn; taken over by " + method + ", awaiting its confirmation: " + res.Reason, diverted: method}
			} else {
				plan.Outcomes[i] = Outcome{State: queue.Delivered, Status: "2.0.0", Diagnostic: "x-posthorn; taken over by " + method + ": " + res.Reason, diverted: method}
			}
		}
		return
	case sdk.OutboundDeclined:
		fail(Deferred("4.7.0", fmt.Sprintf("x-posthorn; encryption method %s declined after accepting: %s", method, res.Reason)))
		return
	}
	var produced []Output
	var files []string
	var memfiles []*os.File
	for {
		out, err := res.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			for _, f := range files {
				os.Remove(f)
			}
			for _, f := range memfiles {
				f.Close()
			}
			fail(Deferred("4.7.0", fmt.Sprintf("x-posthorn; encryption method %s failed: %s", method, errString(err))))
			return
		}
		var o Output
		if f, size := out.TakeFile(); f != nil {
			// The plugin passed a sealed memory file (protocol minor 5):
			// it is the output, no copy needed.
			memfiles = append(memfiles, f)
			o.Body = SealedBody(f, size)
		} else {
			sp := &spill{dir: e.SpoolDir, buf: make([]byte, 0, min(memOutput, env.Size*3/2+4096))}
			_, err = io.Copy(sp, out.Body)
			if sp.f != nil {
				if cerr := sp.f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				if sp.f != nil {
					os.Remove(sp.f.Name())
				}
				for _, f := range files {
					os.Remove(f)
				}
				for _, f := range memfiles {
					f.Close()
				}
				fail(Deferred("4.3.0", "x-posthorn; cannot spool the transformed message: "+errString(err)))
				return
			}
			o.Body = sp.body()
			if sp.f != nil {
				files = append(files, sp.f.Name())
			}
		}
		for _, a := range out.Recipients {
			if i, ok := byAddr[strings.ToLower(a)]; ok {
				o.Idx = append(o.Idx, i)
			}
		}
		produced = append(produced, o)
	}
	plan.files = append(plan.files, memfiles...)
	plan.cleanup = append(plan.cleanup, files...)
	plan.Outputs = append(plan.Outputs, produced...)
}

// SealedBody reads an output the plugin passed as a sealed memory file:
// its bytes cannot change, every reader starts at 0 (ReadAt; the offset
// is shared with the plugin). Valid until the plan is closed. Its readers
// are remote.FileBody: an output in DATA form (base64 lines, as S/MIME
// and OpenPGP make them) goes out with sendfile.
func SealedBody(f *os.File, size int64) Body {
	s := &sealed{f: f, size: size}
	return func() (io.ReadCloser, error) {
		return &sealedReader{SectionReader: io.NewSectionReader(f, 0, size), s: s}, nil
	}
}

type sealed struct {
	f     *os.File
	size  int64
	once  sync.Once
	ready bool
}

// dataReady scans the output once (the plugin's word is not taken for it:
// a dot at a line start would end the DATA early).
func (s *sealed) dataReady() bool {
	s.once.Do(func() {
		s.ready, _ = queue.IsDataReady(io.NewSectionReader(s.f, 0, s.size))
	})
	return s.ready
}

type sealedReader struct {
	*io.SectionReader
	s *sealed
}

func (r *sealedReader) Close() error    { return nil }
func (r *sealedReader) DataReady() bool { return r.s.dataReady() }

// SendTo writes the rest of the output to w, handing w.ReadFrom a file
// (sendfile for a TCP connection): a descriptor of its own, opened through
// /proc, as the memory file's offset is shared with the plugin; without
// /proc, through the reader.
func (r *sealedReader) SendTo(w io.ReaderFrom) (int64, error) {
	g, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(r.s.f.Fd())))
	if err != nil {
		// No /proc: copied through the reader (ReadAt), never through
		// the shared offset, which another delivery may be using.
		pos, _ := r.Seek(0, io.SeekCurrent)
		n, err := w.ReadFrom(io.NewSectionReader(r.s.f, pos, r.Size()-pos))
		r.Seek(pos+n, io.SeekStart)
		return n, err
	}
	defer g.Close()
	return queue.SendRest(w, r.SectionReader, g, 0)
}

// memOutput is the size up to which a transformed message stays in memory
// until it is delivered; a larger one goes to a file in the spool
// directory. Creating, filling and removing a file for each output cost
// the daemon about 2 ms of CPU per 100 KB S/MIME message (issue 19.4). An
// output is redone from the queued message after a crash either way.
const memOutput = 512 << 10

// spill collects an output: in memory up to memOutput bytes, beyond in a
// new file of dir (f, not closed by spill).
type spill struct {
	dir string
	buf []byte
	f   *os.File
}

func (s *spill) Write(p []byte) (int, error) {
	if s.f == nil {
		if len(s.buf)+len(p) <= memOutput {
			s.buf = append(s.buf, p...)
			return len(p), nil
		}
		f, err := os.CreateTemp(s.dir, "out-*")
		if err != nil {
			return 0, err
		}
		s.f = f
		if _, err := f.Write(s.buf); err != nil {
			return 0, err
		}
		s.buf = nil
	}
	return s.f.Write(p)
}

// body reads the output back, as often as asked.
func (s *spill) body() Body {
	if s.f != nil {
		name := s.f.Name()
		return func() (io.ReadCloser, error) { return os.Open(name) }
	}
	b := s.buf
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// ClientPlugin is the ClientAddr of a message a plugin submitted
// (Host.Submit).
const ClientPlugin = "plugin"

// GeneratedByPlugin reports whether a plugin submitted the message and
// marked it as generated automatically (Auto-Submitted other than "no",
// RFC 3834), like the notify plugin's notifications. Such mail is never
// handed to a web mailbox (policychain.Chain.Unloop): the web mailbox
// would keep its own notification and notify again, endlessly. Mail from
// SMTP clients never counts, whatever its header says.
func GeneratedByPlugin(env *queue.Envelope, headers map[string][]string) bool {
	if env.ClientAddr != ClientPlugin {
		return false
	}
	for k, vs := range headers {
		if !strings.EqualFold(k, "Auto-Submitted") {
			continue
		}
		for _, v := range vs {
			// "auto-generated", "auto-replied", "auto-notified" with
			// optional parameters; "no" means written by a person.
			kw, _, _ := strings.Cut(v, ";")
			if kw = strings.ToLower(strings.TrimSpace(kw)); kw != "" && kw != "no" {
				return true
			}
		}
	}
	return false
}

func sdkEnvelope(env *queue.Envelope) *sdk.Envelope {
	e := &sdk.Envelope{ID: env.ID, MailFrom: env.From, ClientAddr: env.ClientAddr, Helo: env.ClientHelo,
		AuthUser: env.AuthUser, Size: env.Size, SMTPUTF8: env.SMTPUTF8}
	for _, r := range env.Recipients {
		e.Recipients = append(e.Recipients, sdk.Recipient{Address: r.Addr})
	}
	return e
}

func sdkRecipients(env *queue.Envelope, idx []int) []sdk.Recipient {
	out := make([]sdk.Recipient, len(idx))
	for k, i := range idx {
		out[k] = sdk.Recipient{Address: env.Recipients[i].Addr}
	}
	return out
}

// readHeader reads the message header: the Subject and all fields.
func readHeader(body Body) (subject string, fields map[string][]string, clean bool, err error) {
	rc, err := body()
	if err != nil {
		return "", nil, false, err
	}
	defer rc.Close()
	h, err := textproto.NewReader(bufio.NewReader(io.LimitReader(rc, 1<<20))).ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) && len(h) == 0 {
		return "", nil, false, err
	}
	// clean: the whole header parsed, so fields names every field in it.
	return h.Get("Subject"), h, err == nil, nil
}

// stripTrigger removes the subject tag and the trigger header: they were
// instructions to us, not part of the mail.
func stripTrigger(body Body, chain *policychain.Chain, trigger string) Body {
	return func() (io.ReadCloser, error) {
		rc, err := body()
		if err != nil {
			return nil, err
		}
		pr, pw := io.Pipe()
		go func() {
			defer rc.Close()
			pw.CloseWithError(header.Rewrite(rc, pw, func(name, value string) (string, bool) {
				switch {
				case trigger != "" && strings.EqualFold(name, trigger):
					return "", false
				case strings.EqualFold(name, "Subject"):
					return chain.StripTag(value), true
				}
				return value, true
			}))
		}()
		return pr, nil
	}
}
