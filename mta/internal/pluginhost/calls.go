package pluginhost

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
)

// Inspect runs the named plugin's inbound hook, bounded by its timeout.
// For sdk.ActionReplace the new message comes as a ReadCloser the caller
// must read and Close (the timeout covers reading it); otherwise it is
// nil. Errors are *Error; see ErrNotRunning and ErrTimeout.
func (h *Host) Inspect(ctx context.Context, name string, env *sdk.Envelope, body io.Reader) (_ sdk.Verdict, _ io.ReadCloser, err error) {
	const hook = "Inspect"
	defer observe(name, hook, time.Now(), &err)
	p, c, err := h.acquire(name, hook)
	if err != nil {
		return sdk.Verdict{}, nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout.D())
	v, repl, err := c.Inspect(cctx, env, body)
	if err != nil {
		cancel()
		return sdk.Verdict{}, nil, p.callErr(ctx, hook, c, err)
	}
	if repl == nil {
		cancel()
		return v, nil, nil
	}
	return v, &replacement{rc: repl, cancel: cancel, p: p, c: c, parent: ctx}, nil
}

type replacement struct {
	rc     io.ReadCloser
	cancel context.CancelFunc
	p      *plugin
	c      *hostside.Client
	parent context.Context
}

func (r *replacement) Read(b []byte) (int, error) {
	n, err := r.rc.Read(b)
	if err != nil && err != io.EOF {
		err = r.p.callErr(r.parent, "Inspect", r.c, err)
	}
	return n, err
}

func (r *replacement) Close() error {
	err := r.rc.Close()
	r.cancel()
	return err
}

// CanHandle asks the named plugin's outbound hook which recipients it can
// take; one answer per recipient, in order.
func (h *Host) CanHandle(ctx context.Context, name string, env *sdk.Envelope, rcpts []sdk.Recipient) (_ []sdk.Answer, err error) {
	const hook = "CanHandle"
	defer observe(name, hook, time.Now(), &err)
	p, c, err := h.acquire(name, hook)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout.D())
	defer cancel()
	as, err := c.CanHandle(cctx, env, rcpts)
	return as, p.callErr(ctx, hook, c, err)
}

// TransformResult is a Transform answer: Action, Pending and Reason as in
// hostside.TransformResult; for sdk.OutboundTransformed call Next until
// io.EOF. Always Close it; the plugin's timeout covers reading every
// output.
type TransformResult struct {
	Action  sdk.OutboundAction
	Pending bool
	Reason  string
	// Answers: TransformDecide's CanHandle answers, one per recipient.
	Answers []sdk.Answer

	r      *hostside.TransformResult
	cancel context.CancelFunc
	p      *plugin
	c      *hostside.Client
	parent context.Context
}

// Next returns the next output message, io.EOF after the last.
func (r *TransformResult) Next() (*hostside.Output, error) {
	out, err := r.r.Next()
	if err != nil {
		if err == io.EOF {
			return nil, err
		}
		return nil, r.p.callErr(r.parent, "Transform", r.c, err)
	}
	body := out.Body
	out.Body = readerFunc(func(b []byte) (int, error) {
		n, err := body.Read(b)
		if err != nil && err != io.EOF {
			err = r.p.callErr(r.parent, "Transform", r.c, err)
		}
		return n, err
	})
	return out, nil
}

// Close ends the call. Safe to call more than once.
func (r *TransformResult) Close() error {
	err := r.r.Close()
	r.cancel()
	return err
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

// Transform hands the named plugin's outbound hook a message for a group
// of recipients it said it can handle.
func (h *Host) Transform(ctx context.Context, name string, env *sdk.Envelope, group []sdk.Recipient, body io.Reader) (*TransformResult, error) {
	return h.transform(ctx, name, env, group, body, (*hostside.Client).Transform)
}

// TransformDecide asks the named plugin's outbound hook which recipients
// of group it can handle and has it transform for those, in one call
// where the plugin can (hostside.Client.TransformDecide); the answers are
// in TransformResult.Answers. The plugin's timeout covers both.
func (h *Host) TransformDecide(ctx context.Context, name string, env *sdk.Envelope, group []sdk.Recipient, body io.Reader) (*TransformResult, error) {
	return h.transform(ctx, name, env, group, body, (*hostside.Client).TransformDecide)
}

func (h *Host) transform(ctx context.Context, name string, env *sdk.Envelope, group []sdk.Recipient, body io.Reader,
	call func(*hostside.Client, context.Context, *sdk.Envelope, []sdk.Recipient, io.Reader) (*hostside.TransformResult, error)) (_ *TransformResult, err error) {
	const hook = "Transform"
	defer observe(name, hook, time.Now(), &err)
	p, c, err := h.acquire(name, hook)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout.D())
	r, err := call(c, cctx, env, group, body)
	if err != nil {
		cancel()
		return nil, p.callErr(ctx, hook, c, err)
	}
	return &TransformResult{Action: r.Action, Pending: r.Pending, Reason: r.Reason, Answers: r.Answers, r: r, cancel: cancel, p: p, c: c, parent: ctx}, nil
}

// DeliverEvent hands one event to the named plugin now, synchronously.
// Emit is the usual way (asynchronous, to every subscriber).
func (h *Host) DeliverEvent(ctx context.Context, name string, ev sdk.Event) (err error) {
	const hook = "DeliverEvent"
	defer observe(name, hook, time.Now(), &err)
	p, c, err := h.acquire(name, hook)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout.D())
	defer cancel()
	return p.callErr(ctx, hook, c, c.DeliverEvent(cctx, ev))
}

// hostServer serves one plugin's callbacks.
type hostServer struct {
	h    *Host
	name string
}

var _ hostside.HostServer = (*hostServer)(nil)

var errNoAPI = errors.New("the host offers no queue (no HostAPI)")

func (s *hostServer) Submit(ctx context.Context, sub hostside.Submission) (hostside.SubmitResult, error) {
	if s.h.api == nil {
		return hostside.SubmitResult{}, errNoAPI
	}
	key := s.name + ":" + sub.IdempotencyKey
	id, err := s.h.api.Submit(ctx, sub.Envelope, sub.Body, key)
	dup := errors.Is(err, ErrDuplicate)
	if err != nil && !dup {
		s.h.log.Warn("plugin submission refused", "plugin", s.name, "idempotency_key", key, "error", err)
		return hostside.SubmitResult{}, err
	}
	if !dup {
		// The API may have returned early on a key it knew: finish the
		// stream so the plugin gets its answer.
		if _, err := io.Copy(io.Discard, sub.Body); err != nil {
			return hostside.SubmitResult{}, err
		}
	}
	s.h.log.Info("plugin submitted a message", "plugin", s.name, "queue_id", id, "idempotency_key", key, "duplicate", dup)
	return hostside.SubmitResult{QueueID: id, Duplicate: dup}, nil
}

func (s *hostServer) Emit(_ context.Context, ev sdk.Event) error {
	ev.SourcePlugin = s.name
	if ev.ID != "" {
		ev.ID = s.name + ":" + ev.ID
	}
	s.h.Emit(ev)
	return nil
}

func (s *hostServer) Confirm(ctx context.Context, c sdk.Confirmation) error {
	if s.h.api == nil {
		return errNoAPI
	}
	return s.h.api.Confirm(ctx, s.name, c.QueueID, c.Recipient, c.Outcome.String(), c.Reason)
}

// observe records a hook call in the metrics: calls and latency per
// plugin and hook, failures by kind.
func observe(name, hook string, start time.Time, errp *error) {
	metrics.PluginCalls.WithLabelValues(name, hook).Inc()
	metrics.PluginLatency.WithLabelValues(name, hook).Observe(time.Since(start).Seconds())
	if err := *errp; err != nil {
		kind := "error"
		switch {
		case errors.Is(err, ErrNotRunning), errors.Is(err, ErrUnknownPlugin):
			kind = "not_running"
		case errors.Is(err, ErrTimeout):
			kind = "timeout"
		case errors.Is(err, hostside.ErrNotImplemented):
			return
		}
		metrics.PluginErrors.WithLabelValues(name, hook, kind).Inc()
	}
}
