package webmailbox

import (
	"context"
	"time"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

func (sv *Service) housekeepingLoop(ctx context.Context, every time.Duration) {
	// The guessing limits' state is pruned more often than the rest.
	go func() {
		t := time.NewTicker(10 * time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				sv.th.prune(sv.Now())
			}
		}
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var err error
		if r, ok := sv.store.(sqldb.OnceRunner); ok {
			// One node at a time, and once per period across all nodes
			// sharing the store (a little under the period: tickers drift).
			var ran bool
			ran, err = r.RunOnce(ctx, "webmailbox.housekeeping", every*9/10, sv.Now(), sv.Housekeeping)
			if ran {
				// Which node did the round (the others skipped it).
				sv.log.Info("housekeeping done on this node")
			}
		} else {
			err = sv.Housekeeping(ctx)
		}
		if err != nil && ctx.Err() == nil {
			sv.log.Error("housekeeping", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Housekeeping applies retention (old messages deleted), inactivity
// (unused mailboxes warned, then deleted), expires idle sessions and sends
// reminders. It runs hourly; tests call it with a moved clock.
func (sv *Service) Housekeeping(ctx context.Context) error {
	now := sv.Now()
	sv.th.prune(now)
	if err := sv.th.pruneShared(ctx, now); err != nil {
		return err
	}
	if n, err := sv.store.DeleteMessagesBefore(ctx, now.Add(-sv.s.retention)); err != nil {
		return err
	} else if n > 0 {
		sv.log.Info("retention: messages deleted", "count", n)
	}
	if err := sv.store.DeleteSessionsBefore(ctx, now.Add(-sv.s.sessionTimeout)); err != nil {
		return err
	}
	mbs, err := sv.store.ListMailboxes(ctx)
	if err != nil {
		return err
	}
	var first error
	for _, mb := range mbs {
		if err := ctx.Err(); err != nil {
			return err
		}
		// One mailbox's failure (e.g. the host cannot take an event) does
		// not stop the others; it is tried again next hour.
		if err := sv.housekeepOne(ctx, mb, now); err != nil {
			sv.log.Error("housekeeping", "mailbox", mb.Address, "error", err)
			if first == nil {
				first = err
			}
		}
	}
	return first
}

func (sv *Service) housekeepOne(ctx context.Context, mb *Mailbox, now time.Time) error {
	deadline := mb.LastActive.Add(sv.s.inactivity)
	if !now.Before(deadline) {
		if err := sv.store.DeleteMailbox(ctx, mb.Address); err != nil {
			return err
		}
		sv.log.Info("inactive mailbox deleted", "mailbox", mb.Address, "last_active", mb.LastActive)
		return nil
	}
	if mb.State == StateActive && mb.WarnedAt.IsZero() && !now.Before(deadline.Add(-sv.s.inactivityWarn)) {
		if err := sv.emit(ctx, sv.toRecipient(mb, sdk.Event{Type: "webmailbox.inactivity_warning", Recipient: mb.Address,
			Attributes: map[string]string{"link": sv.link("/login"), "delete_on": timeAttr(deadline, sv.locOf(mb))}})); err != nil {
			return err
		}
		mb.WarnedAt = now
		if err := sv.store.UpdateMailbox(ctx, mb); err != nil {
			return err
		}
	}
	if sv.s.reminderAfter > 0 {
		if err := sv.remind(ctx, mb, now); err != nil {
			return err
		}
	}
	return nil
}

// remind sends one reminder to recipient and sender for each message
// still unread (or whose mailbox is still not activated) after
// reminder_after.
func (sv *Service) remind(ctx context.Context, mb *Mailbox, now time.Time) error {
	ms, err := sv.store.ListMessages(ctx, mb.Address, "inbox")
	if err != nil {
		return err
	}
	recipientTold := false
	for _, m := range ms {
		if !m.Unread || m.Reminded > 0 || now.Sub(m.Received) < sv.s.reminderAfter {
			continue
		}
		state := "unread"
		if mb.State == StatePending {
			state = "unactivated"
		}
		if !recipientTold {
			recipientTold = true
			link := sv.link("/login")
			if mb.State == StatePending {
				tok := newToken()
				exp := now.Add(sv.s.linkTTL)
				if err := sv.store.PutToken(ctx, &Token{Hash: tokenHash(tok), Mailbox: mb.Address, Kind: "activate", Expires: exp}); err != nil {
					return err
				}
				link = sv.link("/activate?t=" + tok)
			}
			if err := sv.emit(ctx, sv.toRecipient(mb, sdk.Event{Type: "webmailbox.reminder_recipient", Recipient: mb.Address,
				Attributes: map[string]string{"link": link, "expires": timeAttr(m.Received.Add(sv.s.retention), sv.locOf(mb))}})); err != nil {
				return err // not marked: the next run tries again
			}
		}
		if m.Sender != nil {
			if from, err := aeadOpen(sv.master, m.Sender, adMK(mb.Address)); err == nil && len(from) > 0 {
				if err := sv.emit(ctx, sdk.Event{Type: "webmailbox.reminder_sender", Sender: string(from), Recipient: mb.Address,
					Language: sv.s.defaultLang, Attributes: map[string]string{"state": state, "sent": timeAttr(m.Received, sv.s.loc)}}); err != nil {
					return err
				}
			}
		}
		if err := sv.store.SetReminded(ctx, mb.Address, m.ID, 1); err != nil {
			return err
		}
	}
	return nil
}
