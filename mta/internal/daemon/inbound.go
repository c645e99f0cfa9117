package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
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
// authentication on the MX listener, milters, inbound plugins), spools
// the message once to a temporary file, runs the checks, prepends their
// header and enqueues. Mail that needs no checks streams straight into
// the queue, and so does mail that only inbound plugins could want when
// none of their filters selects its header.
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
	if !needAuth && m.Milters == nil {
		// Only inbound plugins: when none of them wants this message
		// (their filters decide on the header), it is queued as it
		// streams in, with the header it would have had after spooling.
		br := headReaders.Get().(*bufio.Reader)
		br.Reset(body)
		defer func() {
			br.Reset(nil)
			headReaders.Put(br)
		}()
		head, complete, err := readHead(br)
		if err != nil {
			return "", err
		}
		if complete {
			var hdr bytes.Buffer
			if err := copyStrippingAuthRes(&hdr, bytes.NewReader(head), a.authID); err != nil {
				return "", err
			}
			if !a.inboundWanted(env, hdr.Bytes()) {
				a.d.log.Debug("no inbound plugin interested", "queue_id", env.ID)
				return a.d.Queue.Enqueue(env, io.MultiReader(&hdr, br))
			}
		}
		body = io.MultiReader(bytes.NewReader(head), br)
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

// maxHead bounds the header accept reads into memory to let inbound
// plugins' filters decide before spooling; a longer one is spooled.
const maxHead = 64 << 10

// headReaders are the readers accept reads headers through.
var headReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxHead) }}

// readHead reads the header of a message from br: its lines up to and
// including the empty line that ends it (or, without one, the whole
// message), the way header.Rewrite splits it. complete is false when
// the header is longer than maxHead (or has a line that long): head is
// then what was read, the rest is still in br.
func readHead(br *bufio.Reader) (head []byte, complete bool, err error) {
	for len(head) < maxHead {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		switch {
		case err == io.EOF:
			return head, true, nil
		case err == bufio.ErrBufferFull:
			return head, false, nil
		case err != nil:
			return head, false, err
		case len(line) == 1 || len(line) == 2 && line[0] == '\r':
			return head, true, nil
		}
	}
	return head, false, nil
}

// inboundWanted reports whether an inbound plugin is to be asked about
// the message whose header (Authentication-Results of ours stripped) is
// hdr: one whose filter is not known yet, or that has none, or whose
// filter matches — what inbound decides plugin by plugin after
// spooling, on the same header.
func (a *acceptor) inboundWanted(env *queue.Envelope, hdr []byte) bool {
	h := a.d.plugins
	var in *sdk.FilterInput
	for _, name := range h.Inbound() {
		filter, known := h.InboundFilter(name)
		if !known || filter == nil {
			return true
		}
		if in == nil {
			rcpts := make([]string, len(env.Recipients))
			for i, r := range env.Recipients {
				rcpts[i] = r.Addr
			}
			fi := sdk.ReadFilterInput(bytes.NewReader(hdr), rcpts, a.d.Router.LocalDomain)
			in = &fi
		}
		if filter.Match(*in) {
			return true
		}
	}
	return false
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
