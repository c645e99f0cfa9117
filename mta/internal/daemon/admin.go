package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/posthorn/posthorn/mta/internal/adminapi"
	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/policychain"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/sdk"
)

// directoryOps are the directory operations over the directory in force.
func (d *Daemon) directoryOps() *adminapi.DirectoryOps {
	return &adminapi.DirectoryOps{Dir: d.gen.Load().router.Directory()}
}

// controlCommands adds the control socket's commands with arguments:
// "directory" (posthorn directory …) and "preflight" (posthorn explain).
func (d *Daemon) controlCommands(cs *control.Server) {
	if cs.Commands == nil {
		cs.Commands = map[string]func(control.Request) (json.RawMessage, error){}
	}
	cs.Commands["directory"] = func(req control.Request) (json.RawMessage, error) {
		var op adminapi.Op
		if err := json.Unmarshal(req.Args, &op); err != nil {
			return nil, fmt.Errorf("directory: bad arguments: %v", err)
		}
		out, err := d.directoryOps().Do(context.Background(), op)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
	cs.Commands["preflight"] = func(req control.Request) (json.RawMessage, error) {
		var a struct {
			From string   `json:"from"`
			To   []string `json:"to"`
		}
		if err := json.Unmarshal(req.Args, &a); err != nil || len(a.To) == 0 {
			return nil, fmt.Errorf("preflight needs at least one recipient")
		}
		out, err := d.Preflight(context.Background(), a.From, a.To)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
}

// PreflightResult says what would happen to a mail from From to each
// recipient.
type PreflightResult struct {
	From       string          `json:"from"`
	Recipients []PreflightRcpt `json:"recipients"`
}

// PreflightRcpt is one recipient's answer: the route, the TLS level that
// delivery would demand and why (the code of `tls explain`), and the
// encryption method the policy chain would pick.
type PreflightRcpt struct {
	Address          string   `json:"address"`
	Route            string   `json:"route"`
	TLSLevel         string   `json:"tls_level,omitempty"`
	TLSSource        string   `json:"tls_source,omitempty"`
	TLSReasons       []string `json:"tls_reasons,omitempty"`
	Encryption       string   `json:"encryption"`
	EncryptionReason string   `json:"encryption_reason"`
	Error            string   `json:"error,omitempty"`
}

// Preflight answers "what will happen to this mail?" without sending it.
func (d *Daemon) Preflight(ctx context.Context, from string, to []string) (*PreflightResult, error) {
	g := d.gen.Load()
	res := &PreflightResult{From: from, Recipients: []PreflightRcpt{}}
	for _, rcpt := range to {
		r := PreflightRcpt{Address: rcpt}
		if g.router.IsLocal(rcpt) {
			r.Route = "local"
			r.Encryption, r.EncryptionReason = "local", "delivered to a mailbox here; the encryption chain is for mail that leaves"
			if err := g.router.Check(rcpt); err != nil {
				r.Error = "not accepted: " + err.Error()
				if errors.Is(err, router.ErrNoSuchUser) {
					r.Error = "no such user"
				}
			}
			res.Recipients = append(res.Recipients, r)
			continue
		}
		_, domain := router.Split(rcpt)
		ex := g.remote.Explain(ctx, domain, from, false, false)
		r.Route = ex.Route
		r.TLSLevel, r.TLSSource = ex.Policy.Level.String(), ex.Policy.Source
		if len(ex.Hosts) > 0 {
			// What delivery to the first MX host would demand, all
			// sources (DANE, MTA-STS, secure alias) included.
			r.TLSLevel, r.TLSSource = ex.Hosts[0].Effective.Level.String(), "effective for MX host "+ex.Hosts[0].Host
		}
		r.TLSReasons = append(r.TLSReasons, ex.Extra...)
		if ex.MXError != "" {
			r.TLSReasons = append(r.TLSReasons, "MX lookup: "+ex.MXError)
		}
		for _, h := range ex.Hosts {
			line := fmt.Sprintf("MX %s (%d): %s", h.Host, h.Pref, h.Effective.Level)
			if h.DANE != "" {
				line += "; DANE: " + h.DANE
			}
			if h.Error != "" {
				line += "; " + h.Error
			}
			r.TLSReasons = append(r.TLSReasons, line)
		}
		r.Encryption, r.EncryptionReason = d.preflightEncryption(ctx, g, from, rcpt)
		res.Recipients = append(res.Recipients, r)
	}
	return res, nil
}

// preflightEncryption asks the policy chain and its plugins, as delivery
// does, which method would encrypt a mail from from to rcpt.
func (d *Daemon) preflightEncryption(ctx context.Context, g *generation, from, rcpt string) (string, string) {
	if g.chain == nil {
		return "plain", "no encryption chain is configured"
	}
	dec := g.chain.Decide(from, rcpt, "", nil)
	if dec.Encrypt == policychain.Never {
		c := policychain.ChooseDetail(dec, nil)
		return "plain", c.Why
	}
	env := &sdk.Envelope{ID: "preflight", MailFrom: from, Recipients: []sdk.Recipient{{Address: rcpt}}}
	answers := map[string]bool{}
	for _, m := range dec.Methods {
		ans, err := d.plugins.CanHandle(ctx, m, env, env.Recipients)
		if err != nil || len(ans) == 0 {
			continue
		}
		answers[m] = ans[0].CanHandle
	}
	c := policychain.ChooseDetail(dec, answers)
	switch {
	case c.Method != "":
		return c.Method, c.Why
	case c.OK:
		return "plain", c.Why
	case c.Temporary:
		return "deferred", c.Why
	}
	return "refused", c.Why
}
