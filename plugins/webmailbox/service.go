package webmailbox

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"net/mail"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

// Service is the web mailbox: storage, keys, notifications. The HTTP
// handlers and the plugin hooks both use it.
type Service struct {
	s     *settings
	store Store
	host  sdk.Host
	log   *slog.Logger
	// Now is the clock; tests replace it.
	Now    func() time.Time
	master []byte
	dummy  []byte // a wrapped key that makes unknown addresses cost as much as known ones

	th *throttle // guessing limits

	mu        sync.Mutex
	resetSent map[string]time.Time // when a reset link last went to an address
	bg        sync.WaitGroup       // background work (reset links)
}

// pinKDF is for PINs and TANs: short secrets behind a lockout.
var pinKDF = KDFParams{Time: 1, MemoryK: 8 * 1024, Threads: 1}

// Errors of the service.
var (
	ErrQuota       = errors.New("webmailbox: mailbox full")
	ErrLoginFailed = errors.New("webmailbox: login failed")
	ErrNotAllowed  = errors.New("webmailbox: recipient not allowed")
)

// NewService opens the store and the master key named in the settings.
func newService(ctx context.Context, s *settings, host sdk.Host, log *slog.Logger) (*Service, error) {
	mk, err := loadMasterKey(s.masterKeyPath)
	if err != nil {
		return nil, err
	}
	var st *SQLStore
	if s.shared != nil {
		st, err = OpenShared(ctx, *s.shared)
	} else {
		st, err = OpenSQLite(s.dbPath)
	}
	if err != nil {
		return nil, err
	}
	if err := st.CheckMasterKey(ctx, masterKeyCheck(mk)); err != nil {
		st.Close()
		return nil, err
	}
	if host == nil {
		host = noHost{}
	}
	sv := &Service{s: s, store: st, host: host, log: log, Now: func() time.Time { return time.Now().UTC() },
		master: mk, th: newThrottle(s.maxFailed, s.lockout), resetSent: map[string]time.Time{}, dummy: WrapWithSecret(mustKey(), "-", s.kdf, nil)}
	sv.th.shared = st.failureCounters()
	return sv, nil
}

type noHost struct{}

func (noHost) Submit(context.Context, string, *sdk.Envelope, io.Reader) (string, error) {
	return "", sdk.ErrNoHost
}
func (noHost) Emit(context.Context, sdk.Event) error           { return sdk.ErrNoHost }
func (noHost) Confirm(context.Context, sdk.Confirmation) error { return sdk.ErrNoHost }

// masterKeyCheck identifies the master key without revealing it.
func masterKeyCheck(mk []byte) []byte {
	m := hmac.New(sha256.New, mk)
	m.Write([]byte("posthorn webmailbox master key check"))
	return m.Sum(nil)
}

func loadMasterKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k := randBytes(32)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("webmailbox: creating master key %s: %w", path, err)
		}
		if _, err := f.Write([]byte(base64.StdEncoding.EncodeToString(k) + "\n")); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
		return k, f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("webmailbox: reading master key: %w", err)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("webmailbox: master key %s: want 32 bytes in base64", path)
	}
	return k, nil
}

// Close waits for background work and releases the store.
func (sv *Service) Close() error {
	sv.bg.Wait()
	return sv.store.Close()
}

func adPIN(addr string) []byte           { return []byte("pin\x00" + addr) }
func adMK(addr string) []byte            { return []byte("mk\x00" + addr) }
func adPW(addr string) []byte            { return []byte("pw\x00" + addr) }
func adQA(addr string) []byte            { return []byte("qa\x00" + addr) }
func adSess(addr string) []byte          { return []byte("session\x00" + addr) }
func adRaw(addr string) []byte           { return []byte("raw\x00" + addr) }
func adMeta(addr string) []byte          { return []byte("meta\x00" + addr) }
func normAddr(a string) string           { return strings.ToLower(strings.TrimSpace(a)) }
func newToken() string                   { return base64.RawURLEncoding.EncodeToString(randBytes(32)) }
func tokenHash(tok string) []byte        { return hashSecret([]byte("token\x00" + tok)) }
func answerNorm(a string) string         { return strings.ToLower(strings.Join(strings.Fields(a), " ")) }
func (sv *Service) link(p string) string { return strings.TrimRight(sv.s.baseURL.String(), "/") + p }

// Meta is the sealed summary of a message shown in lists.
type Meta struct {
	From    string `json:"from"`
	To      string `json:"to"`
	Subject string `json:"subject"`
	Date    string `json:"date"`
}

var wordDecoder = mime.WordDecoder{CharsetReader: charsetReader}

func metaOf(raw []byte) Meta {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return Meta{Subject: "(?)"}
	}
	dec := func(s string) string {
		if d, err := wordDecoder.DecodeHeader(s); err == nil {
			return d
		}
		return s
	}
	return Meta{From: dec(m.Header.Get("From")), To: dec(m.Header.Get("To")), Subject: dec(m.Header.Get("Subject")), Date: m.Header.Get("Date")}
}

// DivertResult says what happened to one recipient.
type DivertResult struct {
	Created bool // the mailbox was made for this message
	Stored  bool
	Err     error // ErrQuota or a storage error
}

// Divert stores raw in rcpt's mailbox (creating it) and emits the
// notification events.
func (sv *Service) Divert(ctx context.Context, env *sdk.Envelope, rcpt string, raw []byte) DivertResult {
	addr := normAddr(rcpt)
	now := sv.Now()
	mb, err := sv.store.GetMailbox(ctx, addr)
	created := false
	if errors.Is(err, ErrNotFound) {
		priv, err := NewKeyPair()
		if err != nil {
			return DivertResult{Err: err}
		}
		mb = &Mailbox{Address: addr, State: StatePending, Language: sv.s.defaultLang, PublicKey: priv.PublicKey().Bytes(),
			WrappedMK: WrapWithKey(priv, sv.master, adMK(addr)), ResetAllow: sv.s.resetAllowed, Created: now, LastActive: now}
		var pin string
		if sv.s.senderPIN && env.MailFrom != "" {
			pin = newPIN()
			mb.PINHash = slowHash(pin, pinKDF)
			mb.PINSealed = aeadSeal(sv.master, []byte(pin), adPIN(addr))
		}
		if created, err = sv.store.CreateMailbox(ctx, mb); err != nil {
			return DivertResult{Err: err}
		}
		if !created { // lost a race: use the other one
			if mb, err = sv.store.GetMailbox(ctx, addr); err != nil {
				return DivertResult{Err: err}
			}
		} else if pin != "" {
			if err := sv.emit(ctx, sdk.Event{Type: "webmailbox.pin", QueueID: env.ID, Sender: env.MailFrom, Recipient: addr,
				Language: sv.s.defaultLang, Attributes: map[string]string{"pin": pin}}); err != nil {
				// Without the PIN at the sender the mailbox is useless:
				// undo, and let the host retry.
				sv.store.DeleteMailbox(ctx, addr)
				return DivertResult{Err: err}
			}
		}
	} else if err != nil {
		return DivertResult{Err: err}
	}
	size := int64(len(raw))
	if env.ID != "" {
		dup, err := sv.store.HasQueueID(ctx, addr, env.ID)
		if err != nil {
			return DivertResult{Err: err}
		}
		if dup { // a retry: stored before, only the notification failed
			return DivertResult{Stored: true, Err: sv.notify(ctx, mb, env, false)}
		}
	}
	overQuota := func() DivertResult {
		sv.emit(ctx, sv.toRecipient(mb, sdk.Event{Type: "webmailbox.quota_exceeded", QueueID: env.ID, Sender: env.MailFrom, Recipient: addr,
			Attributes: map[string]string{"used": fmt.Sprint(mb.UsedBytes), "limit": fmt.Sprint(sv.s.quota), "link": sv.link("/login")}}))
		return DivertResult{Created: created, Err: ErrQuota}
	}
	if mb.UsedBytes+size > sv.s.quota {
		return overQuota()
	}
	meta, _ := json.Marshal(metaOf(raw))
	sm, err := Seal(mb.PublicKey, meta, adMeta(addr))
	if err != nil {
		return DivertResult{Err: err}
	}
	sr, err := Seal(mb.PublicKey, raw, adRaw(addr))
	if err != nil {
		return DivertResult{Err: err}
	}
	if _, err := sv.store.AddMessage(ctx, &Message{Mailbox: addr, Folder: "inbox", Received: now, Size: size, Unread: true, Meta: sm, Raw: sr,
		Sender: aeadSeal(sv.master, []byte(env.MailFrom), adMK(addr)), QueueID: env.ID}, sv.s.quota); errors.Is(err, ErrQuota) {
		return overQuota() // a concurrent delivery filled it
	} else if err != nil {
		return DivertResult{Err: err}
	}
	return DivertResult{Created: created, Stored: true, Err: sv.notify(ctx, mb, env, !created)}
}

// notify tells the recipient about a stored message: an activation link
// while the mailbox is pending, else "new message".
func (sv *Service) notify(ctx context.Context, mb *Mailbox, env *sdk.Envelope, pinAgain bool) error {
	if mb.State == StatePending {
		if err := sv.issueActivation(ctx, mb, env.ID, env.MailFrom); err != nil {
			return err
		}
		if pinAgain {
			return sv.repeatPIN(ctx, mb, env)
		}
		return nil
	}
	return sv.emit(ctx, sdk.Event{Type: "webmailbox.new_message", QueueID: env.ID, Sender: env.MailFrom, Recipient: mb.Address,
		Language: mb.Language, Attributes: map[string]string{"link": sv.link("/login")}})
}

// repeatPIN tells the sender of a further message to a mailbox that is
// not activated yet its PIN again (the sender may have lost it, or be a
// colleague of the first sender).
func (sv *Service) repeatPIN(ctx context.Context, mb *Mailbox, env *sdk.Envelope) error {
	if mb.PINSealed == nil || env.MailFrom == "" {
		return nil
	}
	pin, err := aeadOpen(sv.master, mb.PINSealed, adPIN(mb.Address))
	if err != nil {
		return err
	}
	return sv.emit(ctx, sdk.Event{Type: "webmailbox.pin", QueueID: env.ID, Sender: env.MailFrom, Recipient: mb.Address,
		Language: sv.s.defaultLang, Attributes: map[string]string{"pin": string(pin), "repeated": "true"}})
}

// issueActivation stores a new single-use token and emits the link.
func (sv *Service) issueActivation(ctx context.Context, mb *Mailbox, queueID, sender string) error {
	tok := newToken()
	exp := sv.Now().Add(sv.s.linkTTL)
	if err := sv.store.PutToken(ctx, &Token{Hash: tokenHash(tok), Mailbox: mb.Address, Kind: "activate", Expires: exp}); err != nil {
		return err
	}
	attrs := map[string]string{"link": sv.link("/activate?t=" + tok), "expires": timeAttr(exp, sv.locOf(mb)), "reset_mode": "question",
		"pin_required": fmt.Sprint(mb.PINHash != nil), "tan_required": fmt.Sprint(sv.s.requireTAN)}
	if !mb.ResetAllow {
		attrs["reset_mode"] = "none"
	}
	return sv.emit(ctx, sv.toRecipient(mb, sdk.Event{Type: "webmailbox.activation", QueueID: queueID, Sender: sender, Recipient: mb.Address,
		Attributes: attrs}))
}

// toRecipient sets an event for mb's owner in their language; while the
// mailbox is pending the language is not known yet, and the event asks
// for both, the organisation's default first (attribute "languages").
func (sv *Service) toRecipient(mb *Mailbox, ev sdk.Event) sdk.Event {
	ev.Language = mb.Language
	if ev.Attributes == nil {
		ev.Attributes = map[string]string{}
	}
	ev.Attributes["time_zone"] = sv.locOf(mb).String()
	if mb.State == StatePending {
		other := "en"
		if sv.s.defaultLang == "en" {
			other = "de"
		}
		if ev.Attributes == nil {
			ev.Attributes = map[string]string{}
		}
		ev.Language = sv.s.defaultLang
		ev.Attributes["languages"] = sv.s.defaultLang + "," + other
	}
	return ev
}

func (sv *Service) emit(ctx context.Context, ev sdk.Event) error {
	if ev.Time.IsZero() {
		ev.Time = sv.Now()
	}
	// Dates in the mail in the organisation's zone unless the event is
	// for a mailbox owner (toRecipient).
	if ev.Attributes["time_zone"] == "" {
		if ev.Attributes == nil {
			ev.Attributes = map[string]string{}
		}
		ev.Attributes["time_zone"] = sv.s.loc.String()
	}
	// The operator's theming, for the notification's footer.
	for k, v := range map[string]string{"org_name": sv.s.organization, "org_support": sv.s.theme.support,
		"org_imprint": sv.s.theme.imprint, "org_privacy": sv.s.theme.privacy} {
		if v != "" {
			if ev.Attributes == nil {
				ev.Attributes = map[string]string{}
			}
			ev.Attributes[k] = v
		}
	}
	err := sv.host.Emit(ctx, ev)
	if err != nil {
		sv.log.Error("event not emitted", "type", ev.Type, "recipient", ev.Recipient, "error", err)
		return fmt.Errorf("webmailbox: emitting %s: %w", ev.Type, err)
	}
	return nil
}

func newPIN() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1000000))
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("%06d", n.Int64())
}

// ActivationInput is what the recipient enters on the activation page.
type ActivationInput struct {
	Token, Language, Password, Password2, Question, Answer, PIN, TAN string
	Client                                                           string // the client's address, for the guessing limits
}

// Activation problems the form shows (text keys).
type formError struct{ Key string }

func (e *formError) Error() string { return "webmailbox: " + e.Key }

// ActivationTarget returns the mailbox a valid token belongs to.
func (sv *Service) ActivationTarget(ctx context.Context, tok string) (*Mailbox, error) {
	t, err := sv.store.PeekToken(ctx, tokenHash(tok), "activate", sv.Now())
	if err != nil {
		return nil, err
	}
	return sv.store.GetMailbox(ctx, t.Mailbox)
}

// Activate sets the password (and security answer) of a pending mailbox.
// It returns a *formError for input the recipient must correct.
func (sv *Service) Activate(ctx context.Context, in ActivationInput) (*Mailbox, error) {
	mb, err := sv.ActivationTarget(ctx, in.Token)
	if err != nil {
		return nil, err
	}
	if mb.State != StatePending {
		return nil, ErrNotFound
	}
	if in.Language != "de" && in.Language != "en" {
		return nil, &formError{"err_language"}
	}
	if len([]rune(in.Password)) < 8 {
		return nil, &formError{"err_pw_short"}
	}
	if in.Password != in.Password2 {
		return nil, &formError{"err_pw_mismatch"}
	}
	if mb.ResetAllow && (strings.TrimSpace(in.Question) == "" || len([]rune(answerNorm(in.Answer))) < 3) {
		return nil, &formError{"err_question"}
	}
	if mb.PINHash != nil || (sv.s.requireTAN) {
		if err := sv.attempt("pin", mb.Address, in.Client); err != nil {
			return nil, err
		}
		ok := true
		if mb.PINHash != nil && !slowHashEqual(mb.PINHash, strings.TrimSpace(in.PIN), pinKDF) {
			ok = false
		}
		if sv.s.requireTAN && (mb.TANHash == nil || !slowHashEqual(mb.TANHash, normTAN(in.TAN), pinKDF)) {
			ok = false
		}
		if !ok {
			sv.failed("pin", mb.Address, in.Client)
			return nil, &formError{pinErrorKey(mb.PINHash != nil, sv.s.requireTAN)}
		}
		sv.th.success(mb.Address, in.Client, sv.Now())
	}
	priv, err := UnwrapWithKey(mb.WrappedMK, sv.master, adMK(mb.Address))
	if err != nil {
		return nil, fmt.Errorf("webmailbox: the master key does not open %s's key: %w", mb.Address, err)
	}
	if _, err := sv.store.UseToken(ctx, tokenHash(in.Token), "activate", sv.Now()); err != nil {
		return nil, err
	}
	mb.State, mb.Language, mb.WrappedMK, mb.PINSealed = StateActive, in.Language, nil, nil
	mb.WrappedPW = WrapWithSecret(priv, in.Password, sv.s.kdf, adPW(mb.Address))
	if mb.ResetAllow {
		mb.Question = strings.TrimSpace(in.Question)
		mb.WrappedQA = WrapWithSecret(priv, answerNorm(in.Answer), sv.s.kdf, adQA(mb.Address))
	}
	mb.Failed, mb.LockedUntil, mb.TANHash, mb.LastActive = 0, time.Time{}, nil, sv.Now()
	return mb, sv.store.UpdateMailbox(ctx, mb)
}

// pinErrorKey is the error text for a wrong PIN and/or TAN, naming only
// what the mode asks for.
func pinErrorKey(pin, tan bool) string {
	switch {
	case pin && tan:
		return "err_pin_tan"
	case tan:
		return "err_tan"
	}
	return "err_pin"
}

func normTAN(s string) string {
	return strings.ToUpper(strings.NewReplacer(" ", "", "-", "").Replace(s))
}

// Login checks the password and returns the mailbox and its private key.
// Every failure is ErrLoginFailed (unknown address, wrong password, not
// activated) or a *ThrottledError, the same for every address.
func (sv *Service) Login(ctx context.Context, ip, addr, password string) (*Mailbox, *ecdh.PrivateKey, error) {
	addr = normAddr(addr)
	if err := sv.attempt("password", addr, ip); err != nil {
		return nil, nil, err
	}
	mb, err := sv.store.GetMailbox(ctx, addr)
	if err != nil || mb.State != StateActive {
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, nil, err
		}
		// Spend the same time as a real check.
		UnwrapWithSecret(sv.dummy, password, nil)
		sv.failed("password", addr, ip)
		return nil, nil, ErrLoginFailed
	}
	priv, err := UnwrapWithSecret(mb.WrappedPW, password, adPW(mb.Address))
	if err != nil {
		sv.failed("password", addr, ip)
		return nil, nil, ErrLoginFailed
	}
	sv.th.success(addr, ip, sv.Now())
	mb.LastActive, mb.WarnedAt = sv.Now(), time.Time{}
	if err := sv.store.UpdateMailbox(ctx, mb); err != nil {
		return nil, nil, err
	}
	return mb, priv, nil
}

func mustKey() *ecdh.PrivateKey {
	k, err := NewKeyPair()
	if err != nil {
		panic(err)
	}
	return k
}

// resetLinkTTL is how long a reset link is valid.
const resetLinkTTL = time.Hour

// resetLinkInterval: at most one reset link per address in this time.
const resetLinkInterval = 5 * time.Minute

// RequestReset mails a reset link to addr when it has an active mailbox
// in reset mode; else it does nothing. It returns at once, doing the
// work in the background, so that neither the answer nor its timing
// tells whether the address has a mailbox.
func (sv *Service) RequestReset(addr, client string) {
	addr = normAddr(addr)
	if !sv.s.resetAllowed || addr == "" {
		return
	}
	sv.mu.Lock()
	now := sv.Now()
	for a, t := range sv.resetSent {
		if now.Sub(t) >= resetLinkInterval {
			delete(sv.resetSent, a)
		}
	}
	if _, recent := sv.resetSent[addr]; recent {
		sv.mu.Unlock()
		sv.log.Info("reset link not sent again so soon", "mailbox", addr, "client", client)
		return
	}
	sv.resetSent[addr] = now
	sv.bg.Add(1)
	sv.mu.Unlock()
	go func() {
		defer sv.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		mb, err := sv.store.GetMailbox(ctx, addr)
		if err != nil || mb.State != StateActive || !mb.ResetAllow || mb.WrappedQA == nil {
			if err != nil && !errors.Is(err, ErrNotFound) {
				sv.log.Error("reset link", "mailbox", addr, "error", err)
			}
			sv.log.Info("reset link requested for an address without a resettable mailbox", "address", addr, "client", client)
			return
		}
		tok := newToken()
		exp := sv.Now().Add(resetLinkTTL)
		if err := sv.store.PutToken(ctx, &Token{Hash: tokenHash(tok), Mailbox: mb.Address, Kind: "reset", Expires: exp}); err != nil {
			sv.log.Error("reset link", "mailbox", addr, "error", err)
			return
		}
		if sv.emit(ctx, sv.toRecipient(mb, sdk.Event{Type: "webmailbox.reset_link", Recipient: mb.Address,
			Attributes: map[string]string{"link": sv.link("/reset?t=" + tok), "expires": timeAttr(exp, sv.locOf(mb)), "client": client}})) == nil {
			sv.log.Info("reset link sent", "mailbox", mb.Address, "client", client)
		}
	}()
}

// ResetTarget returns the mailbox a valid reset link belongs to.
func (sv *Service) ResetTarget(ctx context.Context, tok string) (*Mailbox, error) {
	t, err := sv.store.PeekToken(ctx, tokenHash(tok), "reset", sv.Now())
	if err != nil {
		return nil, err
	}
	mb, err := sv.store.GetMailbox(ctx, t.Mailbox)
	if err != nil {
		return nil, err
	}
	if mb.State != StateActive || !mb.ResetAllow || mb.WrappedQA == nil {
		return nil, ErrNotFound
	}
	return mb, nil
}

// ResetPassword sets a new password with a reset link's token and the
// security answer. It ends every session of the mailbox.
func (sv *Service) ResetPassword(ctx context.Context, ip, tok, answer, newPW, newPW2 string) error {
	mb, err := sv.ResetTarget(ctx, tok)
	if err != nil {
		return err
	}
	if len([]rune(newPW)) < 8 {
		return &formError{"err_pw_short"}
	}
	if newPW != newPW2 {
		return &formError{"err_pw_mismatch"}
	}
	if err := sv.attempt("answer", mb.Address, ip); err != nil {
		return err
	}
	priv, err := UnwrapWithSecret(mb.WrappedQA, answerNorm(answer), adQA(mb.Address))
	if err != nil {
		sv.failed("answer", mb.Address, ip)
		return ErrLoginFailed
	}
	if _, err := sv.store.UseToken(ctx, tokenHash(tok), "reset", sv.Now()); err != nil {
		return err
	}
	sv.th.success(mb.Address, ip, sv.Now())
	mb.WrappedPW = WrapWithSecret(priv, newPW, sv.s.kdf, adPW(mb.Address))
	if err := sv.store.UpdateMailbox(ctx, mb); err != nil {
		return err
	}
	n, err := sv.store.DeleteSessionsOf(ctx, mb.Address, nil)
	if err != nil {
		return err
	}
	sv.log.Info("password reset; all sessions ended", "mailbox", mb.Address, "client", ip, "sessions_ended", n)
	return nil
}

// StoredMessage is a decrypted message.
type StoredMessage struct {
	*Message
	Meta Meta
	Raw  []byte // nil from List
}

// List returns a folder's messages with decrypted summaries.
func (sv *Service) List(ctx context.Context, addr string, priv *ecdh.PrivateKey, folder string) ([]StoredMessage, error) {
	ms, err := sv.store.ListMessages(ctx, addr, folder)
	if err != nil {
		return nil, err
	}
	out := make([]StoredMessage, 0, len(ms))
	for _, m := range ms {
		sm := StoredMessage{Message: m}
		if b, err := Open(priv, m.Meta, adMeta(addr)); err == nil {
			json.Unmarshal(b, &sm.Meta)
		} else {
			sm.Meta.Subject = "(?)"
		}
		m.Raw = nil
		out = append(out, sm)
	}
	return out, nil
}

// Get returns one decrypted message.
func (sv *Service) Get(ctx context.Context, addr string, priv *ecdh.PrivateKey, id int64) (*StoredMessage, error) {
	m, err := sv.store.GetMessage(ctx, addr, id)
	if err != nil {
		return nil, err
	}
	raw, err := Open(priv, m.Raw, adRaw(addr))
	if err != nil {
		return nil, err
	}
	sm := &StoredMessage{Message: m, Raw: raw}
	if b, err := Open(priv, m.Meta, adMeta(addr)); err == nil {
		json.Unmarshal(b, &sm.Meta)
	}
	return sm, nil
}

// storeSent keeps a copy of a sent message in the "sent" folder.
func (sv *Service) storeSent(ctx context.Context, mb *Mailbox, raw []byte) error {
	meta, _ := json.Marshal(metaOf(raw))
	sm, err := Seal(mb.PublicKey, meta, adMeta(mb.Address))
	if err != nil {
		return err
	}
	sr, err := Seal(mb.PublicKey, raw, adRaw(mb.Address))
	if err != nil {
		return err
	}
	_, err = sv.store.AddMessage(ctx, &Message{Mailbox: mb.Address, Folder: "sent", Received: sv.Now(), Size: int64(len(raw)), Meta: sm, Raw: sr}, 0)
	return err
}

// ChangePassword sets a new password (and, when given, a new security
// question and answer) for a logged-in user who knows the current one.
// Only mailboxes in reset mode may change it: in no-reset mode the
// recipient was told the password is fixed.
// Every other session of the mailbox ends; keep (the hash of the current
// session's id) stays.
func (sv *Service) ChangePassword(ctx context.Context, ip, addr string, keep []byte, oldPW, newPW, newPW2, question, answer string) error {
	if len([]rune(newPW)) < 8 {
		return &formError{"err_pw_short"}
	}
	if newPW != newPW2 {
		return &formError{"err_pw_mismatch"}
	}
	if (question == "") != (answer == "") || (answer != "" && len([]rune(answerNorm(answer))) < 3) {
		return &formError{"err_question"}
	}
	mb, priv, err := sv.Login(ctx, ip, addr, oldPW)
	if err != nil {
		return err
	}
	if !mb.ResetAllow {
		return &formError{"reset_none"}
	}
	mb.WrappedPW = WrapWithSecret(priv, newPW, sv.s.kdf, adPW(mb.Address))
	if question != "" {
		mb.Question = strings.TrimSpace(question)
		mb.WrappedQA = WrapWithSecret(priv, answerNorm(answer), sv.s.kdf, adQA(mb.Address))
	}
	if err := sv.store.UpdateMailbox(ctx, mb); err != nil {
		return err
	}
	n, err := sv.store.DeleteSessionsOf(ctx, mb.Address, keep)
	if err != nil {
		return err
	}
	sv.log.Info("password changed; other sessions ended", "mailbox", mb.Address, "client", ip, "sessions_ended", n)
	return nil
}
