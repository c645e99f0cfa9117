package daemon

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/maildrop"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/mta/internal/router"
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
	d.pickup()
	d.goRun(func() { maildrop.Watch(d.ctx, dir, time.Minute, d.pickup) })
	return nil
}

// pickup queues every complete file in the drop directory and removes
// it. Each file is queued once: its name is the submission's idempotency
// key, recorded with the queued message (and in the submission key log)
// before the file is removed, so a crash in between does not queue it
// twice. A file the daemon can never accept (bad envelope, unknown local
// recipient, too big) is set aside as .bad.NAME with an error in the
// log; one it cannot accept now stays for the next pickup.
func (d *Daemon) pickup() {
	d.pickupMu.Lock()
	defer d.pickupMu.Unlock()
	dir := d.cfg.Queue.Maildrop
	names, err := maildrop.List(dir)
	if err != nil {
		d.log.Error("maildrop", "dir", dir, "err", err)
		return
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
		if err != nil {
			d.log.Error("maildrop: unreadable file set aside", "file", name, "err", err)
			metrics.MaildropFailed.Inc()
			maildrop.Quarantine(dir, name)
			continue
		}
		id, err := d.submitWith(e.Req, e.Body, map[string]string{attrSubmitKey: key}, "maildrop")
		e.Body.Close()
		if err != nil {
			if permanent(err) {
				d.log.Error("maildrop: message refused and set aside", "file", name, "user", e.User, "from", e.Req.From, "err", err)
				metrics.MaildropFailed.Inc()
				maildrop.Quarantine(dir, name)
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
