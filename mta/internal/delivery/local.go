package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/posthorn/posthorn/mta/internal/lmtp"
	"github.com/posthorn/posthorn/mta/internal/maildir"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/queue"
)

// LocalTransport delivers to mailboxes of local domains: into Maildir, or
// over LMTP (RFC 2033) where the domain has an LMTP target.
type LocalTransport struct {
	Router   *router.Router
	Hostname string
	Timeout  time.Duration
	Logger   *slog.Logger
}

var _ Transport = (*LocalTransport)(nil)

func (t *LocalTransport) Name() string { return "local" }

// Deliver implements Transport. Recipients are grouped per LMTP target so
// that one LMTP transaction carries all of them; Maildir recipients are
// delivered one by one.
func (t *LocalTransport) Deliver(ctx context.Context, env *queue.Envelope, idx []int, body Body) map[int]Outcome {
	out := map[int]Outcome{}
	lmtpGroups := map[string][]int{}
	var lmtpOrder []string
	for _, i := range idx {
		r := env.Recipients[i]
		dests, err := t.Router.Expand(r.Addr)
		if err != nil {
			if errors.Is(err, router.ErrNoSuchUser) {
				out[i] = Failed("5.1.1", "x-posthorn; mailbox unknown")
			} else if errors.Is(err, router.ErrUnavailable) {
				out[i] = Deferred("4.3.0", "x-posthorn; user directory unavailable")
			} else {
				out[i] = Failed("5.4.6", "x-posthorn; "+errString(err))
			}
			continue
		}
		if len(dests) != 1 || dests[0].Kind != router.Local {
			// The queue holds expanded addresses; the config changed
			// since. Deliver to the first local destination and say so.
			t.Logger.Warn("recipient now routes differently; delivering to its first local destination", "queue_id", env.ID, "rcpt", r.Addr)
		}
		var d *router.Destination
		for k := range dests {
			if dests[k].Kind == router.Local {
				d = &dests[k]
				break
			}
		}
		if d == nil {
			out[i] = Failed("5.4.4", "x-posthorn; recipient no longer routes to a local mailbox")
			continue
		}
		if d.LMTP != "" {
			if _, ok := lmtpGroups[d.LMTP]; !ok {
				lmtpOrder = append(lmtpOrder, d.LMTP)
			}
			lmtpGroups[d.LMTP] = append(lmtpGroups[d.LMTP], i)
			continue
		}
		out[i] = t.maildir(env, i, d, body)
	}
	for _, target := range lmtpOrder {
		for i, o := range t.lmtp(ctx, env, target, lmtpGroups[target], body) {
			out[i] = o
		}
	}
	return out
}

func (t *LocalTransport) maildir(env *queue.Envelope, i int, d *router.Destination, body Body) Outcome {
	o := t.maildirOutcome(env, i, d, body)
	o.Transport = "maildir"
	return o
}

func (t *LocalTransport) maildirOutcome(env *queue.Envelope, i int, d *router.Destination, body Body) Outcome {
	uniq := fmt.Sprintf("%s.R%d", env.ID, i)
	if env.Recovered {
		// The previous process may have died between the Maildir rename
		// and recording the result: deliver exactly once.
		if ok, err := maildir.Exists(d.Maildir, uniq); err == nil && ok {
			return Delivered("2.0.0", "x-posthorn; already in the mailbox (found after restart)")
		}
	}
	rc, err := body()
	if err != nil {
		return Deferred("4.3.0", "x-posthorn; cannot read queued message: "+errString(err))
	}
	defer rc.Close()
	prepend := fmt.Sprintf("Return-Path: <%s>\r\nDelivered-To: %s\r\n", env.From, env.Recipients[i].Addr)
	if _, err := maildir.Deliver(d.Maildir, uniq, rc, []byte(prepend)); err != nil {
		if maildir.IsTemporary(err) {
			return Deferred("4.2.0", "x-posthorn; mailbox temporarily unavailable: "+errString(err))
		}
		return Failed("5.2.0", "x-posthorn; mailbox unavailable: "+errString(err))
	}
	return Delivered("2.0.0", "x-posthorn; delivered to maildir")
}

func (t *LocalTransport) lmtp(ctx context.Context, env *queue.Envelope, target string, idx []int, body Body) map[int]Outcome {
	timeout := t.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	out := DeliverLMTP(ctx, env, target, idx, body, t.Hostname, timeout, nil)
	for i, o := range out {
		o.Transport = "lmtp"
		out[i] = o
	}
	return out
}

// DeliverLMTP hands recipients idx of env to an LMTP server (RFC 2033)
// in one transaction and maps its per-recipient replies to outcomes.
func DeliverLMTP(ctx context.Context, env *queue.Envelope, target string, idx []int, body Body, lhlo string, timeout time.Duration, dial func(ctx context.Context, network, addr string) (net.Conn, error)) map[int]Outcome {
	out := map[int]Outcome{}
	fail := func(o Outcome) map[int]Outcome {
		for _, i := range idx {
			out[i] = o
		}
		return out
	}
	rc, err := body()
	if err != nil {
		return fail(Deferred("4.3.0", "x-posthorn; cannot read queued message: "+errString(err)))
	}
	defer rc.Close()
	rcpts := make([]string, len(idx))
	for k, i := range idx {
		rcpts[k] = env.Recipients[i].Addr
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := lmtp.Deliver(cctx, target, env.From, rcpts, lmtp.Options{
		LHLO:     lhlo,
		EightBit: strings.EqualFold(env.BodyType, "8BITMIME"),
		SMTPUTF8: env.SMTPUTF8,
		Timeout:  timeout,
		Dial:     dial,
	}, rc)
	if err != nil {
		return fail(Deferred("4.4.1", "x-posthorn; LMTP "+target+": "+errString(err)))
	}
	for k, i := range idx {
		if k >= len(res) {
			out[i] = Deferred("4.4.2", "x-posthorn; LMTP server gave no status")
			continue
		}
		r := res[k]
		diag := fmt.Sprintf("lmtp; %d %s %s", r.Code, r.Enhanced, r.Text)
		switch {
		case r.OK:
			out[i] = Outcome{State: queue.Delivered, Status: orDefault(r.Enhanced, "2.0.0"), Diagnostic: diag, RemoteMTA: target}
		case r.Temporary:
			out[i] = Outcome{State: queue.Pending, Status: orDefault(r.Enhanced, "4.0.0"), Diagnostic: diag, RemoteMTA: target}
		default:
			out[i] = Outcome{State: queue.Failed, Status: orDefault(r.Enhanced, "5.0.0"), Diagnostic: diag, RemoteMTA: target}
		}
	}
	return out
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
