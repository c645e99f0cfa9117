package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/dsn"
	"github.com/posthorn/posthorn/mta/internal/maildrop"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/queue"
)

// startMaildrop prepares the drop directory, queues what `posthorn
// sendmail` left there while the daemon was down, and watches it.
func (d *Daemon) startMaildrop() error {
	dir := d.cfg.Queue.Maildrop
	if dir == "" {
		return nil
	}
	if err := maildrop.Prepare(dir); err != nil {
		return fmt.Errorf("queue.maildrop: %w", err)
	}
	if err := maildrop.Unreachable(dir); err != nil {
		d.log.Warn("maildrop: sendmail of users other than root and posthorn's own cannot leave mail while the daemon is down", "err", err)
	}
	d.pickup()
	d.goRun(func() { maildrop.Watch(d.ctx, dir, time.Minute, d.pickup) })
	return nil
}

// pickup queues every complete file in the drop directory and removes
// it. Each file is queued once: its name is the submission's idempotency
// key, recorded with the queued message (and in the submission key log)
// before the file is removed, so a crash in between does not queue it
// twice. A file the daemon can never accept (malformed, a link or not a
// regular file, too big, an unknown local recipient) is set aside for the
// postmaster (see setAside); one it cannot accept now stays for the next
// pickup.
func (d *Daemon) pickup() {
	d.pickupMu.Lock()
	defer d.pickupMu.Unlock()
	dir := d.cfg.Queue.Maildrop
	names, err := maildrop.List(dir)
	if err != nil {
		d.log.Error("maildrop", "dir", dir, "err", err)
		return
	}
	if gone, _ := maildrop.RemoveStaleTemp(dir, time.Now()); len(gone) > 0 {
		d.log.Warn("maildrop: removed files a sendmail never finished writing (it did not report success)",
			"files", strings.Join(gone, ","), "older_than", maildrop.StaleTemp.String())
	}
	for _, name := range names {
		if d.ctx.Err() != nil {
			return
		}
		key := "maildrop:" + name
		if id, ok := d.hostAPI.known(key); ok {
			d.log.Info("maildrop file already queued; removing", "file", name, "queue_id", id)
			maildrop.Remove(dir, name)
			continue
		}
		e, err := maildrop.Open(dir, name)
		if errors.Is(err, os.ErrNotExist) {
			continue // gone since the listing
		}
		if err != nil {
			reason := "unreadable"
			var r *maildrop.Refusal
			if errors.As(err, &r) {
				reason = r.Reason
			}
			d.setAside(dir, name, nil, reason, err)
			continue
		}
		id, err := d.submitWith(e.Req, e.Body, map[string]string{attrSubmitKey: key}, "maildrop")
		e.Body.Close()
		if err != nil {
			if permanent(err) {
				reason := "refused"
				if errors.Is(err, errSubmitTooBig) {
					reason = "too_big"
				}
				d.setAside(dir, name, e, reason, err)
			} else {
				d.log.Warn("maildrop: cannot queue now; will retry", "file", name, "err", err)
			}
			continue
		}
		d.hostAPI.remember(key, id)
		if err := maildrop.Remove(dir, name); err != nil {
			d.log.Error("maildrop: cannot remove a queued file", "file", name, "queue_id", id, "err", err)
		}
		metrics.MaildropPickedUp.Inc()
		d.log.Info("maildrop file queued", "file", name, "queue_id", id, "user", e.User)
	}
}

// permanent tells a submission error that retrying will not cure.
func permanent(err error) bool {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code >= 500
	}
	return errors.Is(err, router.ErrNoSuchUser) || errors.Is(err, router.ErrAliasLoop) || errors.Is(err, errSubmitTooBig) ||
		strings.Contains(err.Error(), "not an address") || err.Error() == "no recipients"
}

// known returns the queue ID recorded for an idempotency key.
func (a *hostAPI) known(key string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.keys[key]
	return id, ok
}

// setAside moves a dropped file the daemon will never accept aside as
// .bad.NAME for the postmaster, logs it at error level and counts it by
// reason; when the file's envelope names a sender (not the null sender)
// who asked for failure notices, it queues a bounce to them saying why,
// with the message's header attached (the whole message on RET=FULL, when
// it is not the reason). e is nil when the file could not be read as a
// dropped message: then nobody is known to tell but the postmaster.
func (d *Daemon) setAside(dir, name string, e *maildrop.Entry, reason string, cause error) {
	metrics.MaildropFailed.WithLabelValues(reason).Inc()
	bad, qerr := maildrop.Quarantine(dir, name)
	if qerr != nil {
		d.log.Error("maildrop: cannot set a refused file aside", "file", name, "err", qerr)
		bad = name
	}
	attrs := []any{"file", name, "set_aside_as", bad, "reason", reason, "err", oneLine(cause.Error())}
	if e == nil {
		d.log.Error("maildrop: file refused and set aside for the postmaster; no sender to tell", attrs...)
		return
	}
	attrs = append(attrs, "user", e.User, "from", e.Req.From, "rcpts", len(e.Req.To))
	from, ok := dsn.Recipient(&queue.Envelope{From: e.Req.From})
	if !ok || !dsn.Wants(e.Req.Notify, dsn.Failed) || len(e.Req.To) == 0 {
		d.log.Error("maildrop: message refused and set aside for the postmaster; no bounce (null sender, NOTIFY or no recipients)", attrs...)
		return
	}
	id, err := d.maildropBounce(dir, bad, e, reason, cause)
	if err != nil {
		d.log.Error("maildrop: message refused and set aside for the postmaster; the bounce to its sender failed", append(attrs, "bounce_err", err)...)
		return
	}
	metrics.MaildropBounced.Inc()
	d.log.Error("maildrop: message refused and set aside for the postmaster; sender told", append(attrs, "bounce_to", from, "dsn_id", id)...)
}

// maildropBounce queues the bounce for a refused dropped message, built
// like every other bounce (package dsn).
func (d *Daemon) maildropBounce(dir, bad string, e *maildrop.Entry, reason string, cause error) (string, error) {
	g := d.gen.Load()
	status := "5.0.0"
	var se *smtp.SMTPError
	switch {
	case reason == "too_big":
		status = "5.3.4"
	case errors.As(cause, &se) && se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode[0] == 5:
		status = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	case errors.Is(cause, router.ErrNoSuchUser):
		status = "5.1.1"
	case strings.Contains(cause.Error(), "not an address"):
		status = "5.1.3"
	}
	why := oneLine(cause.Error())
	if se != nil && se.Message != "" {
		why = oneLine(se.Message)
	}
	env := &queue.Envelope{ID: "maildrop:" + e.Name, From: e.Req.From, Ret: e.Req.Ret, EnvID: e.Req.EnvID,
		Received: e.Time, Size: e.Size, BodyType: "8BITMIME"}
	if reason == "too_big" {
		env.Ret = "HDRS" // never return what was too big to send
	}
	var reps []dsn.RecipientReport
	for _, to := range e.Req.To {
		env.Recipients = append(env.Recipients, &queue.Recipient{Addr: to, Notify: e.Req.Notify})
		reps = append(reps, dsn.RecipientReport{Addr: to, Action: dsn.Failed, Status: status,
			Diagnostic: "x-posthorn; not accepted from the drop directory (posthorn sendmail while the daemon was down): " + why})
	}
	var original io.Reader
	if o, err := maildrop.Open(dir, bad); err == nil {
		defer o.Body.Close()
		original = o.Body
	}
	var buf bytes.Buffer
	if err := dsn.Build(dsn.Report{ReportingMTA: g.cfg.Hostname, Envelope: env, Recipients: reps,
		Postmaster: postmaster(g)}, original, &buf); err != nil {
		return "", err
	}
	to, _ := dsn.Recipient(env)
	nenv := &queue.Envelope{
		ID:         d.Queue.NewID(),
		Recipients: []*queue.Recipient{{Addr: to, Notify: []string{"NEVER"}}},
		Attrs:      map[string]string{"dsn.kind": "bounce", "dsn.for": env.ID},
		BodyType:   "8BITMIME",
		SMTPUTF8:   !isASCII(to + strings.Join(e.Req.To, "")),
	}
	return d.Queue.Enqueue(nenv, &buf)
}

// oneLine keeps a diagnostic on one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
