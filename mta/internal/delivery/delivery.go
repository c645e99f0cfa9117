// Package delivery runs the queue's delivery workers: it leases a message,
// routes each due recipient (local Maildir or LMTP, or a remote transport),
// turns outcomes into per-recipient queue results, sends RFC 3464 DSNs for
// failures (and for successes where NOTIFY=SUCCESS asks), and reports back
// to the queue. Temporary errors defer with the queue's backoff; a
// recipient whose message outlived the queue lifetime fails with 4.4.7
// (RFC 3463).
package delivery

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/posthorn/posthorn/mta/internal/dsn"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/sdk"
)

// Outcome is the result of one delivery attempt for one recipient.
type Outcome struct {
	State      queue.RcptState // Delivered, Failed or Pending (deferred)
	Status     string          // enhanced status code
	Diagnostic string          // e.g. "smtp; 550 5.1.1 no such user"
	RemoteMTA  string
	// DSNPassedOn: the next hop supports DSN and took over the duty of a
	// success notice (RFC 3461 §5.2.2); without it a NOTIFY=SUCCESS
	// recipient handed to a remote server gets a "relayed" DSN from us.
	DSNPassedOn bool
	// Transport is the kind of delivery that produced the outcome, for
	// the metrics: maildir, lmtp, mx, smarthost, discard, diverted.
	// Transports that know set it; process fills in the rest.
	Transport string
	// diverted names the plugin that took the recipient over; waiting
	// means it still has it (nothing happened in this attempt).
	diverted string
	waiting  bool
}

// Deferred is a temporary outcome.
func Deferred(status, diag string) Outcome {
	return Outcome{State: queue.Pending, Status: status, Diagnostic: diag}
}

// Failed is a permanent outcome.
func Failed(status, diag string) Outcome {
	return Outcome{State: queue.Failed, Status: status, Diagnostic: diag}
}

// Delivered is a success.
func Delivered(status, diag string) Outcome {
	return Outcome{State: queue.Delivered, Status: status, Diagnostic: diag}
}

// Body opens the message content; each call gives a fresh reader from the
// start.
type Body func() (io.ReadCloser, error)

// SignFunc wraps a message's content with a signature (DKIM); it
// returns body itself when it has nothing to sign with.
type SignFunc func(env *queue.Envelope, body io.ReadCloser) io.ReadCloser

// Transport delivers a message to a group of recipients (indexes into
// env.Recipients) and returns one outcome per index.
type Transport interface {
	Name() string
	Deliver(ctx context.Context, env *queue.Envelope, idx []int, body Body) map[int]Outcome
}

// Queue is what delivery needs of the spool.
type Queue interface {
	Lease(ctx context.Context) (*queue.Envelope, error)
	Report(id string, results []queue.Result) error
	Release(id string)
	Body(id string) (io.ReadCloser, error)
	NewID() string
	Enqueue(env *queue.Envelope, body io.Reader) (string, error)
}

// Options configure the workers.
type Options struct {
	Hostname       string
	Postmaster     string // address that gets double bounces
	MaxLifetime    time.Duration
	BounceLifetime time.Duration
	// DelayWarning sends a "delayed" DSN (once) for recipients still
	// deferred after this long; 0 disables it.
	DelayWarning time.Duration
	Now          func() time.Time
	Logger       *slog.Logger
	Router       *router.Router
	// Encryption, if set, runs the encryption policy chain for remote
	// recipients.
	Encryption *Encryption
	// Events, if set, receives delivery events (for plugins).
	Events func(sdk.Event)
	// Sign, if set, DKIM-signs mail on its way to remote transports.
	Sign   SignFunc
	Local  Transport
	Remote Transport // nil: remote recipients are deferred with a clear reason
}

// Worker pool.
type Workers struct {
	q   Queue
	opt Options
	log *slog.Logger
	// live holds the options in force: SetOptions replaces them (a
	// reload); each message is processed with the options of its start.
	live *atomic.Pointer[Options]
}

// New returns the delivery workers for q.
func New(q Queue, opt Options) *Workers {
	w := &Workers{q: q, live: new(atomic.Pointer[Options])}
	w.SetOptions(opt)
	w.opt, w.log = *w.live.Load(), w.live.Load().Logger
	return w
}

// SetOptions replaces the options for messages leased from now on;
// deliveries in progress finish with the options they started with.
func (w *Workers) SetOptions(opt Options) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	w.live.Store(&opt)
}

// current is the workers with the options now in force.
func (w *Workers) current() *Workers {
	opt := w.live.Load()
	return &Workers{q: w.q, opt: *opt, log: opt.Logger, live: w.live}
}

// Run starts n workers and returns when ctx is done and all have stopped.
func (w *Workers) Run(ctx context.Context, n int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				env, err := w.q.Lease(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					w.log.Error("lease failed", "err", err)
					time.Sleep(time.Second)
					continue
				}
				w.Process(ctx, env)
			}
		}()
	}
	wg.Wait()
}

// Process delivers the due recipients of one leased message and reports.
func (w *Workers) Process(ctx context.Context, env *queue.Envelope) {
	w.current().process(ctx, env)
}

func (w *Workers) process(ctx context.Context, env *queue.Envelope) {
	// Each line names the message itself (not log.With, which formats a
	// handler per message: 1.7% of the relay's CPU, issue 19).
	now := w.opt.Now()
	var local, remote, expiredDiverted, waiting []int
	for i, r := range env.Recipients {
		if r.State != queue.Pending || r.NextAttempt.After(now) {
			continue
		}
		if p := diverted(env, i); p != "" {
			// A plugin took it over and will confirm; only its
			// silence past the queue lifetime ends it here.
			if w.expired(env, now) {
				expiredDiverted = append(expiredDiverted, i)
			} else {
				waiting = append(waiting, i)
			}
			continue
		}
		if w.opt.Router.IsLocal(r.Addr) {
			local = append(local, i)
		} else {
			remote = append(remote, i)
		}
	}
	body := func() (io.ReadCloser, error) { return w.q.Body(env.ID) }
	outcomes := map[int]Outcome{}
	run := func(t Transport, idx []int, b Body) {
		if len(idx) == 0 {
			return
		}
		start := time.Now()
		for i, o := range t.Deliver(ctx, env, idx, b) {
			outcomes[i] = o
		}
		metrics.DeliveryLatency.WithLabelValues(t.Name()).Observe(time.Since(start).Seconds())
	}
	for _, i := range waiting {
		// Still the plugin's: reported unchanged, so the queue backs off
		// instead of handing the message out again at once.
		r := env.Recipients[i]
		outcomes[i] = Outcome{State: queue.Pending, Status: r.Status, Diagnostic: r.Diagnostic, diverted: env.Attrs[AttrDiverted(i)], waiting: true}
	}
	for _, i := range expiredDiverted {
		outcomes[i] = Failed("4.4.7", "x-posthorn; the plugin that took the message over never confirmed delivery")
	}
	run(w.opt.Local, local, body)
	if w.opt.Remote != nil && w.opt.Encryption != nil && len(remote) > 0 {
		plan := w.opt.Encryption.Apply(ctx, env, remote, body)
		for i, o := range plan.Outcomes {
			outcomes[i] = o
		}
		run(w.opt.Remote, plan.Plain, w.signed(env, plan.PlainBody))
		for _, out := range plan.Outputs {
			run(w.opt.Remote, out.Idx, w.signed(env, out.Body))
		}
		plan.Close()
	} else if w.opt.Remote != nil {
		run(w.opt.Remote, remote, w.signed(env, body))
	} else {
		for _, i := range remote {
			outcomes[i] = Deferred("4.3.2", "x-posthorn; no remote transport is configured")
		}
	}
	if ctx.Err() != nil {
		// Shutting down: whatever did not finish stays due.
		w.q.Release(env.ID)
		return
	}

	expired := w.expired(env, now)
	var results []queue.Result
	var failed, delivered, delayed []dsn.RecipientReport
	for i, o := range outcomes {
		r := env.Recipients[i]
		if o.State == queue.Pending && expired {
			o = Failed("4.4.7", "x-posthorn; delivery time expired; last error: "+o.Diagnostic)
		}
		isRemote := !w.opt.Router.IsLocal(r.Addr)
		metrics.Deliveries.WithLabelValues(w.transportLabel(r.Addr, isRemote, o), resultName(o.State)).Inc()
		if o.State != queue.Pending {
			metrics.QueueTime.Observe(now.Sub(env.Received).Seconds())
		}
		w.log.Info("delivery", "queue_id", env.ID, "rcpt", r.Addr, "result", resultName(o.State), "status", o.Status,
			"diagnostic", o.Diagnostic, "attempt", r.Attempts+1, "delay", now.Sub(env.Received).Round(time.Millisecond).String())
		rep := dsn.RecipientReport{Addr: r.Addr, ORcpt: r.ORcpt, Status: o.Status, Diagnostic: o.Diagnostic,
			RemoteMTA: o.RemoteMTA, LastAttempt: now}
		switch {
		case o.State == queue.Failed && (dsn.Wants(r.Notify, dsn.Failed) || isBounce(env)):
			// A bounce that fails goes to the postmaster whatever its
			// NOTIFY (ours say NEVER, so that they are never bounced
			// back to the null sender): notify makes it a double bounce.
			rep.Action = dsn.Failed
			failed = append(failed, rep)
		case o.State == queue.Delivered && !o.DSNPassedOn && dsn.Wants(r.Notify, dsn.Delivered):
			rep.Action = dsn.Delivered
			if isRemote {
				rep.Action = dsn.Relayed
			}
			delivered = append(delivered, rep)
		}
		res := queue.Result{Index: i, State: o.State, Status: o.Status,
			Diagnostic: o.Diagnostic, RemoteMTA: o.RemoteMTA, DelayWarned: r.DelayWarned}
		if o.State == queue.Pending && !o.waiting && w.opt.DelayWarning > 0 && !r.DelayWarned &&
			now.Sub(env.Received) >= w.opt.DelayWarning && dsn.Wants(r.Notify, dsn.Delayed) {
			rep.Action = dsn.Delayed
			rep.WillRetryUntil = env.Received.Add(w.lifetime(env))
			delayed = append(delayed, rep)
			res.DelayWarned = true
		}
		results = append(results, res)
		if !o.waiting {
			w.emit(env, r, o)
		}
	}
	// DSNs are queued before the results are recorded: after a crash in
	// between, a DSN may be sent twice but is never lost.
	for _, reps := range [][]dsn.RecipientReport{failed, delivered, delayed} {
		if len(reps) > 0 {
			if err := w.notify(env, reps); err != nil {
				w.log.Error("could not queue DSN; recipients stay deferred", "queue_id", env.ID, "err", err)
				w.q.Release(env.ID)
				return
			}
		}
	}
	if err := w.q.Report(env.ID, results); err != nil {
		w.log.Error("could not record results", "queue_id", env.ID, "err", err)
	}
}

// diverted is the plugin that took recipient i over, if any (no key to
// build for the common envelope without attributes).
func diverted(env *queue.Envelope, i int) string {
	if len(env.Attrs) == 0 {
		return ""
	}
	return env.Attrs[AttrDiverted(i)]
}

// emit tells subscribed plugins what happened to a recipient.
func (w *Workers) emit(env *queue.Envelope, r *queue.Recipient, o Outcome) {
	if w.opt.Events == nil {
		return
	}
	typ := sdk.EventDeferred
	switch {
	case o.diverted != "":
		typ = sdk.EventDiverted
	case o.State == queue.Delivered:
		typ = sdk.EventDelivered
	case o.State == queue.Failed:
		typ = sdk.EventBounced
	}
	attrs := map[string]string{"status": o.Status, "diagnostic": o.Diagnostic}
	if o.RemoteMTA != "" {
		attrs["remote_mta"] = o.RemoteMTA
	}
	if o.diverted != "" {
		attrs["plugin"] = o.diverted
	}
	w.opt.Events(sdk.Event{Type: typ, QueueID: env.ID, Sender: env.From, Recipient: r.Addr, Time: w.opt.Now(), Attributes: attrs})
}

// signed wraps body with the signing stage, if there is one.
func (w *Workers) signed(env *queue.Envelope, body Body) Body {
	if w.opt.Sign == nil {
		return body
	}
	return func() (io.ReadCloser, error) {
		rc, err := body()
		if err != nil {
			return nil, err
		}
		return w.opt.Sign(env, rc), nil
	}
}

func resultName(s queue.RcptState) string {
	switch s {
	case queue.Delivered:
		return "delivered"
	case queue.Failed:
		return "failed"
	}
	return "deferred"
}

func (w *Workers) lifetime(env *queue.Envelope) time.Duration {
	if env.From == "" && w.opt.BounceLifetime > 0 {
		return w.opt.BounceLifetime
	}
	return w.opt.MaxLifetime
}

func (w *Workers) expired(env *queue.Envelope, now time.Time) bool {
	life := w.lifetime(env)
	return life > 0 && now.Sub(env.Received) > life
}

// attrDSN marks a message as a DSN; a double bounce is never bounced again.
const attrDSN = "dsn.kind"

// RouteKind is what a remote transport may tell about the route it
// takes for an address (remote.Transport: mx, smarthost, lmtp, maildir,
// discard).
type RouteKind interface {
	Kind(addr string) string
}

// transportLabel names the delivery for the metrics by what really
// carried it, not by local/remote.
func (w *Workers) transportLabel(addr string, isRemote bool, o Outcome) string {
	switch {
	case o.diverted != "":
		return "diverted"
	case o.Transport != "":
		return o.Transport
	case isRemote:
		if rk, ok := w.opt.Remote.(RouteKind); ok {
			return rk.Kind(addr)
		}
		return "remote"
	}
	return w.opt.Local.Name()
}

// isBounce reports whether env is a bounce: the null sender.
func isBounce(env *queue.Envelope) bool {
	_, ok := dsn.Recipient(env)
	return !ok
}

// notify queues a DSN for reps.
func (w *Workers) notify(env *queue.Envelope, reps []dsn.RecipientReport) error {
	to, ok := dsn.Recipient(env)
	kind := "bounce"
	if !ok {
		// A bounce that bounced: the postmaster gets it, once.
		if env.Attrs[attrDSN] == "double" || w.opt.Postmaster == "" {
			// Nobody is left to tell: count it and say it loudly.
			metrics.DoubleBouncesLost.Inc()
			for _, r := range reps {
				w.log.Error("double bounce undeliverable; discarded", "queue_id", env.ID, "rcpt", r.Addr,
					"status", r.Status, "diagnostic", r.Diagnostic, "bounce_of", env.Attrs["dsn.for"])
			}
			return nil
		}
		to, kind = w.opt.Postmaster, "double"
	}
	body, err := w.q.Body(env.ID)
	if err != nil {
		return err
	}
	defer body.Close()
	var buf bytes.Buffer
	err = dsn.Build(dsn.Report{
		ReportingMTA: w.opt.Hostname,
		Envelope:     env,
		Recipients:   reps,
		Arrival:      env.Received,
		Postmaster:   w.opt.Postmaster,
	}, body, &buf)
	if err != nil {
		return fmt.Errorf("build DSN: %w", err)
	}
	nenv := &queue.Envelope{
		ID:         w.q.NewID(),
		From:       "",
		Recipients: []*queue.Recipient{{Addr: to, Notify: []string{"NEVER"}}},
		Attrs:      map[string]string{attrDSN: kind, "dsn.for": env.ID},
		// The returned original may be 8-bit or UTF-8 (the DSN says so in
		// its parts); the envelope must say so too.
		BodyType: env.BodyType,
		SMTPUTF8: env.SMTPUTF8,
	}
	id, err := w.q.Enqueue(nenv, &buf)
	if err != nil {
		return err
	}
	metrics.Bounces.WithLabelValues(string(reps[0].Action)).Inc()
	w.log.Info("DSN queued", "queue_id", env.ID, "dsn_id", id, "to", to, "action", reps[0].Action, "recipients", len(reps))
	return nil
}

// errString keeps diagnostics on one line.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}
