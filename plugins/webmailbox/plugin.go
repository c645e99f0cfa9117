// Package webmailbox is Posthorn's web-mailbox fallback: the encryption
// policy chain's last resort for recipients without a certificate or key.
// A diverted message is stored, encrypted at rest, in the recipient's
// mailbox (created on first contact); the recipient is told through
// events the notify plugin turns into mails (activation link, new
// message, reminders, PIN for the sender, quota) and reads, replies (only
// to operator-allowed addresses), exports and deletes in a server-rendered
// web interface in German and English. See README.md.
package webmailbox

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

// Version of the plugin.
const Version = "0.1.0"

// Plugin is the sdk.Plugin: outbound hook (method "webmailbox") and the web
// server.
type Plugin struct {
	// Logger; nil: the SDK's logger (hclog JSON on stderr, merged by the host).
	Logger *slog.Logger
	// Now is the clock; nil: time.Now. Tests move it.
	Now func() time.Time

	mu   sync.Mutex
	svc  *Service
	srv  *http.Server
	stop context.CancelFunc
}

var (
	_ sdk.Plugin       = (*Plugin)(nil)
	_ sdk.OutboundHook = (*Plugin)(nil)
)

// Describe names the plugin.
func (p *Plugin) Describe() sdk.Description {
	return sdk.Description{Name: "webmailbox", Version: Version, MaxMessageSize: 64 << 20}
}

// Configure validates the configuration, opens the store and starts the
// web server and the housekeeping loop.
func (p *Plugin) Configure(ctx context.Context, c sdk.Config) error {
	var cfg Config
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	dataDir := c.DataDir
	if dataDir == "" {
		dataDir = "."
	}
	s, err := cfg.validate(dataDir)
	if err != nil {
		return err
	}
	s.shared = c.Database
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("webmailbox: data dir: %w", err)
	}
	log := p.Logger
	if log == nil {
		log = newSDKLogger()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shutdownLocked()
	svc, err := newService(ctx, s, c.Host, log)
	if err != nil {
		return err
	}
	if p.Now != nil {
		svc.Now = p.Now
	}
	p.svc = svc
	lctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	if s.listen != "" {
		ln, err := net.Listen("tcp", s.listen)
		if err != nil {
			svc.Close()
			cancel()
			return &sdk.ConfigError{Key: "listen", Message: err.Error()}
		}
		p.srv = &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
			WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
		srv := p.srv
		go func() {
			var err error
			if s.tlsCert != "" {
				srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
				err = srv.ServeTLS(ln, s.tlsCert, s.tlsKey)
			} else {
				err = srv.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("web server stopped", "error", err)
			}
		}()
	}
	go svc.housekeepingLoop(lctx, time.Hour)
	log.Info("configured", "base_url", s.baseURL.String(), "listen", s.listen, "reset_allowed", s.resetAllowed, "quota", s.quota)
	return nil
}

func (p *Plugin) shutdownLocked() {
	if p.stop != nil {
		p.stop()
	}
	if p.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p.srv.Shutdown(ctx)
		cancel()
		p.srv = nil
	}
	if p.svc != nil {
		p.svc.Close()
		p.svc = nil
	}
}

func (p *Plugin) service() (*Service, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.svc == nil {
		return nil, errors.New("webmailbox: not configured")
	}
	return p.svc, nil
}

// CanHandle takes every recipient: the web mailbox is the last resort.
func (p *Plugin) CanHandle(ctx context.Context, env *sdk.Envelope, rcpts []sdk.Recipient) ([]sdk.Answer, error) {
	out := make([]sdk.Answer, len(rcpts))
	for i, r := range rcpts {
		out[i] = sdk.Answer{Recipient: r.Address, CanHandle: true, Reason: "web mailbox"}
	}
	return out, nil
}

// Transform stores the message in every recipient's mailbox. Recipients
// whose mailbox is full are confirmed as failed (the host bounces them to
// the sender with the reason); the others as delivered.
func (p *Plugin) Transform(ctx context.Context, env *sdk.Envelope, group []sdk.Recipient, body io.Reader) (sdk.OutboundResult, error) {
	svc, err := p.service()
	if err != nil {
		return sdk.OutboundResult{}, err
	}
	raw, err := readAllCtx(ctx, body, 64<<20)
	if err != nil {
		return sdk.OutboundResult{}, err
	}
	results := make([]DivertResult, len(group))
	full := false
	for i, r := range group {
		results[i] = svc.Divert(ctx, env, r.Address, raw)
		if errors.Is(results[i].Err, ErrQuota) {
			full = true
		} else if results[i].Err != nil {
			// Storage or notification failed: the host defers and retries;
			// a retry does not store the message twice (queue id).
			return sdk.OutboundResult{}, fmt.Errorf("web mailbox of %s: %w", r.Address, results[i].Err)
		}
	}
	if !full {
		return sdk.Diverted(false, "stored in the web mailbox"), nil
	}
	for i, r := range group {
		c := sdk.Confirmation{QueueID: env.ID, Recipient: r.Address, Outcome: sdk.ConfirmDelivered, Reason: "stored in the web mailbox"}
		if errors.Is(results[i].Err, ErrQuota) {
			c.Outcome, c.Reason = sdk.ConfirmFailed, "the recipient's web mailbox is full (quota exceeded)"
		}
		if err := svc.host.Confirm(ctx, c); err != nil {
			return sdk.OutboundResult{}, fmt.Errorf("confirming %s: %w", r.Address, err)
		}
	}
	return sdk.Diverted(true, "web mailbox; some mailboxes are full"), nil
}

func readAllCtx(ctx context.Context, r io.Reader, limit int64) ([]byte, error) {
	var buf []byte
	chunk := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if int64(len(buf)) > limit {
			return nil, sdk.ErrMessageTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
