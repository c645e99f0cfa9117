package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

// Webhook request headers.
const (
	HeaderSignature = "X-Posthorn-Signature" // "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)
	HeaderTimestamp = "X-Posthorn-Timestamp" // Unix seconds when the request was signed
	HeaderEventID   = "X-Posthorn-Event-Id"
	HeaderEventType = "X-Posthorn-Event-Type"
)

type webhook struct {
	url      string
	events   []string
	secret   []byte
	client   *http.Client
	attempts int
}

func newWebhook(w WebhookConfig, dataDir, dnsResolver string) (*webhook, error) {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &sdk.ConfigError{Key: "url", Message: fmt.Sprintf("%q is not an http or https URL", w.URL)}
	}
	secret := w.Secret
	switch {
	case secret != "" && w.SecretFile != "":
		return nil, &sdk.ConfigError{Key: "secret_file", Message: "set secret or secret_file, not both"}
	case w.SecretFile != "":
		if secret, err = readSecretFile(resolve(dataDir, w.SecretFile)); err != nil {
			return nil, &sdk.ConfigError{Key: "secret_file", Message: err.Error()}
		}
		if secret == "" {
			return nil, &sdk.ConfigError{Key: "secret_file", Message: "the file's first line is empty"}
		}
	case secret == "":
		return nil, &sdk.ConfigError{Key: "secret", Message: "must be set (or secret_file): webhooks are always signed"}
	}
	timeout := 10 * time.Second
	if w.Timeout != "" {
		if timeout, err = time.ParseDuration(w.Timeout); err != nil || timeout <= 0 {
			return nil, &sdk.ConfigError{Key: "timeout", Message: fmt.Sprintf("%q is not a positive duration like \"10s\"", w.Timeout)}
		}
	}
	attempts := 4
	if w.Attempts != 0 {
		if w.Attempts < 1 || w.Attempts > 10 {
			return nil, &sdk.ConfigError{Key: "attempts", Message: "must be 1 to 10"}
		}
		attempts = w.Attempts
	}
	events := w.Events
	if len(events) == 0 {
		events = []string{"*"}
	}
	return &webhook{url: w.URL, events: events, secret: []byte(secret), client: httpClient(timeout, dnsResolver), attempts: attempts}, nil
}

// Payload is the JSON body of a webhook request.
type Payload struct {
	ID           string            `json:"id"`
	Type         string            `json:"type"`
	Time         time.Time         `json:"time"`
	QueueID      string            `json:"queue_id,omitempty"`
	Sender       string            `json:"sender,omitempty"`
	Recipient    string            `json:"recipient,omitempty"`
	Attributes   map[string]string `json:"attributes,omitempty"`
	SourcePlugin string            `json:"source_plugin,omitempty"`
	Language     string            `json:"language,omitempty"`
}

// Sign returns the signature header value for a body sent at timestamp
// (Unix seconds).
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a webhook request as a receiver should: the signature
// over timestamp and body, and that the timestamp is within maxAge of
// now (against replays).
func Verify(secret []byte, timestamp, signature string, body []byte, now time.Time, maxAge time.Duration) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("bad timestamp")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > maxAge || d < -maxAge {
		return fmt.Errorf("timestamp %s is %v away from now", timestamp, d.Round(time.Second))
	}
	if !hmac.Equal([]byte(Sign(secret, timestamp, body)), []byte(signature)) {
		return errors.New("signature does not match")
	}
	return nil
}

// permanent marks a failure retrying cannot fix.
type permanent struct{ error }

// post sends ev to h, retrying network errors, 5xx and 429 with backoff.
// A permanent refusal (other 4xx, 3xx) is logged and not an error: a
// redelivery would fail the same way.
func (p *Plugin) post(ctx context.Context, h *webhook, ev sdk.Event) error {
	body, err := json.Marshal(Payload{
		ID: ev.ID, Type: ev.Type, Time: ev.Time.UTC(), QueueID: ev.QueueID, Sender: ev.Sender,
		Recipient: ev.Recipient, Attributes: ev.Attributes, SourcePlugin: ev.SourcePlugin, Language: ev.Language,
	})
	if err != nil {
		return err
	}
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err = p.postOnce(ctx, h, ev, body)
		if err == nil {
			sdk.Logger().Info("webhook delivered", "url", h.url, "event_id", ev.ID, "event_type", ev.Type, "attempt", attempt)
			return nil
		}
		var perm permanent
		if errors.As(err, &perm) {
			sdk.Logger().Error("webhook refused the event; not retried", "url", h.url, "event_id", ev.ID, "event_type", ev.Type, "error", err)
			return nil
		}
		if attempt >= h.attempts || ctx.Err() != nil {
			sdk.Logger().Error("webhook failed", "url", h.url, "event_id", ev.ID, "event_type", ev.Type, "attempts", attempt, "error", err)
			return fmt.Errorf("notify: webhook %s: %w", h.url, err)
		}
		sdk.Logger().Warn("webhook attempt failed; retrying", "url", h.url, "event_id", ev.ID, "attempt", attempt, "retry_in", wait.String(), "error", err)
		if err := p.pause(ctx, wait); err != nil {
			return fmt.Errorf("notify: webhook %s: %w", h.url, err)
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func (p *Plugin) pause(ctx context.Context, d time.Duration) error {
	if p.sleep != nil {
		return p.sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (p *Plugin) postOnce(ctx context.Context, h *webhook, ev sdk.Event, body []byte) error {
	ts := strconv.FormatInt(p.clock().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return permanent{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "posthorn-notify/"+Version)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(h.secret, ts, body))
	req.Header.Set(HeaderEventID, ev.ID)
	req.Header.Set(HeaderEventType, ev.Type)
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c >= 500 || c == http.StatusTooManyRequests || c == http.StatusRequestTimeout:
		return fmt.Errorf("HTTP %d: %s", c, strings.TrimSpace(string(snippet)))
	default:
		return permanent{fmt.Errorf("HTTP %d: %s", c, strings.TrimSpace(string(snippet)))}
	}
}
