package pgp

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/posthorn/posthorn/plugins/pgp/keystore"
	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
	"github.com/posthorn/posthorn/plugins/pgp/wkd"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/netdial"
)

// Version is the plugin's version.
const Version = "0.1.0"

// MaxMessageSize is the largest message the plugin takes (it holds a
// message in memory to encrypt or decrypt it).
const MaxMessageSize = 64 << 20

// Config is the plugin's [plugin.config] table.
type Config struct {
	// Sign signs outgoing mail with the sender's own key (address or
	// domain key) when there is one. Default true.
	Sign *bool `json:"sign"`
	// EncryptToSelf adds the sender's own key as a recipient. Default true.
	EncryptToSelf *bool `json:"encrypt_to_self"`
	// ProtectHeaders hides the Subject (protected headers, "..." outside).
	ProtectHeaders bool `json:"protect_headers"`
	// OnePerRecipient makes a separate message per recipient so that no
	// recipient sees the others' key IDs (Bcc). Default true; false makes
	// one message encrypted to all.
	OnePerRecipient *bool `json:"one_per_recipient"`
	// Autocrypt adds an Autocrypt header (autocrypt.org, Level 1) with the
	// sender's own key when its user ID is the sender's address, so the
	// partner's mail client learns it. Default true.
	Autocrypt *bool `json:"autocrypt"`
	// Discovery is the lookup order: "local", "wkd", "keyserver",
	// "autocrypt". Default ["local", "wkd", "keyserver", "autocrypt"].
	Discovery []string `json:"discovery"`
	// CacheTTL for keys and misses found over the network. Default "24h".
	CacheTTL string `json:"cache_ttl"`
	// MissTTL: how long "no key" is remembered. Default "1h".
	MissTTL string `json:"miss_ttl"`
	// LookupTimeout bounds each network lookup. Default "5s".
	LookupTimeout string `json:"lookup_timeout"`
	// Keyserver URL (https://keys.openpgp.org or hkps://…); empty: none.
	Keyserver string `json:"keyserver"`
	// KeyserverProtocol: "vks" (default) or "hkp".
	KeyserverProtocol string `json:"keyserver_protocol"`
	// CAFile adds trusted CAs (PEM) for WKD and keyserver HTTPS.
	CAFile string `json:"ca_file"`
	// Resolve maps host names to "ip:port" for WKD and keyserver
	// connections (split horizon, tests); ":port" keeps the address from
	// DNS and changes only the port.
	Resolve map[string]string `json:"resolve"`
	// DNSResolver, "HOST:PORT", is the resolver for WKD and keyserver host
	// names (e.g. the MTA's own [dns] resolver); empty: the system's.
	DNSResolver string `json:"dns_resolver"`
	// InternalDomains are the organisation's domains: inbound mail whose
	// recipients are all there (or have own keys) is decrypted.
	InternalDomains []string `json:"internal_domains"`
	// Harvest stores keys from Autocrypt headers of inbound mail
	// (unverified). Default true.
	Harvest *bool `json:"harvest"`
	// Publish serves WKD and the lookup page for the organisation's keys.
	Publish *PublishConfig `json:"publish"`
	// Keys are key files imported at every (re)configuration: armored
	// secret keys become the organisation's own keys, public keys are
	// partners' keys (verified).
	Keys []KeyFile `json:"key"`
	// ExpiryWarning: own keys expiring within it make a pgp.key_expiring
	// event (mailed by the notify plugin). Default "1008h" (six weeks).
	ExpiryWarning string `json:"expiry_warning"`
	// ExpiryNotify receives those mails instead of the key's address.
	ExpiryNotify string `json:"expiry_notify"`
	// Approval is, per source of a partner's key, "auto" (used at once,
	// the default) or "manual" (pending until posthorn-pgp keys
	// approve): "harvest" (Autocrypt headers and attached keys of
	// inbound mail) and "upload" (web mailbox). Imported keys and keys
	// found by WKD or a keyserver are approved.
	Approval map[string]string `json:"approval"`
	// ApprovalNotify is the operator's address for pgp.key_pending;
	// required when a source is manual.
	ApprovalNotify string `json:"approval_notify"`
	// ApprovalPoll is how often approvals made with the CLI are picked up
	// to tell the partner (pgp.key_activated); default "30s".
	ApprovalPoll string `json:"approval_poll"`
}

// approvalSources maps the config's sources to key sources.
var approvalSources = map[string][]string{
	"harvest": {keystore.SourceAutocrypt, keystore.SourceAttached},
	"upload":  {sourceUpload},
}

// sourceUpload is the source of keys uploaded in the web mailbox.
const sourceUpload = "webmailbox upload"

// KeyFile is one [[plugin.config.key]].
type KeyFile struct {
	// File is an armored or binary key file; relative to the data dir.
	File string `json:"file"`
	// Addresses the key is for; a bare domain ("example.org") makes an
	// own key the key of every address at that domain. Default: the
	// addresses in the key's user IDs.
	Addresses []string `json:"addresses"`
}

// PublishConfig is [plugin.config.publish].
type PublishConfig struct {
	Listen   string   `json:"listen"`    // "0.0.0.0:443"
	CertFile string   `json:"cert_file"` // PEM; relative to the data dir
	KeyFile  string   `json:"key_file"`
	Domains  []string `json:"domains"` // served domains; default internal_domains
}

// Plugin implements sdk.Plugin, sdk.OutboundHook and sdk.InboundHook.
type Plugin struct {
	mu       sync.Mutex
	cfg      Config
	store    keystore.Store
	keys     *Keys
	disc     *Discovery
	internal map[string]bool
	srv      *http.Server
	stop     context.CancelFunc
	maxOut   int64
	// Now overrides the clock (tests).
	Now func() time.Time
}

var (
	_ sdk.OutboundHook = (*Plugin)(nil)
	_ sdk.InboundHook  = (*Plugin)(nil)
)

func (p *Plugin) Describe() sdk.Description {
	return sdk.Description{Name: "pgp", Version: Version, MaxMessageSize: MaxMessageSize, EventTypes: []string{EventKeyUploaded}}
}

// EventKeyUploaded is the web mailbox's event for a certificate or key a
// recipient uploaded (attributes kind, fingerprint, key).
const EventKeyUploaded = "webmailbox.key_uploaded"

var _ sdk.EventHook = (*Plugin)(nil)

// HandleEvent imports OpenPGP keys that web-mailbox users upload for their
// own address (the upload came from the authenticated mailbox owner): from
// then on, mail to them is encrypted the normal way.
func (p *Plugin) HandleEvent(ctx context.Context, ev sdk.Event) error {
	if ev.Type != EventKeyUploaded || ev.Attributes["kind"] != "pgp" {
		return nil
	}
	_, keys, _, _, err := p.state()
	if err != nil {
		return err
	}
	if _, err := keys.Import(ctx, []byte(ev.Attributes["key"]), sourceUpload, true, []string{ev.Recipient}); err != nil {
		sdk.Logger().Warn("uploaded key not imported", "mailbox", ev.Recipient, "error", err)
		return nil
	}
	sdk.Logger().Info("key from the web mailbox stored", "address", ev.Recipient, "fingerprint", ev.Attributes["fingerprint"])
	return nil
}

func boolOr(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

func (p *Plugin) Configure(ctx context.Context, c sdk.Config) error {
	var cfg Config
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	if cfg.DNSResolver == "" {
		// The host's [dns] resolver, handed over at Configure.
		cfg.DNSResolver = c.DNSResolver
	}
	if len(cfg.Discovery) == 0 {
		cfg.Discovery = []string{StepLocal, StepWKD, StepKeyserver, StepAutocrypt}
	}
	for i, s := range cfg.Discovery {
		switch s {
		case StepLocal, StepWKD, StepKeyserver, StepAutocrypt:
		default:
			return &sdk.ConfigError{Key: fmt.Sprintf("discovery[%d]", i), Message: fmt.Sprintf("unknown step %q: use local, wkd, keyserver or autocrypt", s)}
		}
	}
	ttl, err := parseDur(cfg.CacheTTL, 24*time.Hour, "cache_ttl")
	if err != nil {
		return err
	}
	missTTL, err := parseDur(cfg.MissTTL, time.Hour, "miss_ttl")
	if err != nil {
		return err
	}
	timeout, err := parseDur(cfg.LookupTimeout, 5*time.Second, "lookup_timeout")
	if err != nil {
		return err
	}
	warn, err := parseDur(cfg.ExpiryWarning, 6*7*24*time.Hour, "expiry_warning")
	if err != nil {
		return err
	}
	switch cfg.KeyserverProtocol {
	case "", "vks", "hkp":
	default:
		return &sdk.ConfigError{Key: "keyserver_protocol", Message: "must be \"vks\" or \"hkp\""}
	}
	if c.DataDir == "" {
		return &sdk.ConfigError{Message: "the plugin needs a data directory for its key store"}
	}
	manual := map[string]bool{}
	for src, mode := range cfg.Approval {
		if _, ok := approvalSources[src]; !ok || (mode != "auto" && mode != "manual") {
			return &sdk.ConfigError{Key: "approval." + src, Message: "sources harvest and upload, each \"auto\" or \"manual\""}
		}
		for _, ks := range approvalSources[src] {
			manual[ks] = mode == "manual"
		}
	}
	poll, err := parseDur(cfg.ApprovalPoll, 30*time.Second, "approval_poll")
	if err != nil {
		return err
	}
	for _, m := range manual {
		if m && !strings.Contains(cfg.ApprovalNotify, "@") {
			return &sdk.ConfigError{Key: "approval_notify", Message: "an address is required when a source needs manual approval"}
		}
	}
	hc, err := httpClient(cfg, c.DataDir, timeout)
	if err != nil {
		return err
	}
	var st *keystore.SQL
	if c.Database != nil {
		st, err = keystore.OpenShared(ctx, *c.Database)
	} else {
		st, err = keystore.Open(c.DataDir)
	}
	if err != nil {
		return &sdk.ConfigError{Message: "key store: " + err.Error()}
	}
	keys := &Keys{Store: st, Now: p.Now, Manual: manual}
	for i, kf := range cfg.Keys {
		data, err := os.ReadFile(inDir(c.DataDir, kf.File))
		if err == nil {
			_, err = keys.Import(ctx, data, keystore.SourceImported, true, kf.Addresses)
		}
		if err != nil {
			st.Close()
			return &sdk.ConfigError{Key: fmt.Sprintf("key[%d].file", i), Message: err.Error()}
		}
	}
	disc := &Discovery{Keys: keys, Order: cfg.Discovery, TTL: ttl, MissTTL: missTTL, Timeout: timeout, WKD: &wkd.Client{HTTP: hc}}
	if cfg.Keyserver != "" {
		disc.Keyserver = &Keyserver{URL: cfg.Keyserver, HKP: cfg.KeyserverProtocol == "hkp", HTTP: hc}
	}
	if c.Database != nil {
		disc.Misses = st // the nodes share their misses
	}
	internal := map[string]bool{}
	for _, d := range cfg.InternalDomains {
		internal[strings.ToLower(d)] = true
	}
	var srv *http.Server
	if cfg.Publish != nil {
		srv, err = p.publishServer(cfg, c.DataDir, keys)
		if err != nil {
			st.Close()
			return err
		}
	}
	host := c.Host
	if host == nil {
		host = noHost{}
	}
	wctx, stop := context.WithCancel(context.Background())
	watch := &expiryWatch{keys: keys, host: host, warn: warn, notifyTo: cfg.ExpiryNotify, sent: map[string]bool{}}
	keys.OnPending = func(ctx context.Context, k keystore.Key) {
		sdk.Logger().Info("key waits for approval", "fingerprint", k.Fingerprint, "addresses", strings.Join(k.Addresses, ","), "source", k.Source)
		ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := host.Emit(ectx, sdk.Event{ID: "pgp-pending-" + k.Fingerprint, Type: "pgp.key_pending", Time: keys.now(),
			Recipient: firstAddress(k.Addresses), Attributes: map[string]string{"notify_to": cfg.ApprovalNotify,
				"addresses": strings.Join(k.Addresses, ","), "fingerprint": k.Fingerprint, "source": k.Source}}); err != nil {
			sdk.Logger().Warn("pending-key event not emitted", "fingerprint", k.Fingerprint, "error", err)
		}
	}
	p.mu.Lock()
	old, oldSrv, oldStop := p.store, p.srv, p.stop
	p.cfg, p.store, p.keys, p.disc, p.internal, p.srv, p.stop = cfg, st, keys, disc, internal, srv, stop
	p.maxOut = c.MaxMessageSize
	p.mu.Unlock()
	if oldStop != nil {
		oldStop()
	}
	go watch.run(wctx, 12*time.Hour)
	go announceActivated(wctx, keys, host, poll)
	if oldSrv != nil {
		oldSrv.Close()
	}
	if old != nil {
		old.Close()
	}
	return nil
}

func firstAddress(as []string) string {
	if len(as) > 0 {
		return as[0]
	}
	return ""
}

// announceActivated tells partners whose key an operator approved with
// the CLI (another process, hence the polling): pgp.key_activated to each
// address of the key, mailed by notify.
func announceActivated(ctx context.Context, keys *Keys, host sdk.Host, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ks, err := keys.Store.TakeActivated(ctx)
		if err != nil {
			continue
		}
		keys.invalidate()
		for _, k := range ks {
			for _, a := range k.Addresses {
				if !strings.Contains(a, "@") {
					continue
				}
				ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := host.Emit(ectx, sdk.Event{ID: "pgp-activated-" + k.Fingerprint + "-" + a, Type: "pgp.key_activated", Time: keys.now(),
					Recipient: a, Attributes: map[string]string{"fingerprint": k.Fingerprint}})
				cancel()
				if err != nil {
					sdk.Logger().Warn("activation event not emitted", "address", a, "error", err)
				}
			}
		}
	}
}

type noHost struct{}

func (noHost) Submit(context.Context, string, *sdk.Envelope, io.Reader) (string, error) {
	return "", sdk.ErrNoHost
}
func (noHost) Emit(context.Context, sdk.Event) error           { return sdk.ErrNoHost }
func (noHost) Confirm(context.Context, sdk.Confirmation) error { return sdk.ErrNoHost }

func parseDur(s string, def time.Duration, key string) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, &sdk.ConfigError{Key: key, Message: fmt.Sprintf("%q is not a positive duration (\"30s\", \"24h\")", s)}
	}
	return d, nil
}

func inDir(dir, f string) string {
	if f == "" || filepath.IsAbs(f) {
		return f
	}
	return filepath.Join(dir, f)
}

func httpClient(cfg Config, dir string, timeout time.Duration) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(inDir(dir, cfg.CAFile))
		if err != nil {
			return nil, &sdk.ConfigError{Key: "ca_file", Message: err.Error()}
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &sdk.ConfigError{Key: "ca_file", Message: "no PEM certificates in " + cfg.CAFile}
		}
		tlsCfg.RootCAs = pool
	}
	dialer := &netdial.Dialer{Server: cfg.DNSResolver, Timeout: timeout, Static: map[string]string{}}
	for h, a := range cfg.Resolve {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, &sdk.ConfigError{Key: "resolve." + h, Message: "want ip:port"}
		}
		dialer.Static[strings.ToLower(h)] = a
	}
	if err := dialer.Validate(); err != nil {
		return nil, &sdk.ConfigError{Key: "dns_resolver", Message: err.Error()}
	}
	tr := &http.Transport{
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          10,
		IdleConnTimeout:       time.Minute,
		DialContext:           dialer.DialContext,
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

func (p *Plugin) state() (Config, *Keys, *Discovery, map[string]bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.keys == nil {
		return Config{}, nil, nil, nil, errors.New("pgp: not configured")
	}
	return p.cfg, p.keys, p.disc, p.internal, nil
}

// CanHandle says yes for recipients with a usable key, found within the
// hook's deadline.
func (p *Plugin) CanHandle(ctx context.Context, env *sdk.Envelope, rcpts []sdk.Recipient) ([]sdk.Answer, error) {
	cfg, keys, disc, _, err := p.state()
	if err != nil {
		return nil, err
	}
	if sdk.IsSignOnly(ctx) {
		// Signing only (protocol minor 1): possible for every recipient
		// when we hold a usable key of the sender's and signing is on.
		reason, can := "signing is off", false
		if boolOr(cfg.Sign, true) {
			if own, err := keys.Own(ctx, env.MailFrom); err != nil {
				reason = "no own key for the sender: " + err.Error()
			} else if err := pgpmail.CanSign(own, keys.now()); err != nil {
				reason = "own key cannot sign: " + err.Error()
			} else {
				reason, can = "signed by "+pgpmail.Fingerprint(own), true
			}
		}
		out := make([]sdk.Answer, len(rcpts))
		for i, r := range rcpts {
			out[i] = sdk.Answer{Recipient: r.Address, CanHandle: can, Reason: reason}
		}
		return out, nil
	}
	// Look the recipients up concurrently (each lookup is bounded).
	out := make([]sdk.Answer, len(rcpts))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, r := range rcpts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = answer(ctx, disc, r.Address)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return out, nil
}

func answer(ctx context.Context, disc *Discovery, addr string) (a sdk.Answer) {
	a.Recipient = addr
	defer func() {
		if r := recover(); r != nil {
			a.CanHandle, a.Reason = false, fmt.Sprintf("key lookup failed: %v", r)
		}
	}()
	f, err := disc.Find(ctx, addr)
	if err != nil {
		a.Reason = "no usable OpenPGP key: " + err.Error()
		return a
	}
	a.CanHandle = true
	a.Reason = fmt.Sprintf("key %s (%s)", f.Key.Fingerprint, f.Key.Source)
	if !f.Key.Verified {
		a.Reason += ", unverified"
	}
	return a
}

// Transform encrypts the message to each recipient of the group (and to
// the sender's own key), signed with the sender's own key: one output per
// recipient, or one for all with one_per_recipient = false. Mail that is
// already encrypted goes on unchanged.
func (p *Plugin) Transform(ctx context.Context, env *sdk.Envelope, group []sdk.Recipient, body io.Reader) (sdk.OutboundResult, error) {
	cfg, keys, disc, _, err := p.state()
	if err != nil {
		return sdk.OutboundResult{}, err
	}
	msg, err := io.ReadAll(io.LimitReader(body, MaxMessageSize+1))
	if err != nil {
		if ctx.Err() != nil {
			return sdk.OutboundResult{}, ctx.Err()
		}
		return sdk.OutboundResult{}, err
	}
	if len(msg) > MaxMessageSize {
		return sdk.OutboundResult{}, sdk.ErrMessageTooLarge
	}
	all := sdk.Addresses(group)
	if pgpmail.IsEncrypted(msg) {
		return sdk.Transformed(sdk.Output{Recipients: all, Body: bytes.NewReader(msg)}), nil
	}
	if sdk.IsSignOnly(ctx) {
		own, err := keys.Own(ctx, env.MailFrom)
		if err != nil || !boolOr(cfg.Sign, true) {
			return sdk.Declined("no own key to sign for " + env.MailFrom), nil
		}
		out, err := pgpmail.Sign(msg, own, keys.now())
		if err != nil {
			return sdk.OutboundResult{}, err
		}
		return sdk.Transformed(sdk.Output{Recipients: all, Body: bytes.NewReader(out)}), nil
	}
	var rcptKeys []*openpgp.Entity
	for _, r := range group {
		f, err := disc.Find(ctx, r.Address)
		if err != nil {
			if ctx.Err() != nil {
				return sdk.OutboundResult{}, ctx.Err()
			}
			return sdk.OutboundResult{}, fmt.Errorf("no key for %s: %w", r.Address, err)
		}
		rcptKeys = append(rcptKeys, f.Entity)
	}
	o := pgpmail.EncryptOptions{ProtectHeaders: cfg.ProtectHeaders, Now: keys.now()}
	var self []*openpgp.Entity
	var autocrypt string
	if env.MailFrom != "" {
		if own, err := keys.Own(ctx, env.MailFrom); err == nil {
			if boolOr(cfg.Autocrypt, true) && pgpmail.HasAddress(own, env.MailFrom) {
				if pub, err := pgpmail.PublicOnly(own); err == nil {
					if b, err := pgpmail.Binary(pub); err == nil {
						autocrypt = autocryptHeader(keystore.NormalizeAddress(env.MailFrom), b)
					}
				}
			}
			if boolOr(cfg.Sign, true) {
				o.Signer = own
			}
			if boolOr(cfg.EncryptToSelf, true) {
				if pub, err := pgpmail.PublicOnly(own); err == nil && pgpmail.CanEncrypt(pub, keys.now()) == nil {
					self = append(self, pub)
				}
			}
		}
	}
	p.mu.Lock()
	maxOut := p.maxOut
	p.mu.Unlock()
	encrypt := func(to []*openpgp.Entity) ([]byte, error) {
		o := o
		o.Recipients = append(append([]*openpgp.Entity{}, to...), self...)
		out, err := pgpmail.Encrypt(msg, o)
		if err != nil {
			return nil, err
		}
		if autocrypt != "" {
			out = append([]byte(autocrypt), out...)
		}
		if maxOut > 0 && int64(len(out)) > maxOut {
			return nil, fmt.Errorf("the encrypted message is %d bytes, more than the %d the host accepts: %w", len(out), maxOut, sdk.ErrMessageTooLarge)
		}
		return out, nil
	}
	if !boolOr(cfg.OnePerRecipient, true) || len(group) == 1 {
		out, err := encrypt(rcptKeys)
		if err != nil {
			return sdk.OutboundResult{}, err
		}
		return sdk.Transformed(sdk.Output{Recipients: all, Body: bytes.NewReader(out)}), nil
	}
	// One message per recipient: nobody learns the others' key IDs (Bcc).
	// The first is made now (errors surface here), the rest as the host
	// reads them, so only one is in memory at a time.
	first, err := encrypt(rcptKeys[:1])
	if err != nil {
		return sdk.OutboundResult{}, err
	}
	outs := []sdk.Output{{Recipients: all[:1], Body: bytes.NewReader(first)}}
	for i := 1; i < len(group); i++ {
		to := rcptKeys[i : i+1]
		outs = append(outs, sdk.Output{Recipients: all[i : i+1], Body: &lazyReader{make: func() ([]byte, error) { return encrypt(to) }}})
	}
	return sdk.Transformed(outs...), nil
}

// lazyReader produces its content on the first Read.
type lazyReader struct {
	make func() ([]byte, error)
	r    io.Reader
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if l.r == nil {
		b, err := l.make()
		if err != nil {
			return 0, err
		}
		l.r = bytes.NewReader(b)
	}
	return l.r.Read(p)
}

// Inspect decrypts and verifies mail to the organisation's users,
// harvests Autocrypt keys and removes forged result headers.
func (p *Plugin) Inspect(ctx context.Context, env *sdk.Envelope, body io.Reader) (sdk.Verdict, error) {
	cfg, keys, _, internal, err := p.state()
	if err != nil {
		return sdk.Verdict{}, err
	}
	msg, err := io.ReadAll(io.LimitReader(body, MaxMessageSize+1))
	if err != nil {
		if ctx.Err() != nil {
			return sdk.Verdict{}, ctx.Err()
		}
		return sdk.Verdict{}, err
	}
	if len(msg) > MaxMessageSize {
		return sdk.Accept(), nil // too big to inspect: leave it alone
	}
	if boolOr(cfg.Harvest, true) {
		p.harvest(ctx, keys, msg)
	}
	allInternal := len(env.Recipients) > 0
	for _, r := range env.Recipients {
		if !internal[domainOf(r.Address)] && !keys.IsOwnAddress(ctx, r.Address) {
			allInternal = false
		}
	}
	if allInternal {
		ring, err := keys.Keyring(ctx)
		if err != nil {
			return sdk.Verdict{}, err
		}
		res, err := pgpmail.Decrypt(msg, ring, keys.now())
		if err == nil && res.Message != nil {
			out := res.Message
			if res.Signer != "" {
				// A signature checked with a harvested key proves only
				// that the sender holds that key: say so.
				if sk, err := keys.Store.Get(ctx, res.Signer); err == nil && !sk.Verified {
					out = pgpmail.StripResultHeader(out, res.Header()+"; key=unverified")
				}
			}
			return sdk.Replace(bytes.NewReader(out)), nil
		}
		if err == nil && res.Encrypted {
			// Could not decrypt: deliver as is, say why.
			return sdk.Replace(bytes.NewReader(pgpmail.StripResultHeader(msg, res.Header()))), nil
		}
	}
	if pgpmail.HasResultHeader(msg) {
		return sdk.Replace(bytes.NewReader(pgpmail.StripResultHeader(msg, ""))), nil
	}
	return sdk.Accept(), nil
}

// harvest stores, unverified, the key of an Autocrypt header whose addr
// is the From address, and attached keys (application/pgp-keys) with a
// user ID for the From address.
func (p *Plugin) harvest(ctx context.Context, keys *Keys, msg []byte) {
	from := pgpmail.HeaderValues(msg, "From")
	if len(from) != 1 {
		return
	}
	fromAddr := pgpmail.AddressOf(from[0])
	if fromAddr == "" {
		return
	}
	if ac := pgpmail.HeaderValues(msg, "Autocrypt"); len(ac) == 1 {
		attrs := map[string]string{}
		for _, kv := range strings.Split(ac[0], ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if ok {
				attrs[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if keystore.NormalizeAddress(attrs["addr"]) == fromAddr && attrs["keydata"] != "" {
			data, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(attrs["keydata"]), ""))
			if err == nil && len(data) <= pgpmail.MaxKeySize {
				p.harvestKey(ctx, keys, data, fromAddr, keystore.SourceAutocrypt)
			}
		}
	}
	for _, data := range pgpmail.AttachedKeys(msg, 4) {
		p.harvestKey(ctx, keys, data, fromAddr, keystore.SourceAttached)
	}
}

func (p *Plugin) harvestKey(ctx context.Context, keys *Keys, data []byte, addr, source string) {
	el, err := pgpmail.ParseKeys(data)
	if err != nil {
		return
	}
	for _, e := range el {
		if e.PrivateKey != nil || !pgpmail.HasAddress(e, addr) || pgpmail.CanEncrypt(e, keys.now()) != nil {
			continue
		}
		if old, err := keys.Store.Get(ctx, pgpmail.Fingerprint(e)); err == nil && (old.Own || old.Verified) {
			continue // never downgrade a key we have from a better source
		}
		keys.put(ctx, e, source, false, []string{addr})
	}
}

// autocryptHeader is "Autocrypt: addr=…; keydata=…" folded at 76 columns.
func autocryptHeader(addr string, key []byte) string {
	var b strings.Builder
	b.WriteString("Autocrypt: addr=" + addr + "; keydata=\r\n")
	enc := base64.StdEncoding.EncodeToString(key)
	for len(enc) > 0 {
		n := min(len(enc), 76)
		b.WriteString(" " + enc[:n] + "\r\n")
		enc = enc[n:]
	}
	return b.String()
}
