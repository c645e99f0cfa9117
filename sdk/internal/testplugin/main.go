// Command testplugin is the SDK's own test plugin, with failure switches
// chosen by the local part of the envelope sender:
//
//	panic@   the hook panics
//	slow@    the hook blocks until its context ends
//	echo@    Inspect: REPLACE with the body itself (streaming)
//	count@   Inspect: ADD_HEADERS X-Count (bytes) and X-Sha256 of the body
//	submit@  Inspect: Host.Submit a message, ADD_HEADERS X-Queue-Id
//	stdout@  Inspect: print to stdout (forbidden), then ACCEPT
//	reject@  Inspect: REJECT 550 5.7.1
//	envelope@ Inspect: ADD_HEADERS X-Envelope, the envelope as JSON
//	split@   Transform: one output per recipient, "To: <rcpt>" + body
//	divert@  Transform: DIVERTED pending, then Host.Confirm for each
//	decline@ Transform: DECLINED
//	(other)  Inspect: ACCEPT; Transform: one output echoing the body
//
// CanHandle says no to recipients with local part "no". Events: type
// "test.panic" panics, "test.ping" emits "testplugin.pong" with the same
// attributes. Configure rejects {"fail": true}, unknown keys, and
// {"want_database": DSN} unless Config.Database carries that DSN.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/posthorn/posthorn/sdk"
)

type plugin struct {
	mu   sync.Mutex
	host sdk.Host
}

func main() { sdk.Serve(&plugin{}) }

func (p *plugin) Describe() sdk.Description {
	return sdk.Description{Name: "testplugin", Version: "0.1.0", EventTypes: []string{"test.*", sdk.EventDelivered}}
}

func (p *plugin) Configure(_ context.Context, c sdk.Config) error {
	var cfg struct {
		Fail bool `json:"fail"`
		// WantDatabase: fail unless the host handed over this DSN
		// with max_conns 3 (protocol minor 3).
		WantDatabase string `json:"want_database"`
		// WantDNSResolver: fail unless the host handed over this
		// resolver (tests of sdk.Config.DNSResolver).
		WantDNSResolver *string `json:"want_dns_resolver"`
	}
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	if cfg.Fail {
		return &sdk.ConfigError{Key: "fail", Message: "asked to fail"}
	}
	if cfg.WantDatabase != "" && (c.Database == nil || c.Database.DSN != cfg.WantDatabase || c.Database.MaxConns != 3) {
		return &sdk.ConfigError{Key: "want_database", Message: fmt.Sprintf("got %+v", c.Database)}
	}
	if cfg.WantDNSResolver != nil && *cfg.WantDNSResolver != c.DNSResolver {
		return &sdk.ConfigError{Key: "want_dns_resolver", Message: fmt.Sprintf("host's resolver is %q", c.DNSResolver)}
	}
	p.mu.Lock()
	p.host = c.Host
	p.mu.Unlock()
	return nil
}

func (p *plugin) h() sdk.Host {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.host == nil {
		panic("hook called before Configure")
	}
	return p.host
}

func mode(env *sdk.Envelope) string {
	local, _, _ := strings.Cut(env.MailFrom, "@")
	return local
}

func (p *plugin) Inspect(ctx context.Context, env *sdk.Envelope, body io.Reader) (sdk.Verdict, error) {
	switch mode(env) {
	case "panic":
		panic("testplugin: asked to panic")
	case "slow":
		<-ctx.Done()
		return sdk.Verdict{}, ctx.Err()
	case "echo":
		return sdk.Replace(body), nil
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
	case "submit":
		id, err := p.h().Submit(ctx, "submit:"+env.ID, &sdk.Envelope{
			MailFrom:   "testplugin@example.test",
			Recipients: []sdk.Recipient{{Address: "notify@example.test"}},
		}, strings.NewReader("Subject: from the plugin\r\n\r\nhello\r\n"))
		if err != nil {
			return sdk.Verdict{}, err
		}
		return sdk.AddHeaders(sdk.Header{Name: "X-Queue-Id", Value: id}), nil
	case "stdout":
		fmt.Println("testplugin: this line must not break the protocol")
		return sdk.Accept(), nil
	case "reject":
		return sdk.Reject(550, "5.7.1", "rejected by testplugin"), nil
	case "envelope":
		b, err := json.Marshal(env)
		if err != nil {
			return sdk.Verdict{}, err
		}
		return sdk.AddHeaders(sdk.Header{Name: "X-Envelope", Value: string(b)}), nil
	}
	return sdk.Accept(), nil
}

func (p *plugin) CanHandle(_ context.Context, env *sdk.Envelope, rcpts []sdk.Recipient) ([]sdk.Answer, error) {
	if mode(env) == "panic" {
		panic("testplugin: asked to panic in CanHandle")
	}
	var out []sdk.Answer
	for _, r := range rcpts {
		no := strings.HasPrefix(r.Address, "no@")
		out = append(out, sdk.Answer{Recipient: r.Address, CanHandle: !no})
	}
	return out, nil
}

func (p *plugin) Transform(ctx context.Context, env *sdk.Envelope, group []sdk.Recipient, body io.Reader) (sdk.OutboundResult, error) {
	switch mode(env) {
	case "panic":
		panic("testplugin: asked to panic in Transform")
	case "slow":
		<-ctx.Done()
		return sdk.OutboundResult{}, ctx.Err()
	case "split":
		data, err := io.ReadAll(body)
		if err != nil {
			return sdk.OutboundResult{}, err
		}
		var outs []sdk.Output
		for _, r := range group {
			msg := append([]byte("To: <"+r.Address+">\r\n"), data...)
			outs = append(outs, sdk.Output{Recipients: []string{r.Address}, Body: bytes.NewReader(msg)})
		}
		return sdk.Transformed(outs...), nil
	case "divert":
		host := p.h()
		go func() {
			for _, r := range group {
				err := host.Confirm(context.Background(), sdk.Confirmation{
					QueueID: env.ID, Recipient: r.Address, Outcome: sdk.ConfirmDelivered, Reason: "stored",
				})
				if err != nil {
					sdk.Logger().Error("confirm", "error", err)
				}
			}
		}()
		return sdk.Diverted(true, "stored in the test mailbox"), nil
	case "decline":
		return sdk.Declined("asked to decline"), nil
	}
	return sdk.Transformed(sdk.Output{Recipients: sdk.Addresses(group), Body: body}), nil
}

func (p *plugin) HandleEvent(ctx context.Context, ev sdk.Event) error {
	switch ev.Type {
	case "test.panic":
		panic("testplugin: asked to panic in HandleEvent")
	case "test.ping":
		return p.h().Emit(ctx, sdk.Event{Type: "testplugin.pong", QueueID: ev.QueueID, Attributes: ev.Attributes})
	}
	return nil
}
