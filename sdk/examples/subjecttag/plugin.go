package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/posthorn/posthorn/sdk"
)

// Version is the plugin's version, reported by Describe.
const Version = "1.0.0"

// Config is the plugin's [plugin.config] table.
type Config struct {
	// Tag is prefixed to the Subject of outgoing mail and is the value of
	// the inbound header. Default "[posthorn]".
	Tag string `json:"tag"`
	// Header is the header added to accepted inbound mail. Default
	// "X-Subject-Tag".
	Header string `json:"header"`
	// RejectWords: inbound mail containing one of them (ASCII
	// case-insensitive, anywhere in the message) is refused.
	RejectWords []string `json:"reject_words"`
	// Domains whose recipients get outbound tagging; empty: all.
	Domains []string `json:"domains"`
	// Footer appended to outgoing text/plain messages; empty: none.
	Footer string `json:"footer"`
}

// Plugin implements sdk.Plugin, sdk.InboundHook, sdk.OutboundHook and
// sdk.EventHook.
type Plugin struct {
	mu   sync.RWMutex
	cfg  Config
	host sdk.Host
}

var (
	_ sdk.Plugin       = (*Plugin)(nil)
	_ sdk.InboundHook  = (*Plugin)(nil)
	_ sdk.OutboundHook = (*Plugin)(nil)
	_ sdk.EventHook    = (*Plugin)(nil)
)

func (p *Plugin) Describe() sdk.Description {
	return sdk.Description{
		Name:       "subjecttag",
		Version:    Version,
		EventTypes: []string{sdk.EventDelivered, sdk.EventBounced, "subjecttag.*"},
	}
}

func (p *Plugin) Configure(_ context.Context, c sdk.Config) error {
	cfg := Config{Tag: "[posthorn]", Header: "X-Subject-Tag"}
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	if cfg.Tag == "" || strings.ContainsAny(cfg.Tag, "\r\n") {
		return &sdk.ConfigError{Key: "tag", Message: "must be a non-empty single line"}
	}
	if err := (sdk.Header{Name: cfg.Header, Value: cfg.Tag}).Validate(); err != nil {
		return &sdk.ConfigError{Key: "header", Message: err.Error()}
	}
	for i, w := range cfg.RejectWords {
		if w == "" || len(w) > 256 {
			return &sdk.ConfigError{Key: fmt.Sprintf("reject_words[%d]", i), Message: "must be 1 to 256 bytes"}
		}
		cfg.RejectWords[i] = strings.ToLower(w)
	}
	for i, d := range cfg.Domains {
		cfg.Domains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	p.mu.Lock()
	p.cfg, p.host = cfg, c.Host
	p.mu.Unlock()
	sdk.Logger().Info("configured", "tag", cfg.Tag, "reject_words", len(cfg.RejectWords), "domains", cfg.Domains)
	return nil
}

func (p *Plugin) config() (Config, sdk.Host) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cfg, p.host
}

// Inspect refuses mail with a forbidden word and tags the rest.
func (p *Plugin) Inspect(ctx context.Context, env *sdk.Envelope, body io.Reader) (sdk.Verdict, error) {
	cfg, host := p.config()
	word, err := findWord(body, cfg.RejectWords)
	if err != nil {
		return sdk.Verdict{}, err
	}
	if word == "" {
		return sdk.AddHeaders(sdk.Header{Name: cfg.Header, Value: cfg.Tag}), nil
	}
	// Tell subscribers (and ourselves, see HandleEvent). Best effort.
	err = host.Emit(ctx, sdk.Event{
		Type:       "subjecttag.rejected",
		Sender:     env.MailFrom,
		Attributes: map[string]string{"word": word, "client": env.ClientAddr},
	})
	if err != nil && !errors.Is(err, sdk.ErrNoHost) {
		sdk.Logger().Warn("emitting event", "error", err)
	}
	return sdk.Reject(550, "5.7.1", "message refused: it contains a forbidden word"), nil
}

// findWord streams r and returns the first of words (lower case) found,
// ASCII case-insensitively, "" if none. Matches across read boundaries are
// found by keeping the last len(longest word)-1 bytes.
func findWord(r io.Reader, words []string) (string, error) {
	if len(words) == 0 {
		return "", nil // the body need not be read at all
	}
	keep := 0
	for _, w := range words {
		keep = max(keep, len(w)-1)
	}
	buf := make([]byte, 0, 64<<10+keep)
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		lower := bytes.ToLower(buf)
		for _, w := range words {
			if bytes.Contains(lower, []byte(w)) {
				return w, nil
			}
		}
		if err == io.EOF {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		if len(buf) > keep {
			buf = buf[:copy(buf, buf[len(buf)-keep:])]
		}
	}
}

// CanHandle says yes for recipients in the configured domains.
func (p *Plugin) CanHandle(_ context.Context, _ *sdk.Envelope, rcpts []sdk.Recipient) ([]sdk.Answer, error) {
	cfg, _ := p.config()
	out := make([]sdk.Answer, len(rcpts))
	for i, r := range rcpts {
		ok := inDomains(r.Address, cfg.Domains)
		out[i] = sdk.Answer{Recipient: r.Address, CanHandle: ok}
		if !ok {
			out[i].Reason = "domain not configured for tagging"
		}
	}
	return out, nil
}

func inDomains(addr string, domains []string) bool {
	if len(domains) == 0 {
		return true
	}
	at := strings.LastIndexByte(addr, '@')
	d := strings.ToLower(addr[at+1:])
	for _, x := range domains {
		if d == x {
			return true
		}
	}
	return false
}

// Transform tags the Subject and appends the footer, streaming: the new
// message is produced while the host is still sending the old one.
func (p *Plugin) Transform(ctx context.Context, _ *sdk.Envelope, group []sdk.Recipient, body io.Reader) (sdk.OutboundResult, error) {
	cfg, _ := p.config()
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(rewrite(pw, body, cfg))
	}()
	return sdk.Transformed(sdk.Output{Recipients: sdk.Addresses(group), Body: pr}), nil
}

// rewrite copies the message from r to w with the tag in the Subject and
// the footer after a text/plain body.
func rewrite(w io.Writer, r io.Reader, cfg Config) error {
	br := bufio.NewReaderSize(r, 64<<10)
	bw := bufio.NewWriterSize(w, 64<<10)
	plain := true
	cont := false // the previous fragment did not end its line
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
			return err
		}
		name, value, isField := cutField(line)
		isField = isField && !cont
		switch {
		case isField && strings.EqualFold(name, "Subject") && !strings.Contains(value, cfg.Tag):
			fmt.Fprintf(bw, "Subject: %s %s", cfg.Tag, strings.TrimLeft(value, " \t"))
		case isField && strings.EqualFold(name, "Content-Type"):
			v := strings.ToLower(strings.TrimSpace(value))
			plain = strings.HasPrefix(v, "text/plain")
			bw.Write(line)
		default:
			bw.Write(line)
		}
		if err == io.EOF {
			return bw.Flush() // headers only, no body
		}
		if !cont && err == nil && len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // the empty line ending the header section
		}
		cont = err == bufio.ErrBufferFull
	}
	if _, err := io.Copy(bw, br); err != nil {
		return err
	}
	if cfg.Footer != "" && plain {
		fmt.Fprintf(bw, "\r\n-- \r\n%s\r\n", strings.ReplaceAll(cfg.Footer, "\n", "\r\n"))
	}
	return bw.Flush()
}

// cutField splits a header line "Name: value\r\n" into name and value (with
// its line ending). Continuation lines are not fields.
func cutField(line []byte) (name, value string, ok bool) {
	if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
		return "", "", false
	}
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", "", false
	}
	return string(line[:i]), string(line[i+1:]), true
}

// HandleEvent logs the events the plugin subscribed to.
func (p *Plugin) HandleEvent(_ context.Context, ev sdk.Event) error {
	sdk.Logger().Info("event", "type", ev.Type, "queue_id", ev.QueueID, "recipient", ev.Recipient, "source", ev.SourcePlugin)
	return nil
}
