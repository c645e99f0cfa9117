package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/authres"
	"github.com/posthorn/posthorn/mta/internal/header"
	"github.com/posthorn/posthorn/mta/internal/metrics"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/sdk"
)

// acceptor is the seam between the SMTP server and the queue: it reserves
// queue IDs and, for mail that needs checks before it is queued (sender
// authentication on the MX listener), spools the message once to a
// temporary file, runs the checks, prepends their header and enqueues.
// Mail that needs no checks streams straight into the queue.
type acceptor struct {
	d       *Daemon
	checker *authres.Checker // nil: no SPF/DKIM/DMARC checks
	enforce bool             // refuse DMARC p=reject failures
	tmpDir  string
	authID  string // our authserv-id: Authentication-Results claiming it are removed
	timeout time.Duration
}

var _ smtpd.Acceptor = (*acceptor)(nil)

var errDMARCReject = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
	Message: "Message rejected by the sender domain's DMARC policy"}

func (a *acceptor) NewID() string { return a.d.Queue.NewID() }

func (a *acceptor) Accept(m smtpd.Meta, env *queue.Envelope, body io.Reader) (string, error) {
	id, err := a.accept(m, env, body)
	if errors.Is(err, errDiscarded) {
		return env.ID, nil // the client gets its 250; nothing was received
	}
	if err == nil && a.d.plugins != nil {
		a.d.plugins.Emit(sdk.Event{Type: sdk.EventReceived, QueueID: id, Sender: env.From, Time: time.Now(),
			Attributes: map[string]string{"listener": m.Kind.String(), "recipients": strconv.Itoa(len(env.Recipients))}})
	}
	return id, err
}

func (a *acceptor) accept(m smtpd.Meta, env *queue.Envelope, body io.Reader) (string, error) {
	needAuth := a.checker != nil && m.Kind == smtpd.MX && !m.Trusted && env.AuthUser == ""
	needPlugins := a.d.plugins != nil && len(a.d.plugins.Inbound()) > 0
	if !needAuth && !needPlugins && m.Milters == nil {
		return a.d.Queue.Enqueue(env, body)
	}
	f, err := os.CreateTemp(a.tmpDir, "in-*")
	if err != nil {
		return "", err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	if err := copyStrippingAuthRes(f, body, a.authID); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	var prepend strings.Builder
	if needAuth {
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		res, err := a.checker.Check(ctx, net.ParseIP(env.ClientAddr), env.ClientHelo, env.From, f)
		cancel()
		if err != nil {
			return "", err
		}
		a.d.log.Info("sender authentication", "queue_id", env.ID, "spf", res.SPF, "dkim", res.DKIM, "dmarc", res.DMARC,
			"policy", res.DMARCPolicy, "from_domain", res.FromDomain)
		metrics.AuthResults.WithLabelValues("spf", res.SPF).Inc()
		metrics.AuthResults.WithLabelValues("dkim", res.DKIM).Inc()
		metrics.AuthResults.WithLabelValues("dmarc", res.DMARC).Inc()
		if a.enforce && res.Reject {
			return "", errDMARCReject
		}
		prepend.WriteString(res.Header)
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", err
		}
	}
	if m.Milters != nil {
		nf, err := a.milterContent(m.Milters, env, &prepend, f)
		f = nf
		if err != nil {
			return "", err
		}
	}
	if needPlugins {
		nf, hdrs, err := a.inbound(env, sdkMeta{tls: m.TLS}, f)
		replaced := nf != f
		f = nf // the deferred cleanup removes whichever file is current
		if err != nil {
			return "", err
		}
		prepend.WriteString(hdrs)
		if replaced && m.Milters.Rescans() {
			nf, err := a.milterRescan(m.Milters, env, f)
			f = nf
			if err != nil {
				return "", err
			}
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return a.d.Queue.Enqueue(env, io.MultiReader(strings.NewReader(prepend.String()), f))
}

// copyStrippingAuthRes copies a message, leaving out Authentication-Results
// header fields that carry our own authserv-id: only we may claim it
// (RFC 8601 §5).
func copyStrippingAuthRes(w io.Writer, r io.Reader, authID string) error {
	return header.Rewrite(r, w, func(name, value string) (string, bool) {
		return value, !isOurAuthRes(name+":"+value, authID)
	})
}

func isOurAuthRes(line, authID string) bool {
	name, value, ok := strings.Cut(line, ":")
	if !ok || !strings.EqualFold(strings.TrimSpace(name), "Authentication-Results") {
		return false
	}
	id := strings.TrimSpace(value)
	if i := strings.IndexAny(id, "; \t\r\n"); i >= 0 {
		id = id[:i]
	}
	return strings.EqualFold(id, authID)
}
