package smime

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/posthorn/posthorn/plugins/smime/internal/opensslrsa"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/sqldb"
)

// Version is the plugin's version.
const Version = "0.1.0"

// maxMessage is the largest message the plugin reads whole (signing and
// encryption need the whole entity).
const maxMessage = 100 << 20

// Config is the plugin's [plugin.config] table.
type Config struct {
	// Identities are the organisation's certificates and keys
	// ([[plugin.config.identity]]).
	Identities []IdentityConfig `json:"identity"`
	// TrustStore is a PEM file of the CAs whose certificates are
	// harvested and whose signatures count as valid; empty: the system's.
	TrustStore string `json:"trust_store"`
	// Store is the SQLite file of correspondents' certificates; default
	// "certs.db" in the data dir.
	Store string `json:"store"`
	// CollectionAddress receives certificates by mail (signed mail and
	// certificate attachments are imported), e.g. "smime-certs@org.example".
	CollectionAddress string `json:"collection_address"`
	// InternalDomains are the organisation's domains: encrypted mail to
	// them is decrypted on the way in.
	InternalDomains []string `json:"internal_domains"`
	// Sign every outgoing mail of a sender with an identity; default true.
	Sign *bool `json:"sign"`
	// ResultHeader is the header added inbound; default
	// "X-Posthorn-SMIME".
	ResultHeader string `json:"result_header"`
	// PublishListen is an address ("127.0.0.1:8491") for the HTTP
	// download of the organisation's certificates; empty: off.
	PublishListen string `json:"publish_listen"`
	// PublishDays: a next certificate is published this many days before
	// the current one expires; default 42.
	PublishDays int `json:"publish_days"`
	// ExpiryWarnDays: "smime.cert_expiring" events start this many days
	// before an identity expires; default 30.
	ExpiryWarnDays int `json:"expiry_warn_days"`
	// PublishName is the organisation's name on the publication page
	// (GET /smime/); default: none.
	PublishName string `json:"publish_name"`
	// PublishPGPKeys are files of armored OpenPGP public keys (the staff's,
	// e.g. exported with posthorn-pgp keys export) listed with their
	// fingerprints on the publication page, read at each request.
	PublishPGPKeys []string `json:"publish_pgp_keys"`
	// Approval is, per source of a correspondent's certificate, "auto"
	// (used at once, the default) or "manual" (pending until an operator
	// runs posthorn-smime certs approve): sources "harvest" (signed
	// mail), "collection" (mailed to collection_address) and "upload"
	// (web mailbox). Certificates imported with the CLI are approved.
	Approval map[string]string `json:"approval"`
	// ApprovalNotify is the operator's address: pending certificates are
	// reported to it (event smime.cert_pending, mailed by notify).
	// Required when any source is manual.
	ApprovalNotify string `json:"approval_notify"`
	// ApprovalPoll is how often approvals made with the CLI are picked up
	// to tell the partner (event smime.cert_activated); default "30s".
	ApprovalPoll string `json:"approval_poll"`
	// RSASigner is what makes the RSA identities' PKCS #1 v1.5
	// signatures: "auto" (the default: the system's OpenSSL 3 libcrypto
	// where it can be loaded, else Go's crypto/rsa; a signature OpenSSL
	// fails to make is made by Go), "openssl" (OpenSSL only: a
	// configuration error where it cannot be loaded) or "go". OpenSSL
	// takes about 0.45 ms less per RSA-2048 signature; every signature it
	// makes is checked with Go before it is used (internal/opensslrsa).
	RSASigner string `json:"rsa_signer"`
}

// approvalSources maps the config's approval sources to record sources.
var approvalSources = map[string]string{"harvest": "harvest", "collection": "mail", "upload": "webmailbox upload"}

// Plugin implements sdk.Plugin, sdk.InboundHook and sdk.OutboundHook.
type Plugin struct {
	mu  sync.RWMutex
	st  *state
	now func() time.Time
}

var (
	_ sdk.Plugin       = (*Plugin)(nil)
	_ sdk.InboundHook  = (*Plugin)(nil)
	_ sdk.OutboundHook = (*Plugin)(nil)
)

type state struct {
	cfg   Config
	ids   *identities
	roots *x509.CertPool
	store Store
	path  string // of the store
	dir   string // the plugin's data dir (relative paths)
	poll  time.Duration
	// storeGiven: the store went on to the next state; close leaves it.
	storeGiven bool
	host       sdk.Host
	srv        *http.Server
	stop       chan struct{}
	warned     map[string]string // fingerprint → day warned
}

func (p *Plugin) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// Describe implements sdk.Plugin.
func (p *Plugin) Describe() sdk.Description {
	// No MaxMessageSize: inbound mail that is not S/MIME is never read
	// whole, whatever its size; readAll enforces maxMessage where the
	// whole message is needed.
	return sdk.Description{Name: "smime", Version: Version, EventTypes: []string{EventKeyUploaded},
		InboundFilter: inboundFilter("X-Posthorn-SMIME", "")}
}

// smimeTypes are the top-level content types Inspect does something with.
var smimeTypes = []string{"application/pkcs7-mime", "application/x-pkcs7-mime", "multipart/signed"}

// inboundFilter is the mail Inspect wants (protocol minor 2): S/MIME
// mail, mail carrying our result header (a forgery Inspect removes), and
// mail to the collection address. Everything else goes by without the
// plugin, and is not held up while it is down.
func inboundFilter(resultHeader, collection string) *sdk.InboundFilter {
	f := &sdk.InboundFilter{Rules: []sdk.InboundMatch{{ContentTypes: smimeTypes}, {Headers: []string{resultHeader}}}}
	if collection != "" {
		f.Rules = append(f.Rules, sdk.InboundMatch{Recipients: []string{collection}})
	}
	return f
}

// InboundFilter implements sdk.InboundFilterer: the filter with this
// configuration's result header and collection address.
func (p *Plugin) InboundFilter() *sdk.InboundFilter {
	st, err := p.state()
	if err != nil {
		return nil
	}
	return inboundFilter(st.cfg.ResultHeader, st.cfg.CollectionAddress)
}

var _ sdk.InboundFilterer = (*Plugin)(nil)

// EventKeyUploaded is the web mailbox's event for a certificate or key a
// recipient uploaded (attributes kind, fingerprint, key).
const EventKeyUploaded = "webmailbox.key_uploaded"

var _ sdk.EventHook = (*Plugin)(nil)

// HandleEvent imports S/MIME certificates that web-mailbox users upload
// for their own address: from then on, mail to them is encrypted the
// normal way. The upload came from the authenticated mailbox owner, so
// the certificate needs to name that address and be valid now, but need
// not chain to the trust store.
func (p *Plugin) HandleEvent(ctx context.Context, ev sdk.Event) error {
	if ev.Type != EventKeyUploaded || ev.Attributes["kind"] != "smime" {
		return nil
	}
	st, err := p.state()
	if err != nil {
		return err
	}
	certs, err := ParsePEMCerts([]byte(ev.Attributes["key"]))
	if err != nil || len(certs) == 0 {
		sdk.Logger().Warn("uploaded certificate unreadable", "mailbox", ev.Recipient, "error", err)
		return nil
	}
	c := certs[0]
	now := p.clock()
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		sdk.Logger().Warn("uploaded certificate not valid now", "mailbox", ev.Recipient)
		return nil
	}
	names := false
	for _, a := range CertAddresses(c) {
		names = names || strings.EqualFold(a, ev.Recipient)
	}
	if !names {
		sdk.Logger().Warn("uploaded certificate does not name the mailbox's address", "mailbox", ev.Recipient)
		return nil
	}
	var recs []CertRecord
	for _, r := range NewRecords(c, Capabilities{}, "webmailbox upload", now) {
		if strings.EqualFold(r.Address, ev.Recipient) {
			recs = append(recs, r)
		}
	}
	if err := st.add(ctx, recs, now); err != nil {
		return err
	}
	sdk.Logger().Info("certificate from the web mailbox stored", "address", ev.Recipient, "fingerprint", Fingerprint(c))
	return nil
}

func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) || dir == "" {
		return p
	}
	return filepath.Join(dir, p)
}

// Configure implements sdk.Plugin.
func (p *Plugin) Configure(ctx context.Context, c sdk.Config) error {
	cfg := Config{PublishDays: 42, ExpiryWarnDays: 30, ResultHeader: "X-Posthorn-SMIME", Store: "certs.db"}
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	st, err := newState(ctx, cfg, c.DataDir, c.Database)
	if err != nil {
		return err
	}
	st.host = c.Host
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.st
	if old != nil && old.srv != nil {
		old.srv.Close() // frees the address for the new server
		old.srv = nil
	}
	if cfg.PublishListen != "" {
		if err := p.startPublish(st); err != nil {
			st.close()
			if old != nil && old.cfg.PublishListen != "" {
				p.startPublish(old) // keep serving with the old configuration
			}
			return &sdk.ConfigError{Key: "publish_listen", Message: err.Error()}
		}
	}
	if old != nil && old.path == st.path {
		// Same store: hand it over, so hooks still running on the old
		// state keep a working store.
		st.store.Close()
		st.store, old.storeGiven = old.store, true
	}
	p.st = st
	if old != nil {
		old.close()
	}
	go p.expiryLoop(st)
	go p.approvalLoop(st)
	rsaSigner := "go"
	if cfg.RSASigner != "go" {
		if v, err := opensslrsa.Available(); err == nil {
			rsaSigner = v
		} else {
			rsaSigner = "go (" + err.Error() + ")"
		}
	}
	sdk.Logger().Info("configured", "identities", len(st.ids.all), "collection_address", cfg.CollectionAddress, "publish", cfg.PublishListen, "rsa_signer", rsaSigner)
	return nil
}

func newState(ctx context.Context, cfg Config, dir string, shared *sdk.Database) (*state, error) {
	if h := cfg.ResultHeader; h == "" || (sdk.Header{Name: h, Value: "x"}).Validate() != nil {
		return nil, &sdk.ConfigError{Key: "result_header", Message: fmt.Sprintf("%q is not a header name", h)}
	}
	if cfg.PublishDays < 0 || cfg.PublishDays > 3650 {
		return nil, &sdk.ConfigError{Key: "publish_days", Message: "must be 0-3650"}
	}
	if cfg.ExpiryWarnDays < 0 || cfg.ExpiryWarnDays > 3650 {
		return nil, &sdk.ConfigError{Key: "expiry_warn_days", Message: "must be 0-3650"}
	}
	if a := cfg.CollectionAddress; a != "" {
		if pa, err := mail.ParseAddress(a); err != nil || pa.Address != a {
			return nil, &sdk.ConfigError{Key: "collection_address", Message: fmt.Sprintf("%q is not a plain mail address", a)}
		}
	}
	manual := false
	for src, mode := range cfg.Approval {
		if _, ok := approvalSources[src]; !ok {
			return nil, &sdk.ConfigError{Key: "approval." + src, Message: "unknown source (harvest, collection, upload)"}
		}
		if mode != "auto" && mode != "manual" {
			return nil, &sdk.ConfigError{Key: "approval." + src, Message: fmt.Sprintf("%q: want \"auto\" or \"manual\"", mode)}
		}
		manual = manual || mode == "manual"
	}
	if manual {
		if pa, err := mail.ParseAddress(cfg.ApprovalNotify); err != nil || pa.Address != cfg.ApprovalNotify {
			return nil, &sdk.ConfigError{Key: "approval_notify", Message: "a plain mail address is required when a source needs manual approval"}
		}
	}
	poll := 30 * time.Second
	if cfg.ApprovalPoll != "" {
		d, err := time.ParseDuration(cfg.ApprovalPoll)
		if err != nil || d <= 0 {
			return nil, &sdk.ConfigError{Key: "approval_poll", Message: "not a positive duration"}
		}
		poll = d
	}
	st := &state{cfg: cfg, dir: dir, poll: poll, ids: &identities{}, stop: make(chan struct{}), warned: map[string]string{}}
	for i, f := range cfg.PublishPGPKeys {
		data, err := os.ReadFile(resolve(dir, f))
		if err == nil {
			_, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
		}
		if err != nil {
			return nil, &sdk.ConfigError{Key: fmt.Sprintf("publish_pgp_keys[%d]", i), Message: err.Error()}
		}
	}
	switch cfg.RSASigner {
	case "":
		cfg.RSASigner = "auto"
	case "auto", "go", "openssl":
	default:
		return nil, &sdk.ConfigError{Key: "rsa_signer", Message: fmt.Sprintf("%q: want \"auto\", \"go\" or \"openssl\"", cfg.RSASigner)}
	}
	for i, ic := range cfg.Identities {
		id, err := LoadIdentity(ic, dir)
		if err != nil {
			return nil, &sdk.ConfigError{Key: fmt.Sprintf("identity[%d]", i), Message: err.Error()}
		}
		if priv, ok := id.Key.(*rsa.PrivateKey); ok {
			switch cfg.RSASigner {
			case "openssl":
				if id.Signer, err = opensslrsa.NewSigner(priv); err != nil {
					return nil, &sdk.ConfigError{Key: "rsa_signer", Message: fmt.Sprintf("identity[%d]: %v", i, err)}
				}
			case "auto":
				subject := id.Cert.Subject.String()
				s, err := opensslrsa.NewFallbackSigner(priv, func(err error) {
					sdk.Logger().Warn("OpenSSL did not sign; signed with Go", "identity", subject, "error", err)
				})
				if err == nil {
					id.Signer = s
				} // else Go signs (the configured log line says why)
			}
		}
		st.ids.all = append(st.ids.all, id)
	}
	if cfg.TrustStore != "" {
		b, err := os.ReadFile(resolve(dir, cfg.TrustStore))
		if err != nil {
			return nil, &sdk.ConfigError{Key: "trust_store", Message: err.Error()}
		}
		st.roots = x509.NewCertPool()
		if !st.roots.AppendCertsFromPEM(b) {
			return nil, &sdk.ConfigError{Key: "trust_store", Message: "no PEM certificate found"}
		}
	} else {
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, &sdk.ConfigError{Key: "trust_store", Message: "no system trust store: " + err.Error()}
		}
		st.roots = pool
	}
	path := resolve(dir, cfg.Store)
	if path == "" {
		return nil, &sdk.ConfigError{Key: "store", Message: "must be set"}
	}
	var store Store
	var err error
	if shared != nil {
		// The host's shared database: every node sees the same
		// certificates. path only tells a reload that it is the same.
		path = "shared database"
		store, err = OpenShared(ctx, *shared)
	} else {
		store, err = OpenSQLite(path)
	}
	if err != nil {
		return nil, &sdk.ConfigError{Key: "store", Message: err.Error()}
	}
	st.store, st.path = store, path
	return st, nil
}

func (st *state) close() {
	close(st.stop)
	if st.srv != nil {
		st.srv.Close()
	}
	if !st.storeGiven {
		st.store.Close()
	}
}

func (p *Plugin) state() (*state, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.st == nil {
		return nil, errors.New("smime: not configured")
	}
	return p.st, nil
}

// run runs f in another goroutine (a worker's) and returns when it is
// done or ctx ends; then f goes on.
func run[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	dispatch(func() {
		defer func() {
			if r := recover(); r != nil {
				var zero T
				ch <- result{zero, fmt.Errorf("smime: internal error: %v", r)}
			}
		}()
		v, err := f()
		ch <- result{v, err}
	})
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// output is a Transform output in a pooled buffer (Protect's): the SDK
// closes it once it has sent it (sdk.Output), and the buffer goes back to
// the pool. The output was most of what the plugin allocated per message
// (issue 19.4).
type output struct {
	bytes.Reader
	buf atomic.Pointer[[]byte]
}

func newOutput(b []byte) *output {
	o := &output{}
	o.Reset(b)
	o.buf.Store(&b)
	return o
}

// Close gives the buffer back, once; the output must not be read after.
func (o *output) Close() error {
	if b := o.buf.Swap(nil); b != nil {
		o.Reset(nil)
		putBuf(*b)
	}
	return nil
}

// workers are the goroutines that run jobs for run. They live on, so
// that their stacks keep the size signing and encryption grew them to: a
// new goroutine per message grew its stack from a few KiB again each
// time, copying it at every doubling (runtime.morestack, issue 19.4).
// An idle stack may still be shrunk by the garbage collector, by half at
// a time.
var workers struct {
	jobs chan func() // unbuffered: a send succeeds when a worker waits
	n    atomic.Int32
}

func init() { workers.jobs = make(chan func()) }

// maxWorkers is how many workers there are at most; a job that finds all
// of them busy gets a goroutine of its own, as before.
const maxWorkers = 32

// dispatch runs job in another goroutine without waiting for a worker:
// an idle worker takes it, a new worker (up to maxWorkers) or a goroutine
// of its own starts it. job must not panic (run recovers).
func dispatch(job func()) {
	select {
	case workers.jobs <- job:
		return
	default:
	}
	if workers.n.Add(1) <= maxWorkers {
		go worker(job)
		return
	}
	workers.n.Add(-1)
	go job()
}

func worker(job func()) {
	defer workers.n.Add(-1) // a job that ends its goroutine (runtime.Goexit) ends the worker
	for {
		job()
		job = <-workers.jobs
	}
}

func readAll(r io.Reader) ([]byte, error) {
	return readAllSized(r, 0)
}

// readAllSized is readAll into a buffer of size bytes first (the
// envelope's size: the queued message, read without growing the buffer).
func readAllSized(r io.Reader, size int64) ([]byte, error) {
	var b []byte
	if size > 0 && size <= maxMessage {
		b = getBuf(int(size) + bytes.MinRead)
	}
	buf := bytes.NewBuffer(b)
	if _, err := buf.ReadFrom(io.LimitReader(r, maxMessage+1)); err != nil {
		return nil, err
	}
	if buf.Len() > maxMessage {
		return nil, sdk.ErrMessageTooLarge
	}
	return buf.Bytes(), nil
}

// fromAddress returns the address in the From header of msg.
func fromAddress(msg []byte) string {
	m, err := parseMessage(headerOnly(msg))
	if err != nil {
		return ""
	}
	a, err := mail.ParseAddress(m.get("from"))
	if err != nil {
		return ""
	}
	return strings.ToLower(a.Address)
}

func headerOnly(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+4]
	}
	if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		return msg[:i+2]
	}
	return msg
}

// CanHandle implements sdk.OutboundHook: yes for recipients with a valid
// certificate in the store.
func (p *Plugin) CanHandle(ctx context.Context, env *sdk.Envelope, rcpts []sdk.Recipient) ([]sdk.Answer, error) {
	st, err := p.state()
	if err != nil {
		return nil, err
	}
	now := p.clock()
	var out []sdk.Answer
	if sdk.IsSignOnly(ctx) {
		// Signing only (protocol minor 1): possible for every recipient
		// when the sender has a signing identity and signing is on.
		id := st.ids.signer(env.MailFrom, now)
		for _, r := range rcpts {
			switch {
			case id == nil:
				out = append(out, sdk.Answer{Recipient: r.Address, Reason: "no S/MIME identity for the sender"})
			case st.cfg.Sign != nil && !*st.cfg.Sign:
				out = append(out, sdk.Answer{Recipient: r.Address, Reason: "signing is off"})
			default:
				out = append(out, sdk.Answer{Recipient: r.Address, CanHandle: true, Reason: "signed by " + id.Cert.Subject.CommonName})
			}
		}
		return out, nil
	}
	// In a worker (run): the store's code needs a deep stack, which the
	// fresh goroutine gRPC runs each call in grew every time
	// (BenchmarkOutbound100KB/canhandle-fresh: 21-24 -> 18 µs CPU).
	return run(ctx, func() ([]sdk.Answer, error) {
		look := st.lookups()
		for _, r := range rcpts {
			recs, err := look.forAddress(ctx, r.Address)
			if err != nil {
				return nil, err
			}
			rec := recipientCert(recs, r.Address, now)
			switch {
			case rec == nil:
				out = append(out, sdk.Answer{Recipient: r.Address, Reason: noCertReason(recs, r.Address, now)})
			default:
				out = append(out, sdk.Answer{Recipient: r.Address, CanHandle: true, Reason: "certificate " + rec.Fingerprint[:16]})
			}
		}
		return out, nil
	})
}

// senderTransport is the key transport of the sender's own copy:
// RSAES-OAEP when the identity is configured so, or (key_transport =
// "auto") when the holder's capabilities announce it: the store knows
// this very certificate, harvested with rsa-oaep from mail its holder's
// client signed. PKCS #1 v1.5 otherwise, which every client reads.
func (st *state) senderTransport(ctx context.Context, look *lookups, id *OrgIdentity, from string) KeyTransport {
	switch id.KeyTransport {
	case "oaep":
		return OAEP
	case "pkcs1v15":
		return PKCS1v15
	}
	fp := Fingerprint(id.Cert)
	for _, addrs := range [...][]string{{from}, id.Addresses, id.Cert.EmailAddresses} {
		for _, a := range addrs {
			// The sender's address is usually all three: look asks the
			// store once.
			recs, err := look.forAddress(ctx, a)
			if err != nil {
				continue
			}
			for _, r := range recs {
				if r.Fingerprint == fp && r.OAEP {
					return OAEP
				}
			}
		}
	}
	return PKCS1v15
}

// noCertReason says why none of recs, addr's records, can be encrypted
// to.
func noCertReason(recs []CertRecord, addr string, now time.Time) string {
	for _, r := range recs {
		if c, err := r.Cert(); err == nil && CheckCert(c, nil, VerifyOptions{Now: now, From: addr}) == nil {
			if r.Pending {
				return "certificate " + r.Fingerprint[:16] + " is waiting for operator approval"
			}
			if err := EncryptionUsable(c); err != nil {
				return "certificate " + r.Fingerprint[:16] + " cannot be used for encryption: " + err.Error()
			}
		}
	}
	return "no valid S/MIME certificate known"
}

// recipientCert is the record of recs (addr's) to encrypt to, or nil.
func recipientCert(recs []CertRecord, addr string, now time.Time) *CertRecord {
	var ok []CertRecord
	for _, r := range recs {
		c, err := r.Cert()
		if err != nil || CheckCert(c, nil, VerifyOptions{Now: now, From: addr}) != nil {
			continue
		}
		if EncryptionUsable(c) != nil {
			continue // listed as unusable for encryption, with the reason
		}
		ok = append(ok, r)
	}
	return Usable(ok, now)
}

// lookups is one hook call's view of the certificate store: each
// address is looked up once, and of the SQLite store's cache
// (lookupCache) only the first look-up asks the file whether it
// changed. What changes after the call's first look-up may go unseen
// until its next call (the next message); nothing from before it can be
// used. No answer outlives the call: the shared PostgreSQL store is
// asked again by the next one.
type lookups struct {
	store   Store
	checked bool
	memo    map[string][]CertRecord
}

func (st *state) lookups() *lookups { return &lookups{store: st.store} }

func (l *lookups) forAddress(ctx context.Context, addr string) ([]CertRecord, error) {
	addr = strings.ToLower(addr)
	if recs, ok := l.memo[addr]; ok {
		return recs, nil
	}
	var recs []CertRecord
	var err error
	if s, ok := l.store.(*sqlStore); ok && s.cache != nil {
		recs, err = s.cache.forAddress(ctx, addr, !l.checked)
	} else {
		recs, err = l.store.ForAddress(ctx, addr)
	}
	if err != nil {
		return nil, err
	}
	l.checked = true
	if l.memo == nil {
		l.memo = make(map[string][]CertRecord, 4)
	}
	l.memo[addr] = recs
	return recs, nil
}

// Transform implements sdk.OutboundHook: sign (if the sender has an
// identity) and encrypt to the group and the sender, one output.
func (p *Plugin) Transform(ctx context.Context, env *sdk.Envelope, group []sdk.Recipient, body io.Reader) (sdk.OutboundResult, error) {
	st, err := p.state()
	if err != nil {
		return sdk.OutboundResult{}, err
	}
	now := p.clock()
	return run(ctx, func() (sdk.OutboundResult, error) {
		msg, err := readAllSized(body, env.Size)
		if err != nil {
			return sdk.OutboundResult{}, err
		}
		if sdk.IsSignOnly(ctx) {
			// Sign only (multipart/signed, chain attached): partners
			// learn our certificate from any mail.
			from := fromAddress(msg)
			id := st.ids.signer(from, now)
			if id == nil || (st.cfg.Sign != nil && !*st.cfg.Sign) {
				return sdk.Declined("no S/MIME identity to sign for " + from), nil
			}
			out, err := Protect(msg, &id.Identity, 0, nil)
			if err != nil {
				return sdk.OutboundResult{}, err
			}
			putBuf(msg) // out shares no memory with it
			sdk.Logger().Info("signed", "queue_id", env.ID, "recipients", len(group))
			return sdk.Transformed(sdk.Output{Recipients: sdk.Addresses(group), Body: newOutput(out)}), nil
		}
		var rcpts []Recipient
		gcm := true
		look := st.lookups()
		for _, r := range group {
			recs, err := look.forAddress(ctx, r.Address)
			if err != nil {
				return sdk.OutboundResult{}, err
			}
			rec := recipientCert(recs, r.Address, now)
			if rec == nil {
				return sdk.Declined("no valid S/MIME certificate for " + r.Address), nil
			}
			c, _ := rec.Cert()
			kt := PKCS1v15
			if rec.OAEP {
				kt = OAEP
			}
			gcm = gcm && rec.GCM
			rcpts = append(rcpts, Recipient{Cert: c, Transport: kt})
		}
		var signer *Identity
		if from := fromAddress(msg); from != "" {
			if id := st.ids.signer(from, now); id != nil {
				if st.cfg.Sign == nil || *st.cfg.Sign {
					signer = &id.Identity
				}
				if EncryptionUsable(id.Cert) == nil {
					rcpts = append(rcpts, Recipient{Cert: id.Cert, Transport: st.senderTransport(ctx, look, id, from)})
				}
			}
		}
		c := AES256CBC
		if gcm {
			c = AES256GCM
		}
		out, err := Protect(msg, signer, c, rcpts)
		if err != nil {
			return sdk.OutboundResult{}, err
		}
		putBuf(msg) // out shares no memory with it
		sdk.Logger().Info("encrypted", "queue_id", env.ID, "recipients", len(group), "cipher", c.String(), "signed", signer != nil)
		return sdk.Transformed(sdk.Output{Recipients: sdk.Addresses(group), Body: newOutput(out)}), nil
	})
}

// Inspect implements sdk.InboundHook. It always accepts; on the side it
// decrypts mail to internal users, verifies signatures (result header)
// and harvests signers' certificates.
func (p *Plugin) Inspect(ctx context.Context, env *sdk.Envelope, body io.Reader) (sdk.Verdict, error) {
	st, err := p.state()
	if err != nil {
		return sdk.Verdict{}, err
	}
	now := p.clock()
	return run(ctx, func() (sdk.Verdict, error) { return st.inspect(ctx, env, body, now) })
}

func (st *state) isCollection(env *sdk.Envelope) bool {
	if st.cfg.CollectionAddress == "" {
		return false
	}
	for _, r := range env.Recipients {
		if strings.EqualFold(r.Address, st.cfg.CollectionAddress) {
			return true
		}
	}
	return false
}

func (st *state) internal(addr string) bool {
	addr = strings.ToLower(addr)
	d := addr[strings.LastIndexByte(addr, '@')+1:]
	for _, x := range st.cfg.InternalDomains {
		if strings.EqualFold(x, d) {
			return true
		}
	}
	return len(st.ids.forAddress(addr, time.Time{})) > 0
}

func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == ';' {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

func hasField(m *message, name string) bool {
	for _, f := range m.fields {
		if f.name == name {
			return true
		}
	}
	return false
}

func (st *state) inspect(ctx context.Context, env *sdk.Envelope, body io.Reader, now time.Time) (sdk.Verdict, error) {
	br := bufio.NewReaderSize(body, 64<<10)
	var head bytes.Buffer
	for head.Len() < 1<<20 {
		line, err := br.ReadSlice('\n')
		head.Write(line)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil || len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
	}
	m, err := parseMessage(head.Bytes())
	if err != nil {
		return sdk.Accept(), nil
	}
	// A result header that came with the message is a forgery: it goes.
	cleanHead, forged := head.Bytes(), false
	if name := strings.ToLower(st.cfg.ResultHeader); hasField(m, name) {
		var kept bytes.Buffer
		for _, f := range m.fields {
			if f.name != name {
				kept.WriteString(f.raw)
			}
		}
		kept.WriteString("\r\n")
		cleanHead, forged = kept.Bytes(), true
	}
	mt, params, _ := mime.ParseMediaType(m.get("content-type"))
	smimeType := mt == "application/pkcs7-mime" || mt == "application/x-pkcs7-mime" || mt == "multipart/signed"
	collection := st.isCollection(env)
	if !smimeType && !collection {
		// Not S/MIME: no need to read the body.
		if forged {
			return sdk.Replace(io.MultiReader(bytes.NewReader(cleanHead), br)), nil
		}
		return sdk.Accept(), nil
	}
	rest, err := readAll(br)
	if errors.Is(err, sdk.ErrMessageTooLarge) && !forged {
		return sdk.AddHeaders(sdk.Header{Name: st.cfg.ResultHeader, Value: fmt.Sprintf("error; message larger than %d MiB not checked", maxMessage>>20)}), nil
	}
	if err != nil {
		return sdk.Verdict{}, err
	}
	msg := append(cleanHead, rest...)
	from := fromAddress(msg)
	hdr := func(v string) sdk.Verdict {
		if forged {
			return sdk.Replace(bytes.NewReader(append([]byte(st.cfg.ResultHeader+": "+v+"\r\n"), msg...)))
		}
		return sdk.AddHeaders(sdk.Header{Name: st.cfg.ResultHeader, Value: v})
	}
	encrypted := strings.HasPrefix(mt, "application/") && !strings.EqualFold(params["smime-type"], "signed-data")
	var ids []Identity
	if encrypted {
		for _, r := range env.Recipients {
			if !st.internal(r.Address) {
				if collection {
					break
				}
				return hdr("encrypted; not decrypted (recipients outside the organisation)"), nil
			}
		}
		ids = st.ids.decryptors()
	}
	res, err := Open(msg, ids, VerifyOptions{Roots: st.roots, Now: now, From: from})
	if err != nil {
		sdk.Logger().Info("S/MIME message not opened", "queue_id", env.ID, "error", err)
		if collection {
			st.importAttachments(ctx, msg, now)
		}
		return hdr("error; " + clean(err.Error())), nil
	}
	var parts []string
	if res.Encrypted {
		kt := res.Envelope.Transport.String()
		if res.Envelope.Transport == ECDH {
			kt = res.Envelope.Agreement.String()
		}
		parts = append(parts, "decrypted; cipher="+CipherName(res.Envelope.CipherOID)+"; key-transport="+kt)
	}
	switch {
	case res.Signed && res.SigErr == nil:
		parts = append(parts, "signature=valid; signer="+clean(strings.Join(CertAddresses(res.Signature.Signer), ",")))
		if err := st.add(ctx, NewRecords(res.Signature.Signer, res.Signature.Capabilities, "harvest", now), now); err != nil {
			sdk.Logger().Warn("certificate not stored", "error", err)
		}
	case res.Signed:
		parts = append(parts, "signature=invalid; reason="+clean(res.SigErr.Error()))
	default:
		parts = append(parts, "signature=none")
	}
	if collection {
		st.importAttachments(ctx, res.Message, now)
	}
	value := strings.Join(parts, "; ")
	if res.Encrypted {
		out := append([]byte(st.cfg.ResultHeader+": "+value+"\r\n"), res.Message...)
		return sdk.Replace(bytes.NewReader(out)), nil
	}
	return hdr(value), nil
}

// importAttachments imports certificates attached to a mail sent to the
// collection address: PEM or DER parts (application/pkix-cert,
// application/x-x509-*-cert, application/pkcs7-mime certs-only, *.cer,
// *.crt, *.pem, *.der, *.p7c). Each must chain to the trust store and be
// valid; it is stored for the addresses it names.
func (st *state) importAttachments(ctx context.Context, msg []byte, now time.Time) {
	walkParts(msg, 0, func(pm *message) {
		mt, params, _ := mime.ParseMediaType(pm.get("content-type"))
		_, dp, _ := mime.ParseMediaType(pm.get("content-disposition"))
		name := strings.ToLower(dp["filename"] + params["name"])
		certish := mt == "application/pkix-cert" || strings.HasPrefix(mt, "application/x-x509") ||
			(strings.Contains(mt, "pkcs7-mime") && strings.EqualFold(params["smime-type"], "certs-only"))
		for _, ext := range []string{".cer", ".crt", ".pem", ".der", ".p7c"} {
			certish = certish || strings.HasSuffix(name, ext)
		}
		if !certish {
			return
		}
		data, err := decodeBody(pm)
		if err != nil {
			return
		}
		certs, err := ParsePEMCerts(data)
		if err != nil {
			if p7, perr := parsePKCS7(data); perr == nil {
				certs = p7.Certificates
			}
		}
		for _, c := range certs {
			if err := CheckCert(c, certs, VerifyOptions{Roots: st.roots, Now: now}); err != nil {
				sdk.Logger().Info("mailed certificate not imported", "subject", c.Subject.String(), "error", err)
				continue
			}
			if err := st.add(ctx, NewRecords(c, Capabilities{}, "mail", now), now); err != nil {
				sdk.Logger().Warn("certificate not stored", "error", err)
			}
		}
	})
}

func walkParts(msg []byte, depth int, f func(*message)) {
	if depth > 8 {
		return
	}
	m, err := parseMessage(msg)
	if err != nil {
		return
	}
	mt, params, _ := mime.ParseMediaType(m.get("content-type"))
	if !strings.HasPrefix(mt, "multipart/") || params["boundary"] == "" {
		f(m)
		return
	}
	delim := []byte("\r\n--" + params["boundary"])
	body := append([]byte("\r\n"), m.body...)
	parts := bytes.Split(body, delim)
	for _, p := range parts[1:] {
		if bytes.HasPrefix(p, []byte("--")) {
			break
		}
		if i := bytes.Index(p, []byte("\r\n")); i >= 0 {
			walkParts(p[i+2:], depth+1, f)
		}
	}
}

// Publishing and rotation.

// published returns the certificates published for key (an address or
// a domain): the current one and, within PublishDays of its end, the
// next.
func (st *state) published(key string, now time.Time) []*x509.Certificate {
	key = strings.ToLower(key)
	var cands []*OrgIdentity
	if strings.Contains(key, "@") {
		cands = st.ids.forAddress(key, now)
	} else {
		for _, id := range st.ids.all {
			for _, d := range id.Domains {
				if d == key {
					cands = append(cands, id)
				}
			}
		}
	}
	var cur *OrgIdentity
	for _, id := range cands {
		if !now.Before(id.Cert.NotBefore) && !now.After(id.Cert.NotAfter) && (cur == nil || id.Cert.NotBefore.After(cur.Cert.NotBefore)) {
			cur = id
		}
	}
	// The current certificate is the valid one that started first: a
	// successor that is already valid is published beside it, not
	// instead of it, until the current one expires (partners who took
	// the current one from the page keep a working certificate).
	for _, id := range cands {
		if !now.Before(id.Cert.NotBefore) && !now.After(id.Cert.NotAfter) && id.Cert.NotBefore.Before(cur.Cert.NotBefore) {
			cur = id
		}
	}
	var out []*x509.Certificate
	if cur != nil {
		out = append(out, cur.Cert)
	}
	for _, id := range cands {
		if id == cur || now.After(id.Cert.NotAfter) || (cur != nil && !id.Cert.NotBefore.After(cur.Cert.NotBefore)) {
			continue
		}
		// A later certificate: published from PublishDays before the
		// current one ends (or before it starts, without a current one).
		edge := id.Cert.NotBefore
		if cur != nil && cur.Cert.NotAfter.Before(edge) {
			edge = cur.Cert.NotAfter
		}
		if !now.Before(edge.Add(-time.Duration(st.cfg.PublishDays) * 24 * time.Hour)) {
			out = append(out, id.Cert)
		}
	}
	return out
}

func (p *Plugin) startPublish(st *state) error {
	ln, err := net.Listen("tcp", st.cfg.PublishListen)
	if err != nil {
		return err
	}
	st.srv = &http.Server{Handler: p.publishHandler(st), ReadHeaderTimeout: 10 * time.Second}
	go st.srv.Serve(ln)
	return nil
}

// publishHandler serves GET /smime/KEY.pem and /smime/KEY.der (KEY an
// address or a gateway domain; .der gives the current certificate only).
func (p *Plugin) publishHandler(st *state) http.Handler {
	mux := http.NewServeMux()
	p.publicationPage(st, mux)
	mux.HandleFunc("GET /smime/{file}", func(w http.ResponseWriter, r *http.Request) {
		file := r.PathValue("file")
		key, ext := file, ""
		if i := strings.LastIndexByte(file, '.'); i > 0 {
			key, ext = file[:i], file[i:]
		}
		certs := st.published(key, p.clock())
		if len(certs) == 0 {
			http.NotFound(w, r)
			return
		}
		switch ext {
		case ".pem":
			w.Header().Set("Content-Type", "application/x-pem-file")
			for _, c := range certs {
				w.Write(certPEMBytes(c))
			}
		case ".der", ".cer", ".crt":
			w.Header().Set("Content-Type", "application/pkix-cert")
			w.Write(certs[0].Raw)
		default:
			http.NotFound(w, r)
		}
	})
	return mux
}

// expiryLoop emits "smime.cert_expiring" for identities that end within
// ExpiryWarnDays, once per identity and day, until the state is replaced.
// needsApproval reports whether certificates from source (a record
// source) wait for an operator.
func (st *state) needsApproval(source string) bool {
	for src, mode := range st.cfg.Approval {
		if approvalSources[src] == source && mode == "manual" {
			return true
		}
	}
	return false
}

// add stores recs (one certificate, its addresses). From a source with
// manual approval a certificate not seen before is stored pending and
// reported to the operator; one already approved stays approved.
func (st *state) add(ctx context.Context, recs []CertRecord, now time.Time) error {
	if len(recs) == 0 {
		return nil
	}
	pending := st.needsApproval(recs[0].Source)
	var fresh []string
	for _, r := range recs {
		if pending {
			known := false
			if old, err := st.store.ForAddress(ctx, r.Address); err == nil {
				for _, o := range old {
					known = known || o.Fingerprint == r.Fingerprint
				}
			}
			r.Pending = true
			if !known {
				fresh = append(fresh, r.Address)
			}
		}
		if err := st.store.Put(ctx, r); err != nil {
			return err
		}
	}
	if len(fresh) == 0 || st.host == nil {
		return nil
	}
	r := recs[0]
	sdk.Logger().Info("certificate waits for approval", "addresses", strings.Join(fresh, ","), "fingerprint", r.Fingerprint, "source", r.Source)
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return st.host.Emit(ectx, sdk.Event{ID: "smime-pending-" + r.Fingerprint[:32], Type: "smime.cert_pending", Time: now,
		Recipient: fresh[0], Attributes: map[string]string{
			"notify_to": st.cfg.ApprovalNotify, "addresses": strings.Join(fresh, ","), "subject": r.Subject,
			"fingerprint": r.Fingerprint, "source": r.Source, "not_after": r.NotAfter.UTC().Format(time.RFC3339),
		}})
}

// approvalLoop tells partners whose certificate an operator approved
// (event smime.cert_activated to the partner's address, mailed by
// notify) — the CLI only marks the records, being another process.
func (p *Plugin) approvalLoop(st *state) {
	t := time.NewTicker(st.poll)
	defer t.Stop()
	for {
		select {
		case <-st.stop:
			return
		case <-t.C:
		}
		p.announceActivated(context.Background(), st, p.clock())
	}
}

func (p *Plugin) announceActivated(ctx context.Context, st *state, now time.Time) int {
	if st.host == nil {
		return 0
	}
	recs, err := st.store.TakeActivated(ctx)
	if err != nil {
		sdk.Logger().Warn("reading approved certificates", "error", err)
		return 0
	}
	n := 0
	for _, r := range recs {
		ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := st.host.Emit(ectx, sdk.Event{ID: "smime-activated-" + r.Fingerprint[:32] + "-" + r.Address, Type: "smime.cert_activated", Time: now,
			Recipient: r.Address, Attributes: map[string]string{"subject": r.Subject, "fingerprint": r.Fingerprint,
				"not_after": r.NotAfter.UTC().Format(time.RFC3339)}})
		cancel()
		if err != nil {
			sdk.Logger().Warn("activation event not emitted", "address", r.Address, "error", err)
			continue
		}
		sdk.Logger().Info("approved certificate in use", "address", r.Address, "fingerprint", r.Fingerprint)
		n++
	}
	return n
}

func (p *Plugin) expiryLoop(st *state) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		p.checkExpiry(context.Background(), st, p.clock())
		select {
		case <-st.stop:
			return
		case <-t.C:
		}
	}
}

func (p *Plugin) checkExpiry(ctx context.Context, st *state, now time.Time) int {
	if st.host == nil {
		return 0
	}
	n := 0
	day := now.UTC().Format("2006-01-02")
	for _, id := range st.ids.all {
		left := id.Cert.NotAfter.Sub(now)
		if left > time.Duration(st.cfg.ExpiryWarnDays)*24*time.Hour || left < -30*24*time.Hour {
			continue
		}
		fp := Fingerprint(id.Cert)
		p.mu.Lock()
		done := st.warned[fp] == day
		st.warned[fp] = day
		p.mu.Unlock()
		if done {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		emit := func(ctx context.Context) error {
			return st.host.Emit(ctx, sdk.Event{Type: "smime.cert_expiring", Time: now, Attributes: map[string]string{
				"subject":     id.Cert.Subject.String(),
				"not_after":   id.Cert.NotAfter.UTC().Format(time.RFC3339),
				"fingerprint": fp,
				"addresses":   strings.Join(append(append([]string{}, id.Addresses...), id.Domains...), ","),
			}})
		}
		var err error
		if r, ok := st.store.(sqldb.OnceRunner); ok {
			// Once a day across every node sharing the store.
			var ran bool
			ran, err = r.RunOnce(ctx, "smime.cert_expiring "+fp, 23*time.Hour, now, emit)
			if err == nil && !ran {
				cancel()
				continue // another node warned today
			}
		} else {
			err = emit(ctx)
		}
		cancel()
		if err != nil {
			sdk.Logger().Warn("expiry event not emitted", "subject", id.Cert.Subject.String(), "error", err)
			p.mu.Lock()
			delete(st.warned, fp)
			p.mu.Unlock()
			continue
		}
		n++
	}
	return n
}
