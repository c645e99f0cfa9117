package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Plugin is what every plugin implements. Add one or more hook interfaces
// (InboundHook, OutboundHook, EventHook) on the same type; Serve finds them
// by type assertion.
type Plugin interface {
	// Describe returns the plugin's identity. It is called at start and
	// must not depend on configuration.
	Describe() Description
	// Configure receives the plugin's configuration before any hook is
	// called. It may be called again with a new configuration (reload).
	// Return a *ConfigError (Config.Decode does) to point at a key.
	Configure(ctx context.Context, cfg Config) error
}

// InboundHook sees a received message before it is queued.
type InboundHook interface {
	// Inspect decides on a message. body streams the message (headers and
	// body, CRLF line endings); the hook may return before reading it all.
	// ctx ends when the host's timeout for the plugin expires.
	Inspect(ctx context.Context, env *Envelope, body io.Reader) (Verdict, error)
}

// OutboundHook sees a queued message on its way to a group of recipients.
type OutboundHook interface {
	// CanHandle answers, per recipient, whether the plugin can take it
	// (e.g. a key is known). Recipients without an answer count as no.
	CanHandle(ctx context.Context, env *Envelope, rcpts []Recipient) ([]Answer, error)
	// Transform handles the group of recipients the plugin said yes to:
	// new messages (Transformed), took them (Diverted) or not (Declined).
	Transform(ctx context.Context, env *Envelope, group []Recipient, body io.Reader) (OutboundResult, error)
}

// EventHook receives the events the plugin subscribed to in
// Description.EventTypes.
type EventHook interface {
	// HandleEvent is called once per event; a returned error makes the host
	// log it (and, per its policy, redeliver with the same Event.ID).
	HandleEvent(ctx context.Context, ev Event) error
}

// Description identifies a plugin.
type Description struct {
	// Name, e.g. "smime": letters, digits, '-', '_', '.'; at most 64.
	Name string
	// Version of the plugin, semantic versioning: "1.4.2", "0.3.0-rc.1".
	Version string
	// EventTypes the plugin subscribes to: exact names, "prefix.*", "*".
	// Requires EventHook.
	EventTypes []string
	// MaxMessageSize is the largest message the plugin accepts, in bytes;
	// 0 for no limit of its own. Bigger messages are refused by the SDK
	// with ErrMessageTooLarge.
	MaxMessageSize int64
	// InboundFilter selects the received mail Inspect is called for
	// (protocol minor 2); nil: every message. Requires InboundHook.
	InboundFilter *InboundFilter
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	semverRE = regexp.MustCompile(`^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
)

// Validate reports whether d is a usable description.
func (d Description) Validate() error {
	if !nameRE.MatchString(d.Name) {
		return fmt.Errorf("plugin name %q: want 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)", d.Name)
	}
	if !semverRE.MatchString(d.Version) {
		return fmt.Errorf("plugin version %q is not a semantic version (1.2.3)", d.Version)
	}
	for _, t := range d.EventTypes {
		if t == "*" {
			continue
		}
		if err := validEventType(strings.TrimSuffix(t, ".*")); err != nil {
			return fmt.Errorf("event subscription: %w", err)
		}
	}
	if d.MaxMessageSize < 0 {
		return errors.New("negative MaxMessageSize")
	}
	return d.InboundFilter.Validate()
}

// Config is what Configure receives.
type Config struct {
	// JSON is the plugin's [plugin.config] TOML table as a JSON object,
	// "{}" when absent. Decode it with Decode.
	JSON json.RawMessage
	// DataDir is a directory owned by the plugin for persistent state.
	DataDir string
	// MaxMessageSize is the largest message the host accepts from the
	// plugin (replacements, transformed outputs, Submit); 0 for no limit.
	MaxMessageSize int64
	// Host calls back into the host. Keep it; it stays valid until the next
	// Configure. Without a host service its methods return ErrNoHost.
	Host Host
	// Database is the SQL database the host shares with its plugins (its
	// [database] section), nil when it has none: then keep state under
	// DataDir. A plugin never needs connection settings of its own; open
	// it with sdk/sqldb (protocol minor 3).
	Database *Database
	// DNSResolver is the host's DNS resolver, "HOST:PORT" (empty: the
	// system's). Resolve every name through it, e.g. with
	// netdial.Dialer{Server: cfg.DNSResolver}, so that the plugin sees
	// the names the MTA sees.
	DNSResolver string
}

// DatabaseEnv is the environment variable through which an operator
// points a plugin's command-line tools (key and certificate management)
// at the shared database; unset, they use the local files.
const DatabaseEnv = "POSTHORN_DATABASE_DSN"

// Database is the host's shared PostgreSQL database.
type Database struct {
	// DSN is a PostgreSQL connection URL or key=value string. It may
	// hold a password: never log it.
	DSN string
	// MaxConns is the most connections to open (0: the driver's default).
	MaxConns int
	// TLS overrides the DSN's sslmode when set: "disable", "require",
	// "verify-ca" or "verify-full".
	TLS string
	// CAFile is the PEM trust anchor for verify-ca and verify-full.
	CAFile string
}

// Decode decodes the configuration into v (a pointer to a struct with json
// tags) and rejects unknown keys and wrong types with a *ConfigError naming
// the key.
func (c Config) Decode(v any) error {
	data := c.JSON
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return &ConfigError{Message: "the configuration must be a table (a JSON object)"}
		}
		return &ConfigError{Key: te.Field, Message: fmt.Sprintf("wrong type: %s where %s is expected", te.Value, te.Type)}
	}
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		key := strings.TrimPrefix(msg, "json: unknown field ")
		if k, err := strconv.Unquote(key); err == nil {
			key = k
		}
		return &ConfigError{Key: key, Message: "unknown key"}
	}
	return &ConfigError{Message: err.Error()}
}

// ConfigError is a configuration the plugin does not accept. The host shows
// it like its own config errors: "plugin NAME: config.KEY: MESSAGE".
type ConfigError struct {
	Key     string // dotted path inside the plugin's table; may be empty
	Message string
}

func (e *ConfigError) Error() string {
	if e.Key == "" {
		return e.Message
	}
	return e.Key + ": " + e.Message
}

// Host is the host's side, for plugins. Every method is safe for
// concurrent use.
type Host interface {
	// Submit queues a new message and returns its queue id once the host
	// has it on disk. idempotencyKey is required: a retried Submit with the
	// same key returns the first queue id instead of queueing twice
	// (derive it from what causes the message, e.g. "activation:"+token).
	Submit(ctx context.Context, idempotencyKey string, env *Envelope, body io.Reader) (queueID string, err error)
	// Emit sends an event; the host fans it out to subscribers. The type
	// needs a dotted prefix ("myplugin.thing").
	Emit(ctx context.Context, ev Event) error
	// Confirm settles a recipient the plugin diverted with pending = true.
	Confirm(ctx context.Context, c Confirmation) error
}

// Errors.
var (
	// ErrNoHost is returned by Host methods when the host offers no host
	// service (or before Configure).
	ErrNoHost = errors.New("posthorn: host service not available")
	// ErrMessageTooLarge is returned when a message exceeds the receiver's
	// declared limit.
	ErrMessageTooLarge = errors.New("posthorn: message too large")
	// ErrUnknownRecipient is returned by Host.Submit when a recipient is
	// in one of the host's own domains but has no mailbox there (a typo
	// like "sendr@example.org"); the message was not queued. The error's
	// text names the address.
	ErrUnknownRecipient = errors.New("posthorn: unknown recipient")
)
