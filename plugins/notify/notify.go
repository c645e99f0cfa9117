// Package notify is the Posthorn notification plugin (binary
// posthorn-notify, see cmd/posthorn-notify and README.md). It subscribes
// to events — those of the web mailbox, S/MIME and PGP plugins and the
// host's delivery events — and for each
//
//   - sends a templated notification mail, in German or English, through
//     Host.Submit (with the event ID as idempotency key, so a redelivered
//     event never mails twice), and
//   - POSTs the event as JSON to the webhooks configured for its type,
//     signed with HMAC-SHA256 over a timestamp and the body, retried with
//     backoff.
package notify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/netdial"
)

// Version is the plugin's version.
const Version = "1.0.0"

// Config is the plugin's [plugin.config] table.
type Config struct {
	// From is the address notifications come from (From: header and
	// envelope sender). Required.
	From string `json:"from"`
	// FromName is the display name in From:. Default "Posthorn".
	FromName string `json:"from_name"`
	// Organization is offered to templates as {{.Organization}}.
	Organization string `json:"organization"`
	// DefaultLanguage is used when an event carries no language hint or
	// one without templates: "en" (default) or "de".
	DefaultLanguage string `json:"default_language"`
	// TemplateDir holds operator templates TYPE.LANG.tmpl that replace or
	// add to the built-in ones. Relative to the plugin's data_dir.
	TemplateDir string `json:"template_dir"`
	// MailEvents selects the event types that send mail (exact names,
	// "prefix.*", "*"). Default ["*"]: every type that has a template.
	MailEvents []string `json:"mail_events"`
	// Webhooks receive events as signed JSON POSTs.
	Webhooks []WebhookConfig `json:"webhook"`
}

// WebhookConfig is one [[plugin.config.webhook]].
type WebhookConfig struct {
	// URL to POST to, http or https.
	URL string `json:"url"`
	// Events selects the event types sent (exact names, "prefix.*",
	// "*"). Default ["*"].
	Events []string `json:"events"`
	// Secret (or SecretFile, whose first line is used; relative to the
	// data_dir) keys the HMAC-SHA256 signature. One of them is required.
	Secret     string `json:"secret"`
	SecretFile string `json:"secret_file"`
	// Timeout per attempt; default "10s".
	Timeout string `json:"timeout"`
	// Attempts in all, 1-10; default 4. Backoff between them starts at
	// 500ms and doubles.
	Attempts int `json:"attempts"`
}

// EventTypes are the subscriptions: the other plugins' events and the
// host's delivery events. Which of them mail or go to webhooks is
// configuration.
var EventTypes = []string{
	"webmailbox.*", "smime.*", "pgp.*",
	sdk.EventBounced, sdk.EventDeferred, sdk.EventDelivered, sdk.EventDiverted,
}

// Plugin implements sdk.Plugin and sdk.EventHook.
type Plugin struct {
	mu    sync.RWMutex
	st    *state
	host  sdk.Host
	now   func() time.Time // for tests
	sleep func(context.Context, time.Duration) error
}

var (
	_ sdk.Plugin    = (*Plugin)(nil)
	_ sdk.EventHook = (*Plugin)(nil)
)

// state is everything derived from one configuration.
type state struct {
	cfg       Config
	templates *templates
	hooks     []*webhook
}

// Describe implements sdk.Plugin.
func (p *Plugin) Describe() sdk.Description {
	return sdk.Description{Name: "notify", Version: Version, EventTypes: EventTypes}
}

// Configure implements sdk.Plugin.
func (p *Plugin) Configure(_ context.Context, c sdk.Config) error {
	cfg := Config{FromName: "Posthorn", DefaultLanguage: "en", MailEvents: []string{"*"}}
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	st, err := newState(cfg, c.DataDir, c.DNSResolver)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.st, p.host = st, c.Host
	p.mu.Unlock()
	sdk.Logger().Info("configured", "from", cfg.From, "templates", st.templates.count(),
		"mail_events", cfg.MailEvents, "webhooks", len(st.hooks), "default_language", cfg.DefaultLanguage)
	return nil
}

func resolve(dataDir, p string) string {
	if p == "" || filepath.IsAbs(p) || dataDir == "" {
		return p
	}
	return filepath.Join(dataDir, p)
}

func newState(cfg Config, dataDir, dnsResolver string) (*state, error) {
	if cfg.From == "" {
		return nil, &sdk.ConfigError{Key: "from", Message: "must be set: the address notifications come from"}
	}
	if a, err := mail.ParseAddress(cfg.From); err != nil || a.Address != cfg.From {
		return nil, &sdk.ConfigError{Key: "from", Message: fmt.Sprintf("%q is not a plain mail address", cfg.From)}
	}
	if strings.ContainsAny(cfg.FromName, "\r\n") {
		return nil, &sdk.ConfigError{Key: "from_name", Message: "must not contain a line break"}
	}
	if !hasLang(cfg.DefaultLanguage) {
		return nil, &sdk.ConfigError{Key: "default_language", Message: fmt.Sprintf("%q: use \"en\" or \"de\"", cfg.DefaultLanguage)}
	}
	for i, t := range cfg.MailEvents {
		if t == "" {
			return nil, &sdk.ConfigError{Key: fmt.Sprintf("mail_events[%d]", i), Message: "empty event type"}
		}
	}
	tm, err := loadTemplates(resolve(dataDir, cfg.TemplateDir))
	if err != nil {
		return nil, &sdk.ConfigError{Key: "template_dir", Message: err.Error()}
	}
	for i, t := range cfg.MailEvents {
		if !strings.Contains(t, "*") && !tm.has(t) {
			return nil, &sdk.ConfigError{Key: fmt.Sprintf("mail_events[%d]", i), Message: fmt.Sprintf("no template for %q (add %s.en.tmpl to template_dir)", t, t)}
		}
	}
	st := &state{cfg: cfg, templates: tm}
	for i, w := range cfg.Webhooks {
		h, err := newWebhook(w, dataDir, dnsResolver)
		if err != nil {
			var ce *sdk.ConfigError
			if errors.As(err, &ce) {
				ce.Key = fmt.Sprintf("webhook[%d].%s", i, ce.Key)
			}
			return nil, err
		}
		st.hooks = append(st.hooks, h)
	}
	return st, nil
}

func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line), nil
}

func (p *Plugin) get() (*state, sdk.Host) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.st, p.host
}

func (p *Plugin) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// HandleEvent implements sdk.EventHook: mail and webhooks, concurrently.
// It fails (and the host redelivers the event, with the same ID) when the
// mail could not be submitted or a webhook could not be reached after its
// attempts; a redelivery mails nothing twice.
func (p *Plugin) HandleEvent(ctx context.Context, ev sdk.Event) error {
	st, host := p.get()
	if st == nil {
		return errors.New("notify: not configured")
	}
	var wg sync.WaitGroup
	errs := make([]error, len(st.hooks)+1)
	for i, h := range st.hooks {
		if !sdk.MatchEventType(h.events, ev.Type) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i+1] = p.post(ctx, h, ev)
		}()
	}
	if sdk.MatchEventType(st.cfg.MailEvents, ev.Type) && st.templates.has(ev.Type) {
		errs[0] = p.mail(ctx, st, host, ev)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// httpClient is the webhook client: no redirects (the signature is for
// the configured URL only); names are looked up through the host's
// resolver (dnsResolver, "" for the system's).
func httpClient(timeout time.Duration, dnsResolver string) *http.Client {
	d := &netdial.Dialer{Server: dnsResolver, Timeout: timeout}
	return &http.Client{
		Transport:     &http.Transport{DialContext: d.DialContext, TLSHandshakeTimeout: timeout, ForceAttemptHTTP2: true},
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
