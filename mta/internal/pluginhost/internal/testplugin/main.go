// Command testplugin is the plugin the pluginhost tests run as real
// processes. Its behaviour is chosen by the local part of the envelope
// sender:
//
//	hang@     Inspect and Transform block for ever, ignoring their context
//	crash@    Inspect: the process exits at once (status 3)
//	count@    Inspect: ADD_HEADERS X-Count (bytes) and X-Sha256 of the body
//	echo@     Inspect: REPLACE with the body, streamed
//	unwrap@   Inspect: REPLACE with the header and the base64-decoded body
//	          (a stand-in for decryption)
//	reject@   Inspect: REJECT 550 5.7.1
//	submit@   Inspect: Host.Submit a message, ADD_HEADERS X-Queue-Id
//	split@    Transform: one output per recipient
//	divert@   Transform: DIVERTED pending, then Host.Confirm for each
//	decline@  Transform: DECLINED
//	(other)   Inspect ACCEPT; Transform one output echoing the body
//
// CanHandle says no to local part "no". Events: "test.ping" makes it
// Submit a message keyed "ping:ID" naming itself and the event;
// "test.relay" makes it Emit "testplug.pong"; "testplug.pong" makes it
// Submit "pong:ID"; "test.hang" blocks for ever. Config: {"name": "x"}
// (put into submitted messages), {"fail": true} is rejected,
// {"filter_header": "X-H"}: the inbound filter selects only mail with
// that header field (default: all mail).
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/posthorn/posthorn/sdk"
)

type plugin struct {
	mu           sync.Mutex
	host         sdk.Host
	name         string
	filterHeader string
}

var (
	_ sdk.InboundHook     = (*plugin)(nil)
	_ sdk.OutboundHook    = (*plugin)(nil)
	_ sdk.EventHook       = (*plugin)(nil)
	_ sdk.InboundFilterer = (*plugin)(nil)
)

func main() { sdk.Serve(&plugin{}) }

func (p *plugin) Describe() sdk.Description {
	return sdk.Description{Name: "testplugin", Version: "0.2.0", EventTypes: []string{"test.*", "testplug.*", sdk.EventDelivered}}
}

func (p *plugin) Configure(_ context.Context, c sdk.Config) error {
	var cfg struct {
		Name         string `json:"name"`
		Fail         bool   `json:"fail"`
		FilterHeader string `json:"filter_header"`
	}
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	if cfg.Fail {
		return &sdk.ConfigError{Key: "fail", Message: "asked to fail"}
	}
	if err := os.WriteFile(c.DataDir+"/configured", []byte(cfg.Name), 0o600); err != nil {
		return err
	}
	p.mu.Lock()
	p.host, p.name, p.filterHeader = c.Host, cfg.Name, cfg.FilterHeader
	p.mu.Unlock()
	return nil
}

// InboundFilter implements sdk.InboundFilterer.
func (p *plugin) InboundFilter() *sdk.InboundFilter {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.filterHeader == "" {
		return nil
	}
	return &sdk.InboundFilter{Rules: []sdk.InboundMatch{{Headers: []string{p.filterHeader}}}}
}

func (p *plugin) get() (sdk.Host, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.host, p.name
}

func mode(env *sdk.Envelope) string {
	local, _, _ := strings.Cut(env.MailFrom, "@")
	return local
}

func (p *plugin) Inspect(ctx context.Context, env *sdk.Envelope, body io.Reader) (sdk.Verdict, error) {
	switch mode(env) {
	case "hang":
		select {}
	case "crash":
		os.Exit(3)
	case "count":
		h := sha256.New()
		n, err := io.Copy(h, body)
		if err != nil {
			return sdk.Verdict{}, err
		}
		return sdk.AddHeaders(
			sdk.Header{Name: "X-Count", Value: strconv.FormatInt(n, 10)},
			sdk.Header{Name: "X-Sha256", Value: hex.EncodeToString(h.Sum(nil))},
		), nil
	case "echo":
		return sdk.Replace(body), nil
	case "unwrap":
		data, err := io.ReadAll(body)
		if err != nil {
			return sdk.Verdict{}, err
		}
		hdr, b64, _ := bytes.Cut(data, []byte("\r\n\r\n"))
		plain, err := base64.StdEncoding.DecodeString(string(bytes.ReplaceAll(b64, []byte("\r\n"), nil)))
		if err != nil {
			return sdk.Verdict{}, err
		}
		return sdk.Replace(io.MultiReader(bytes.NewReader(hdr), strings.NewReader("\r\n\r\n"), bytes.NewReader(plain))), nil
	case "reject":
		return sdk.Reject(550, "5.7.1", "rejected by testplugin"), nil
	case "submit":
		host, name := p.get()
		id, err := host.Submit(ctx, "submit:"+env.Helo, &sdk.Envelope{
			MailFrom:   "testplugin@example.test",
			Recipients: []sdk.Recipient{{Address: "notify@example.test"}},
		}, strings.NewReader("Subject: from "+name+"\r\n\r\nhello\r\n"))
		if err != nil {
			return sdk.Verdict{}, err
		}
		return sdk.AddHeaders(sdk.Header{Name: "X-Queue-Id", Value: id}), nil
	}
	return sdk.Accept(), nil
}

func (p *plugin) CanHandle(_ context.Context, env *sdk.Envelope, rcpts []sdk.Recipient) ([]sdk.Answer, error) {
	if mode(env) == "cherr" {
		return nil, errors.New("testplugin: asked to fail CanHandle")
	}
	var out []sdk.Answer
	for _, r := range rcpts {
		no := strings.HasPrefix(r.Address, "no@")
		out = append(out, sdk.Answer{Recipient: r.Address, CanHandle: !no, Reason: "test"})
	}
	return out, nil
}

func (p *plugin) Transform(ctx context.Context, env *sdk.Envelope, group []sdk.Recipient, body io.Reader) (sdk.OutboundResult, error) {
	switch mode(env) {
	case "hang":
		select {}
	case "tcrash":
		os.Exit(3)
	case "split":
		data, err := io.ReadAll(body)
		if err != nil {
			return sdk.OutboundResult{}, err
		}
		var outs []sdk.Output
		for _, r := range group {
			outs = append(outs, sdk.Output{Recipients: []string{r.Address}, Body: bytes.NewReader(append([]byte("To: <"+r.Address+">\r\n"), data...))})
		}
		return sdk.Transformed(outs...), nil
	case "divert":
		host, _ := p.get()
		for _, r := range group {
			err := host.Confirm(ctx, sdk.Confirmation{QueueID: env.ID, Recipient: r.Address, Outcome: sdk.ConfirmDelivered, Reason: "stored"})
			if err != nil {
				return sdk.OutboundResult{}, err
			}
		}
		return sdk.Diverted(true, "stored in the test mailbox"), nil
	case "decline":
		return sdk.Declined("asked to decline"), nil
	}
	return sdk.Transformed(sdk.Output{Recipients: sdk.Addresses(group), Body: body}), nil
}

func (p *plugin) HandleEvent(ctx context.Context, ev sdk.Event) error {
	host, name := p.get()
	switch ev.Type {
	case "test.hang":
		select {}
	case "test.ping", "testplug.pong":
		key := "ping:" + ev.ID
		if ev.Type == "testplug.pong" {
			key = "pong:" + ev.ID
		}
		body := fmt.Sprintf("Subject: %s\r\nX-Plugin: %s\r\nX-Source: %s\r\nX-Attr: %s\r\n\r\n%s\r\n", ev.Type, name, ev.SourcePlugin, ev.Attributes["a"], ev.ID)
		_, err := host.Submit(ctx, key, &sdk.Envelope{MailFrom: "testplugin@example.test", Recipients: []sdk.Recipient{{Address: "events@example.test"}}}, strings.NewReader(body))
		return err
	case "test.relay":
		return host.Emit(ctx, sdk.Event{ID: "pong-" + ev.ID, Type: "testplug.pong", Attributes: map[string]string{"a": name}})
	}
	return nil
}
