package daemon

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/posthorn/posthorn/mta/internal/milter"
	"github.com/posthorn/posthorn/queue"
)

// Milters sit between the SMTP checks and the inbound plugins (DESIGN,
// message flow): they see what the client sent; the plugins see what the
// milters made of it; milters with rescan_after_plugins see the result of
// the plugins again.

// milterChains builds the chain of each kind of submission.
func (g *generation) milterChains(log *slog.Logger) {
	g.mxMilters = milter.NewChain(g.cfg, g.cfg.Milters.MX, log)
	g.subMilters = milter.NewChain(g.cfg, g.cfg.Milters.Submission, log)
	g.localMilters = milter.NewChain(g.cfg, g.cfg.Milters.Local, log)
}

// errDiscarded stands for "a milter discarded the message": the client
// gets its 250, nothing is queued.
var errDiscarded = errors.New("discarded by a milter")

// milterContent shows the spooled message (headers to prepend first) to
// the session's milters and carries their decision over to env. It
// returns the file to go on with (f, or a new one when a prepended header
// or a milter changed the content).
func (a *acceptor) milterContent(ms *milter.Session, env *queue.Envelope, prepend *strings.Builder, f *os.File) (*os.File, error) {
	if prepend.Len() > 0 {
		// The milters see our own header too (Authentication-Results).
		nf, err := os.CreateTemp(a.tmpDir, "in-*")
		if err != nil {
			return f, err
		}
		_, err = io.Copy(nf, io.MultiReader(strings.NewReader(prepend.String()), f))
		f.Close()
		os.Remove(f.Name())
		if err != nil {
			return nf, err
		}
		prepend.Reset()
		f = nf
	}
	nf, res, err := ms.Content(f, a.tmpDir)
	if err != nil {
		return nf, err
	}
	return nf, a.milterResult(env, res)
}

// milterRescan shows the message again to the milters that want to see
// what the inbound plugins made of it.
func (a *acceptor) milterRescan(ms *milter.Session, env *queue.Envelope, f *os.File) (*os.File, error) {
	nf, res, err := ms.Rescan(f, a.tmpDir)
	if err != nil {
		return nf, err
	}
	return nf, a.milterResult(env, res)
}

func (a *acceptor) milterResult(env *queue.Envelope, res *milter.Result) error {
	if res.Discard != "" {
		a.d.log.Info("discarded by milter", "queue_id", env.ID, "milter", res.Discard, "from", env.From, "rcpts", len(env.Recipients))
		return errDiscarded
	}
	err := res.Apply(env, a.d.Router.ExpandRecipients)
	if errors.Is(err, milter.ErrNoRecipients) {
		a.d.log.Info("discarded: milters removed every recipient", "queue_id", env.ID)
		return errDiscarded
	}
	if err == nil && env.Held {
		a.d.log.Info("quarantined by milter: queued on hold", "queue_id", env.ID, "reason", env.Attrs[milter.AttrQuarantine])
	}
	return err
}

// localMilterCheck starts the milters for local mail (posthorn sendmail) on
// a spooled submission and shows them the message, before the inbound
// hooks, as for SMTP. The caller closes the session.
func (g *generation) localMilterCheck(env *queue.Envelope, f *os.File) (*milter.Session, *os.File, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, f, err
	}
	var rcpts []string
	for _, r := range env.Recipients {
		rcpts = append(rcpts, r.Addr)
	}
	info := milter.Info{Hostname: g.cfg.Hostname, DaemonName: "local", ClientAddr: "127.0.0.1", ClientName: "localhost",
		Helo: g.cfg.Hostname}
	ms, err := g.localMilters.Local(info, nil, env.ID, env.From, rcpts)
	if err != nil {
		return nil, f, err
	}
	nf, res, err := ms.Content(f, g.acc.tmpDir)
	if err != nil {
		return ms, nf, err
	}
	return ms, nf, g.acc.milterResult(env, res)
}
