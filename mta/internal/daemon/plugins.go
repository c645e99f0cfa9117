package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/delivery"
	"github.com/posthorn/posthorn/mta/internal/pluginhost"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/sdk"
)

// hostAPI is what plugins may do to the MTA (pluginhost.HostAPI): queue a
// new message, and settle recipients they took over.
type hostAPI struct {
	d *Daemon

	mu      sync.Mutex
	keys    map[string]string // idempotency key -> queue ID
	keyLog  *os.File          // append-only: "UNIXTIME QUEUEID KEY" lines
	keyPath string
	// sharedKeys, with [database], holds the keys for every node (the
	// file and map above then only serve as a local first look).
	sharedKeys *sharedKeys
}

// keyRetention is how long an idempotency key is remembered.
const keyRetention = 30 * 24 * time.Hour

var _ pluginhost.HostAPI = (*hostAPI)(nil)

const attrSubmitKey = "submit.key"

func newHostAPI(d *Daemon) (*hostAPI, error) {
	a := &hostAPI{d: d, keys: map[string]string{}, keyPath: filepath.Join(d.cfg.Queue.Dir, "submit-keys.log")}
	if d.shared != nil {
		// Many nodes: a plugin on node B retrying what node A queued
		// must find the key, so keys live in the shared database.
		a.sharedKeys = &sharedKeys{db: d.shared, node: d.cfg.Hostname}
		if err := a.sharedKeys.open(d.ctx); err != nil {
			return nil, err
		}
	}
	// Keys are remembered for keyRetention in an append-only file, so a
	// plugin retrying a submission after a restart does not queue it
	// twice even when the first copy has long been delivered.
	now := time.Now()
	var keep []string
	if data, err := os.ReadFile(a.keyPath); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.SplitN(line, " ", 3)
			if len(f) != 3 {
				continue // a torn last line
			}
			ts, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil || now.Sub(time.Unix(ts, 0)) > keyRetention {
				continue
			}
			a.keys[f[2]] = f[1]
			keep = append(keep, line)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// Rewrite without the expired ones, then append from here on.
	tmp := a.keyPath + ".tmp"
	content := strings.Join(keep, "\n")
	if content != "" {
		content += "\n"
	}
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, a.keyPath); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(a.keyPath, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	a.keyLog = f
	// Messages still queued carry their key too.
	for _, env := range d.Queue.List() {
		if k := env.Attrs[attrSubmitKey]; k != "" {
			a.keys[k] = env.ID
		}
	}
	return a, nil
}

// remember records key durably.
func (a *hostAPI) remember(key, id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.keys[key] = id
	if _, err := fmt.Fprintf(a.keyLog, "%d %s %s\n", time.Now().Unix(), id, strings.ReplaceAll(key, "\n", " ")); err == nil {
		err = a.keyLog.Sync()
		if err != nil {
			a.d.log.Warn("could not record a submission key", "err", err)
		}
	}
}

func (a *hostAPI) close() {
	if a.keyLog != nil {
		a.keyLog.Close()
	}
}

// Submit queues a message from a plugin, answering after it is on disk.
func (a *hostAPI) Submit(ctx context.Context, senv *sdk.Envelope, body io.Reader, key string) (string, error) {
	a.mu.Lock()
	if id, ok := a.keys[key]; ok && key != "" {
		a.mu.Unlock()
		return id, pluginhost.ErrDuplicate
	}
	a.mu.Unlock()
	if a.sharedKeys != nil && key != "" {
		id, claimed, err := a.sharedKeys.claim(ctx, key)
		if err != nil {
			return "", fmt.Errorf("submission key: %w", err)
		}
		if !claimed {
			return id, pluginhost.ErrDuplicate
		}
		ok := false
		defer func() {
			if !ok {
				a.sharedKeys.release(key)
			}
		}()
		id, err = a.submit(senv, body, key)
		if err != nil {
			return "", err
		}
		ok = true
		if err := a.sharedKeys.settle(ctx, key, id); err != nil {
			// Queued and fsynced: the answer stands; a retry within the
			// claim's lease finds the key claimed, later it could be
			// queued again.
			a.d.log.Warn("could not record a submission key in the database", "queue_id", id, "err", err)
		}
		a.remember(key, id)
		return id, nil
	}
	id, err := a.submit(senv, body, key)
	if err != nil {
		return "", err
	}
	if key != "" {
		a.remember(key, id)
	}
	return id, nil
}

// submit queues the message.
func (a *hostAPI) submit(senv *sdk.Envelope, body io.Reader, key string) (string, error) {
	var rcpts []*queue.Recipient
	for _, r := range senv.Recipients {
		rcpts = append(rcpts, &queue.Recipient{Addr: r.Address})
	}
	rcpts, err := a.d.Router.ExpandRecipients(rcpts)
	if errors.Is(err, router.ErrNoSuchUser) {
		return "", fmt.Errorf("%w: %w", sdk.ErrUnknownRecipient, err)
	}
	if err != nil {
		return "", err
	}
	if len(rcpts) == 0 {
		return "", errors.New("no recipients")
	}
	plugin, _, _ := strings.Cut(key, ":")
	env := &queue.Envelope{ID: a.d.Queue.NewID(), From: senv.MailFrom, Recipients: rcpts, SMTPUTF8: senv.SMTPUTF8,
		BodyType: "8BITMIME", ClientAddr: delivery.ClientPlugin, Attrs: map[string]string{attrSubmitKey: key}}
	// The hostname and size limit of the config in force (they follow a
	// reload).
	cfg := a.d.gen.Load().cfg
	rec := fmt.Sprintf("Received: by %s (Posthorn, from plugin %s)\r\n\tid %s; %s\r\n",
		cfg.Hostname, sanitizeComment(plugin), env.ID, time.Now().Format(time.RFC1123Z))
	limit := cfg.SMTP.MaxMessageSize.Bytes()
	if limit <= 0 {
		limit = 1 << 62
	}
	id, err := a.d.Queue.Enqueue(env, io.MultiReader(strings.NewReader(rec), &limitReader{r: body, n: limit}))
	if err != nil {
		return "", err
	}
	a.d.log.Info("queued", "queue_id", id, "from", env.From, "rcpts", len(env.Recipients), "via", "plugin", "plugin", plugin)
	return id, nil
}

// Confirm settles a recipient that plugin took over with "pending".
func (a *hostAPI) Confirm(ctx context.Context, plugin, queueID, rcpt, outcome, reason string) error {
	if outcome != "delivered" && outcome != "failed" {
		return fmt.Errorf("unknown outcome %q", outcome)
	}
	if a.d.encryption != nil && a.d.encryption.ConfirmInflight(queueID, plugin, rcpt, delivery.Confirmation{Outcome: outcome, Reason: reason}) {
		a.d.log.Info("diverted recipient confirmed", "queue_id", queueID, "rcpt", rcpt, "plugin", plugin, "outcome", outcome)
		return nil
	}
	env, err := a.d.Queue.Get(queueID)
	if err != nil {
		return err
	}
	for i, r := range env.Recipients {
		if !strings.EqualFold(r.Addr, rcpt) || env.Attrs[delivery.AttrDiverted(i)] != plugin || r.State != queue.Pending {
			continue
		}
		res := queue.Result{Index: i, Diagnostic: "x-posthorn; " + plugin + ": " + reason, RemoteMTA: plugin}
		switch outcome {
		case "delivered":
			res.State, res.Status = queue.Delivered, "2.0.0"
		case "failed":
			res.State, res.Status = queue.Failed, "5.0.0"
		default:
			return fmt.Errorf("unknown outcome %q", outcome)
		}
		a.d.log.Info("diverted recipient confirmed", "queue_id", queueID, "rcpt", rcpt, "plugin", plugin, "outcome", outcome)
		return a.d.Queue.Settle(queueID, []queue.Result{res})
	}
	return fmt.Errorf("%s of %s is not pending for plugin %s", rcpt, queueID, plugin)
}

// inbound runs the inbound hooks of every inbound plugin over the spooled
// message in f, in config order. It returns the file to enqueue (the
// plugin may replace the message) and headers to prepend, or the SMTP
// reply to give.
func (a *acceptor) inbound(env *queue.Envelope, meta sdkMeta, f *os.File) (*os.File, string, error) {
	h := a.d.plugins
	var headers strings.Builder
	var in *sdk.FilterInput // of the current f; nil: not read yet
	for _, name := range h.Inbound() {
		if meta.local && h.Plugin(name).LocalSubmissions == "skip" {
			continue
		}
		if filter, known := h.InboundFilter(name); known && filter != nil {
			if in == nil {
				fi, err := a.filterInput(env, f)
				if err != nil {
					return f, "", err
				}
				in = fi
			}
			if !filter.Match(*in) {
				// Not for this plugin: it is not asked, and its being
				// down does not hold this mail up.
				a.d.log.Debug("inbound plugin not interested", "plugin", name, "queue_id", env.ID)
				continue
			}
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return f, "", err
		}
		v, nf, err := a.runInbound(name, meta.envelope(env), f)
		if err != nil {
			// Every failure is logged here, with its cause, whatever
			// on_failure then does with the mail.
			if h.Plugin(name).OnFailure == "accept" {
				a.d.log.Warn("inbound plugin failed; accepting as configured", "plugin", name, "queue_id", env.ID, "err", err)
				continue
			}
			a.d.log.Warn("inbound plugin failed; refusing for now", "plugin", name, "queue_id", env.ID, "err", err)
			return f, "", errPluginTempfail
		}
		switch v.Action {
		case sdk.ActionAccept:
		case sdk.ActionReject:
			a.d.log.Info("rejected by plugin", "plugin", name, "queue_id", env.ID, "code", v.Code, "text", v.Text)
			return f, "", &smtp.SMTPError{Code: v.Code, EnhancedCode: parseEnhanced(v.EnhancedCode, v.Code), Message: v.Text}
		case sdk.ActionTempfail:
			a.d.log.Info("deferred by plugin", "plugin", name, "queue_id", env.ID, "text", v.Text)
			code := v.Code
			if code == 0 {
				code = 451
			}
			return f, "", &smtp.SMTPError{Code: code, EnhancedCode: parseEnhanced(v.EnhancedCode, code), Message: v.Text}
		case sdk.ActionAddHeaders:
			for _, hd := range v.Headers {
				headers.WriteString(hd.Name + ": " + hd.Value + "\r\n")
			}
		case sdk.ActionReplace:
			f.Close()
			os.Remove(f.Name())
			f = nf
			in = nil
			a.d.log.Info("message replaced by plugin", "plugin", name, "queue_id", env.ID)
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return f, "", err
	}
	return f, headers.String(), nil
}

// filterInput reads what plugins' inbound filters look at from the
// header of the spooled message f.
func (a *acceptor) filterInput(env *queue.Envelope, f *os.File) (*sdk.FilterInput, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	var rcpts []string
	for _, r := range env.Recipients {
		rcpts = append(rcpts, r.Addr)
	}
	in := sdk.ReadFilterInput(f, rcpts, a.d.Router.LocalDomain)
	return &in, nil
}

// runInbound calls one plugin's inbound hook over body. For
// sdk.ActionReplace it returns the replacement, read to its end into a
// new temporary file. The call's context lives until that read is over:
// a gRPC stream whose context is cancelled before it has been drained
// fails with "context canceled" at a random point of the message.
func (a *acceptor) runInbound(name string, senv *sdk.Envelope, body io.Reader) (sdk.Verdict, *os.File, error) {
	h := a.d.plugins
	ctx, cancel := context.WithTimeout(context.Background(), h.Plugin(name).Timeout.D()+time.Second)
	defer cancel()
	v, repl, err := h.Inspect(ctx, name, senv, body)
	if err != nil {
		return v, nil, fmt.Errorf("inspect: %w", err)
	}
	if v.Action != sdk.ActionReplace {
		if repl != nil {
			repl.Close()
		}
		return v, nil, nil
	}
	if repl == nil {
		return v, nil, errors.New("replace verdict without a replacement message")
	}
	defer repl.Close()
	nf, err := os.CreateTemp(a.tmpDir, "repl-*")
	if err != nil {
		return v, nil, fmt.Errorf("spooling the replacement: %w", err)
	}
	n, err := io.Copy(nf, repl)
	if err != nil {
		nf.Close()
		os.Remove(nf.Name())
		return v, nil, fmt.Errorf("reading the replacement after %d bytes: %w", n, err)
	}
	return v, nf, nil
}

var errPluginTempfail = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem, try again later"}

// sdkMeta carries session facts into the plugin's envelope.
type sdkMeta struct {
	tls   bool
	local bool // submitted locally (posthorn sendmail), not over SMTP
}

func (m sdkMeta) envelope(env *queue.Envelope) *sdk.Envelope {
	e := &sdk.Envelope{ID: env.ID, MailFrom: env.From, ClientAddr: env.ClientAddr, Helo: env.ClientHelo,
		AuthUser: env.AuthUser, Size: env.Size, SMTPUTF8: env.SMTPUTF8}
	for _, r := range env.Recipients {
		e.Recipients = append(e.Recipients, sdk.Recipient{Address: r.Addr})
	}
	if m.tls {
		e.TLS = &sdk.TLSInfo{}
	}
	return e
}

func parseEnhanced(s string, code int) smtp.EnhancedCode {
	parts := strings.Split(s, ".")
	if len(parts) == 3 {
		var ec smtp.EnhancedCode
		ok := true
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil {
				ok = false
				break
			}
			ec[i] = n
		}
		if ok && ec[0] == code/100 {
			return ec
		}
	}
	return smtp.EnhancedCode{code / 100, 0, 0}
}

// pluginStatus is the control socket's "plugins" answer.
func (d *Daemon) pluginStatus() (json.RawMessage, error) {
	if d.plugins == nil {
		return json.RawMessage("[]"), nil
	}
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(d.plugins.Status()); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// PluginStatus is the state of every configured plugin.
func (d *Daemon) PluginStatus() []pluginhost.PluginStatus {
	if d.plugins == nil {
		return nil
	}
	return d.plugins.Status()
}
