package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/milter"
	"github.com/posthorn/posthorn/queue"
)

// errSubmitTooBig is what a local submission over the size limit gets.
var errSubmitTooBig = errors.New("message exceeds max_message_size")

// submit queues a message handed in locally (posthorn sendmail) over the
// control socket. The client has already made the line endings CRLF.
func (d *Daemon) submit(req control.Request, body io.Reader) (string, error) {
	return d.submitWith(req, body, nil, "sendmail")
}

// submitWith is submit with attributes for the queued envelope; via
// names the way in for the log.
func (d *Daemon) submitWith(req control.Request, body io.Reader, attrs map[string]string, via string) (string, error) {
	if len(req.To) == 0 {
		return "", errors.New("no recipients")
	}
	var rcpts []*queue.Recipient
	for _, to := range req.To {
		if !strings.Contains(to, "@") {
			return "", fmt.Errorf("recipient %q is not an address", to)
		}
		rcpts = append(rcpts, &queue.Recipient{Addr: to, Notify: req.Notify})
	}
	rcpts, err := d.Router.ExpandRecipients(rcpts)
	if err != nil {
		return "", err
	}
	env := &queue.Envelope{
		ID: d.Queue.NewID(), From: req.From, Recipients: rcpts,
		Ret: req.Ret, EnvID: req.EnvID, AuthUser: req.User, ClientAddr: "local",
		BodyType: "8BITMIME", Attrs: attrs,
	}
	cfg := d.gen.Load().cfg
	user := sanitizeComment(req.User)
	rec := fmt.Sprintf("Received: by %s (Posthorn, from local user %s)\r\n\tid %s; %s\r\n",
		cfg.Hostname, user, env.ID, time.Now().Format(time.RFC1123Z))
	limit := cfg.SMTP.MaxMessageSize.Bytes()
	if limit <= 0 {
		limit = 1 << 62
	}
	lr := &limitReader{r: body, n: limit}
	var id string
	if d.localHooks() || d.gen.Load().localMilters != nil {
		id, err = d.submitInspected(env, io.MultiReader(strings.NewReader(rec), lr))
	} else {
		id, err = d.Queue.Enqueue(env, io.MultiReader(strings.NewReader(rec), lr))
	}
	if err != nil {
		return "", err
	}
	d.log.Info("queued", "queue_id", id, "from", env.From, "rcpts", len(env.Recipients), "via", via, "user", req.User)
	return id, nil
}

// localHooks reports whether any inbound plugin inspects local
// submissions (plugin.local_submissions = "inspect", the default).
func (d *Daemon) localHooks() bool {
	if d.plugins == nil {
		return false
	}
	for _, name := range d.plugins.Inbound() {
		if d.plugins.Plugin(name).LocalSubmissions != "skip" {
			return true
		}
	}
	return false
}

// submitInspected spools a local submission, runs the inbound hooks over
// it as for mail received over SMTP (except those of plugins configured
// with local_submissions = "skip") and queues what they leave. A plugin's
// rejection comes back as the *smtp.SMTPError it would have been over
// SMTP; posthorn sendmail prints it.
func (d *Daemon) submitInspected(env *queue.Envelope, body io.Reader) (string, error) {
	f, err := os.CreateTemp(d.tmpDir, "local-*")
	if err != nil {
		return "", err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	n, err := io.Copy(f, body)
	if err != nil {
		return "", err
	}
	env.Size = n
	g := d.gen.Load()
	var ms *milter.Session
	if g.localMilters != nil {
		var nf *os.File
		ms, nf, err = g.localMilterCheck(env, f)
		f = nf
		if ms != nil {
			defer ms.Close()
		}
		if errors.Is(err, errDiscarded) {
			return env.ID, nil
		}
		if err != nil {
			return "", err
		}
	}
	hdrs := ""
	if d.localHooks() {
		nf, h, err := g.acc.inbound(env, sdkMeta{local: true}, f)
		replaced := nf != f
		f = nf // the deferred cleanup removes whichever file is current
		if err != nil {
			return "", err
		}
		hdrs = h
		if replaced && ms.Rescans() {
			nf, err := g.acc.milterRescan(ms, env, f)
			f = nf
			if errors.Is(err, errDiscarded) {
				return env.ID, nil
			}
			if err != nil {
				return "", err
			}
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return d.Queue.Enqueue(env, io.MultiReader(strings.NewReader(hdrs), f))
}

type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errSubmitTooBig
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

func sanitizeComment(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == '(' || r == ')' || r == '\\' || r > 0x7e {
			return -1
		}
		return r
	}, s)
	if s == "" {
		return "unknown"
	}
	return s
}
