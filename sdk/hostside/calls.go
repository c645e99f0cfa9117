package hostside

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/internal/bodyfile"
	"github.com/posthorn/posthorn/sdk/internal/chunk"
	pb "github.com/posthorn/posthorn/sdk/proto/posthorn/plugin/v1"
)

// bodyCall streams a body to the plugin in its own goroutine while the
// caller reads the plugin's answer.
type bodyCall struct {
	cancel   context.CancelFunc
	sendDone chan struct{}
	sendErr  error // our side failed (body unreadable, too large); read after sendDone
	once     sync.Once
}

// startSend sends body in chunks, then half-closes. On a failure of our
// own it cancels the call, so the plugin sees an aborted stream, never a
// truncated body that looks complete.
func startSend(cancel context.CancelFunc, body io.Reader, limit int64, send func([]byte) error, closeSend func() error) *bodyCall {
	bc := &bodyCall{cancel: cancel, sendDone: make(chan struct{})}
	go func() {
		defer close(bc.sendDone)
		_, err := chunk.Send(body, limit, sdk.ErrMessageTooLarge, send)
		var se *chunk.SendError
		switch {
		case err == nil:
			_ = closeSend()
		case errors.As(err, &se):
			// The stream ended; the reason comes from the receive side.
		default:
			bc.sendErr = err
			cancel()
		}
	}()
	return bc
}

// endedCall is a bodyCall that never sent anything.
func endedCall() *bodyCall {
	bc := &bodyCall{cancel: func() {}, sendDone: make(chan struct{})}
	close(bc.sendDone)
	return bc
}

// finish ends the call and waits for the sender. It returns the sender's
// own failure, if any. Body readers must not block forever: finish waits
// for the current Read to return.
func (bc *bodyCall) finish() error {
	bc.once.Do(bc.cancel)
	<-bc.sendDone
	return bc.sendErr
}

// fail ends the call after a receive error and picks the better error.
func (c *Client) fail(ctx context.Context, method string, bc *bodyCall, err error) error {
	if serr := bc.finish(); serr != nil {
		err = serr
	}
	return c.wrap(ctx, method, err)
}

// Inspect runs the plugin's inbound hook on a received message. body is
// read in a goroutine until the plugin answers; Inspect does not return
// before that goroutine is done with body.
//
// For sdk.ActionReplace the new message is returned as a ReadCloser, which
// the caller must read and Close; it fails with sdk.ErrMessageTooLarge
// beyond Options.MaxMessageSize. For every other verdict it is nil. The
// returned Verdict has been validated (codes, header syntax).
func (c *Client) Inspect(ctx context.Context, env *sdk.Envelope, body io.Reader) (sdk.Verdict, io.ReadCloser, error) {
	const method = "Inspect"
	if body == nil {
		body = strings.NewReader("")
	}
	cctx, cancel := context.WithCancel(ctx)
	stream, err := c.inbound.Inspect(cctx)
	if err != nil {
		cancel()
		return sdk.Verdict{}, nil, c.wrap(ctx, method, err)
	}
	// A failed send shows up as the receive error below.
	_ = stream.Send(&pb.InspectRequest{Msg: &pb.InspectRequest_Envelope{Envelope: envelopeToPB(env)}})
	bc := startSend(cancel, body, c.limitIn(), func(b []byte) error {
		return stream.Send(&pb.InspectRequest{Msg: &pb.InspectRequest_Chunk{Chunk: b}})
	}, stream.CloseSend)

	resp, err := stream.Recv()
	if err != nil {
		return sdk.Verdict{}, nil, c.fail(ctx, method, bc, err)
	}
	pv := resp.GetVerdict()
	if pv == nil {
		return sdk.Verdict{}, nil, c.fail(ctx, method, bc, fmt.Errorf("%w: body chunk before verdict", ErrProtocol))
	}
	v, err := verdictFromPB(pv)
	if err != nil {
		return sdk.Verdict{}, nil, c.fail(ctx, method, bc, err)
	}
	if v.Action != sdk.ActionReplace {
		bc.finish()
		return v, nil, nil
	}
	rd := chunk.NewReader(func() ([]byte, error) {
		m, err := stream.Recv()
		if err == io.EOF {
			return nil, io.EOF
		}
		if err != nil {
			return nil, c.fail(ctx, method, bc, err)
		}
		ch, ok := m.GetMsg().(*pb.InspectResponse_Chunk)
		if !ok {
			return nil, c.fail(ctx, method, bc, fmt.Errorf("%w: second verdict", ErrProtocol))
		}
		return ch.Chunk, nil
	}, c.opts.MaxMessageSize, &Error{Plugin: c.name, Method: method, Err: sdk.ErrMessageTooLarge})
	return v, &replacement{c: c, ctx: ctx, rd: rd, bc: bc}, nil
}

type replacement struct {
	c   *Client
	ctx context.Context
	rd  *chunk.Reader
	bc  *bodyCall
}

func (r *replacement) Read(p []byte) (int, error) {
	n, err := r.rd.Read(p)
	if err != nil && err != io.EOF {
		err = r.c.wrap(r.ctx, "Inspect", err)
	}
	return n, err
}

// Close ends the call; reading stops.
func (r *replacement) Close() error {
	r.bc.finish()
	return nil
}

// CanHandle asks which recipients the plugin can handle. The answers come
// in the order of rcpts, one per recipient.
func (c *Client) CanHandle(ctx context.Context, env *sdk.Envelope, rcpts []sdk.Recipient) ([]sdk.Answer, error) {
	const method = "CanHandle"
	resp, err := c.outbound.CanHandle(ctx, &pb.CanHandleRequest{Envelope: envelopeToPB(env), Recipients: recipientsToPB(rcpts), Purpose: purposeOf(ctx)})
	if err != nil {
		return nil, c.wrap(ctx, method, err)
	}
	as := resp.GetAnswers()
	if len(as) != len(rcpts) {
		return nil, c.wrap(ctx, method, fmt.Errorf("%w: %d answers for %d recipients", ErrProtocol, len(as), len(rcpts)))
	}
	out := make([]sdk.Answer, len(as))
	for i, a := range as {
		if a.GetRecipient() != rcpts[i].Address {
			return nil, c.wrap(ctx, method, fmt.Errorf("%w: answer %d is for %q, not %q", ErrProtocol, i, a.GetRecipient(), rcpts[i].Address))
		}
		out[i] = sdk.Answer{Recipient: a.GetRecipient(), CanHandle: a.GetCanHandle(), Reason: a.GetReason()}
	}
	return out, nil
}

// Output is one message produced by Transform.
type Output struct {
	// Recipients of this message: a subset of the group.
	Recipients []string
	// Body streams the message. It is valid until the next call of Next or
	// Close; an error mid-stream is an *Error.
	Body io.Reader

	r    *TransformResult
	file *os.File
	sr   *io.SectionReader // Body's reader of file
	size int64
}

// TakeFile returns the output as the sealed memory file it came in
// (protocol minor 5: checked to be sealed, of its size, within
// Options.MaxMessageSize) and its size, and hands it over: the caller
// closes it, and it stays valid after Next and Close. Read it with ReadAt
// (io.NewSectionReader): its offset is shared with the plugin. nil for an
// output streamed in chunks, and after Body was read from.
func (o *Output) TakeFile() (*os.File, int64) {
	if o.file == nil || o.r.file != o.file {
		return nil, 0
	}
	if pos, _ := o.sr.Seek(0, io.SeekCurrent); pos != 0 {
		return nil, 0
	}
	o.r.file = nil
	return o.file, o.size
}

// TransformResult is the plugin's answer to Transform. Always Close it.
type TransformResult struct {
	Action  sdk.OutboundAction
	Pending bool   // Diverted: keep the recipients pending until Confirm
	Reason  string // Diverted, Declined: why
	// Answers (TransformDecide only): the plugin's CanHandle answer for
	// every recipient of the group, in order. Action, the outputs and a
	// diversion are about the recipients answered CanHandle only.
	Answers []sdk.Answer

	c       *Client
	ctx     context.Context
	bc      *bodyCall
	recv    func() (*pb.TransformResponse, error)
	peek    *pb.TransformResponse
	ended   bool
	cov     map[string]bool
	outputs int
	seen    int
	cur     *chunk.Reader
	err     error
	// byFile: the body went to the plugin as a file, so outputs may come
	// back as files; file is the current such output until taken.
	byFile bool
	token  uint64 // the body's; outputs follow under bodyfile.OutputToken
	file   *os.File
	// discarded: the files of unreceived outputs were given up.
	discarded bool
}

// Transform hands the plugin a queued message for a group of recipients.
// body is read in a goroutine until the plugin has answered (for
// Transformed: until Close or the last output).
//
// For sdk.OutboundTransformed call Next until io.EOF to get the new
// messages; each must be consumed (or skipped) before the next. The host
// side checks that the outputs cover every recipient of the group exactly
// once and fails with ErrProtocol otherwise.
func (c *Client) Transform(ctx context.Context, env *sdk.Envelope, group []sdk.Recipient, body io.Reader) (*TransformResult, error) {
	return c.transform(ctx, env, group, body, false)
}

// TransformDecide is CanHandle and Transform in one: the plugin decides
// for every recipient of group (TransformResult.Answers) and transforms
// for those it can handle; with none, the Action is Declined. A plugin of
// protocol minor 6 or later does both in one call (TransformStart.decide);
// an older one is asked CanHandle first, then Transform for those it can
// handle. Before its answers arrive nothing is known about any recipient:
// an error from TransformDecide says nothing about what the plugin could
// handle.
func (c *Client) TransformDecide(ctx context.Context, env *sdk.Envelope, group []sdk.Recipient, body io.Reader) (*TransformResult, error) {
	c.mu.Lock()
	decides := c.info != nil && c.info.ProtocolMinor >= 6 && !c.opts.NoDecide
	c.mu.Unlock()
	if decides {
		return c.transform(ctx, env, group, body, true)
	}
	answers, err := c.CanHandle(ctx, env, group)
	if err != nil {
		return nil, err
	}
	var can []sdk.Recipient
	for i, a := range answers {
		if a.CanHandle {
			can = append(can, group[i])
		}
	}
	if len(can) == 0 {
		return &TransformResult{Action: sdk.OutboundDeclined, Reason: "no recipient can be handled", Answers: answers, ended: true, bc: endedCall()}, nil
	}
	r, err := c.transform(ctx, env, can, body, false)
	if err != nil {
		return nil, err
	}
	r.Answers = answers
	return r, nil
}

func (c *Client) transform(ctx context.Context, env *sdk.Envelope, group []sdk.Recipient, body io.Reader, decide bool) (*TransformResult, error) {
	const method = "Transform"
	if len(group) == 0 {
		return nil, &Error{Plugin: c.name, Method: method, Err: errors.New("empty recipient group")}
	}
	if body == nil {
		body = strings.NewReader("")
	}
	cctx, cancel := context.WithCancel(ctx)
	stream, err := c.outbound.Transform(cctx)
	if err != nil {
		cancel()
		return nil, c.wrap(ctx, method, err)
	}
	start := &pb.TransformStart{
		Envelope:   envelopeToPB(env),
		Recipients: recipientsToPB(group),
		Purpose:    purposeOf(ctx),
		Decide:     decide,
	}
	byFile := c.bodyFiles.Load()
	var token uint64
	if byFile {
		// Minor 5: the body as a sealed memory file; no chunks follow.
		t, size, err := c.sendBodyFile(ctx, body)
		token = t
		if err != nil {
			cancel()
			return nil, c.wrap(ctx, method, err)
		}
		start.BodyFile, start.BodySize = token, uint64(size)
		body = strings.NewReader("")
	}
	_ = stream.Send(&pb.TransformRequest{Msg: &pb.TransformRequest_Start{Start: start}})
	bc := startSend(cancel, body, c.limitIn(), func(b []byte) error {
		return stream.Send(&pb.TransformRequest{Msg: &pb.TransformRequest_Chunk{Chunk: b}})
	}, stream.CloseSend)

	resp, err := stream.Recv()
	if err != nil {
		return nil, c.fail(ctx, method, bc, err)
	}
	pr := resp.GetResult()
	if pr == nil {
		return nil, c.fail(ctx, method, bc, fmt.Errorf("%w: output before result", ErrProtocol))
	}
	r := &TransformResult{
		Action:  outboundActionFromPB(pr.GetAction()),
		Pending: pr.GetPending(),
		Reason:  pr.GetReason(),
		c:       c,
		ctx:     ctx,
		bc:      bc,
		recv:    stream.Recv,
		outputs: int(pr.GetOutputs()),
		byFile:  byFile,
		token:   token,
	}
	if decide {
		// Minor 6: the answers, one per recipient in order; the rest of
		// the result is about those answered yes.
		pa := pr.GetAnswers()
		if len(pa) != len(group) {
			return nil, c.fail(ctx, method, bc, fmt.Errorf("%w: %d answers for %d recipients", ErrProtocol, len(pa), len(group)))
		}
		var can []sdk.Recipient
		for i, a := range pa {
			if a.GetRecipient() != group[i].Address {
				return nil, c.fail(ctx, method, bc, fmt.Errorf("%w: answer %d is for %q, not %q", ErrProtocol, i, a.GetRecipient(), group[i].Address))
			}
			r.Answers = append(r.Answers, sdk.Answer{Recipient: a.GetRecipient(), CanHandle: a.GetCanHandle(), Reason: a.GetReason()})
			if a.GetCanHandle() {
				can = append(can, group[i])
			}
		}
		if len(can) == 0 && r.Action != sdk.OutboundDeclined {
			return nil, c.fail(ctx, method, bc, fmt.Errorf("%w: %v for a group it can handle none of", ErrProtocol, r.Action))
		}
		group = can
	} else if len(pr.GetAnswers()) > 0 {
		return nil, c.fail(ctx, method, bc, fmt.Errorf("%w: answers to a Transform that did not ask", ErrProtocol))
	}
	switch r.Action {
	case sdk.OutboundDiverted, sdk.OutboundDeclined:
		bc.finish()
		r.ended = true
		return r, nil
	case sdk.OutboundTransformed:
		if r.outputs == 0 {
			return nil, c.fail(ctx, method, bc, fmt.Errorf("%w: transformed without outputs", ErrProtocol))
		}
		r.cov = make(map[string]bool, len(group))
		for _, g := range group {
			r.cov[g.Address] = false
		}
		return r, nil
	}
	return nil, c.fail(ctx, method, bc, fmt.Errorf("%w: unknown result action %v", ErrProtocol, pr.GetAction()))
}

func (r *TransformResult) next() (*pb.TransformResponse, error) {
	if m := r.peek; m != nil {
		r.peek = nil
		return m, nil
	}
	if r.ended {
		return nil, io.EOF
	}
	m, err := r.recv()
	if err == io.EOF {
		r.ended = true
	}
	return m, err
}

// failWith ends the call and remembers the error for every later call.
func (r *TransformResult) failWith(err error) error {
	r.discardRest()
	if r.err == nil {
		r.err = r.c.fail(r.ctx, "Transform", r.bc, err)
	}
	return r.err
}

// Next returns the next output message, io.EOF after the last one (and
// always for Diverted and Declined).
func (r *TransformResult) Next() (*Output, error) {
	if r.err != nil {
		return nil, r.err
	}
	r.closeFile()
	if r.cur != nil {
		if err := r.cur.Drain(); err != nil {
			return nil, r.failWith(err)
		}
		r.cur = nil
	}
	if r.Action != sdk.OutboundTransformed {
		return nil, io.EOF
	}
	m, err := r.next()
	if err == io.EOF {
		if r.seen != r.outputs {
			return nil, r.failWith(fmt.Errorf("%w: %d outputs announced, %d sent", ErrProtocol, r.outputs, r.seen))
		}
		for a, ok := range r.cov {
			if !ok {
				return nil, r.failWith(fmt.Errorf("%w: recipient %q is in no output", ErrProtocol, a))
			}
		}
		r.bc.finish()
		r.err = io.EOF
		return nil, io.EOF
	}
	if err != nil {
		return nil, r.failWith(err)
	}
	hdr := m.GetOutput()
	if hdr == nil {
		return nil, r.failWith(fmt.Errorf("%w: expected an output header", ErrProtocol))
	}
	rcpts := hdr.GetRecipients()
	if len(rcpts) == 0 {
		return nil, r.failWith(fmt.Errorf("%w: output without recipients", ErrProtocol))
	}
	for _, a := range rcpts {
		seen, ok := r.cov[a]
		switch {
		case !ok:
			return nil, r.failWith(fmt.Errorf("%w: output for %q, who is not in the group", ErrProtocol, a))
		case seen:
			return nil, r.failWith(fmt.Errorf("%w: recipient %q in two outputs", ErrProtocol, a))
		}
		r.cov[a] = true
	}
	r.seen++
	if token := hdr.GetBodyFile(); token != 0 {
		if !r.byFile {
			return nil, r.failWith(fmt.Errorf("%w: output as a body file, but the body went in chunks", ErrProtocol))
		}
		if want := bodyfile.OutputToken(r.token, r.seen-1); token != want {
			return nil, r.failWith(fmt.Errorf("%w: output %d under body file token %016x, want %016x", ErrProtocol, r.seen-1, token, want))
		}
		f, size, err := r.c.takeBodyFile(r.ctx, token, hdr.GetBodySize())
		if err != nil {
			return nil, r.failWith(err)
		}
		r.file = f
		sr := bodyfile.Reader(f, size)
		return &Output{Recipients: rcpts, Body: sr, r: r, file: f, sr: sr, size: size}, nil
	}
	r.cur = chunk.NewReader(func() ([]byte, error) {
		m, err := r.next()
		if err != nil {
			return nil, err
		}
		switch msg := m.GetMsg().(type) {
		case *pb.TransformResponse_Chunk:
			return msg.Chunk, nil
		case *pb.TransformResponse_Output:
			r.peek = m
			return nil, io.EOF
		}
		return nil, fmt.Errorf("%w: second result", ErrProtocol)
	}, r.c.opts.MaxMessageSize, sdk.ErrMessageTooLarge)
	return &Output{Recipients: rcpts, Body: outputReader{r}}, nil
}

type outputReader struct{ r *TransformResult }

func (o outputReader) Read(p []byte) (int, error) {
	r := o.r
	if r.cur == nil {
		return 0, io.EOF
	}
	n, err := r.cur.Read(p)
	if err != nil && err != io.EOF {
		err = r.failWith(err)
	}
	return n, err
}

// WriteTo writes the rest of the output to w as its chunks arrive, without
// a copy (io.Copy to the spool file uses it). A failure of w is returned
// as it is; a failure of the stream fails the call.
func (o outputReader) WriteTo(w io.Writer) (int64, error) {
	r := o.r
	if r.cur == nil {
		return 0, nil
	}
	n, err := r.cur.WriteTo(w)
	if err != nil && err == r.cur.Err() {
		err = r.failWith(err)
	}
	return n, err
}

// Close ends the call. Safe to call more than once.
func (r *TransformResult) Close() error {
	r.closeFile()
	r.discardRest()
	r.bc.finish()
	return nil
}

// closeFile closes the current output's file unless it was taken.
func (r *TransformResult) closeFile() {
	if r.file != nil {
		r.file.Close()
		r.file = nil
	}
}

// discardRest gives up the files of the outputs not received yet (the
// call ended early): the plugin may have sent them already.
func (r *TransformResult) discardRest() {
	if !r.byFile || r.discarded {
		return
	}
	r.discarded = true
	for i := r.seen; i < r.outputs; i++ {
		r.c.files.Discard(bodyfile.OutputToken(r.token, i))
	}
}

// ctxReader stops reading once ctx is done (a body read before the call,
// as in sendBodyFile, must not outlast the call's deadline).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// sendBodyFile copies body into a sealed memory file, within the plugin's
// limit, and passes it over the body channel.
func (c *Client) sendBodyFile(ctx context.Context, body io.Reader) (uint64, int64, error) {
	var f *os.File
	var n int64
	var err error
	if src, ok := body.(bodyfile.FileSource); ok {
		// A queued message: copied by the kernel (finite, so the
		// call's context need not interrupt it).
		f, n, err = bodyfile.CreateFrom(src, c.limitIn(), sdk.ErrMessageTooLarge)
	} else {
		f, n, err = bodyfile.Create(ctxReader{ctx, body}, c.limitIn(), sdk.ErrMessageTooLarge)
	}
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	token, err := c.files.Send(f)
	return token, n, err
}

// takeBodyFile takes an output file the plugin announced and checks it:
// sealed, of the announced size, within Options.MaxMessageSize.
func (c *Client) takeBodyFile(ctx context.Context, token, size uint64) (*os.File, int64, error) {
	if size > math.MaxInt64 {
		return nil, 0, sdk.ErrMessageTooLarge
	}
	f, err := c.files.Take(ctx, token)
	if err != nil {
		return nil, 0, err
	}
	if err := bodyfile.Check(f, int64(size), c.opts.MaxMessageSize, sdk.ErrMessageTooLarge); err != nil {
		f.Close()
		if errors.Is(err, sdk.ErrMessageTooLarge) {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return f, int64(size), nil
}

// DeliverEvent hands the plugin an event it subscribed to
// (sdk.MatchEventType(info.EventTypes, ev.Type) is the host's filter).
func (c *Client) DeliverEvent(ctx context.Context, ev sdk.Event) error {
	if ev.Type == "" {
		return &Error{Plugin: c.name, Method: "Deliver", Err: errors.New("event without type")}
	}
	_, err := c.events.Deliver(ctx, &pb.DeliverRequest{Event: eventToPB(ev)})
	return c.wrap(ctx, "Deliver", err)
}

// purposeOf is the Outbound purpose the host put in ctx (sdk.WithSignOnly).
func purposeOf(ctx context.Context) pb.Purpose {
	if sdk.IsSignOnly(ctx) {
		return pb.Purpose_PURPOSE_SIGN
	}
	return pb.Purpose_PURPOSE_ENCRYPT
}
