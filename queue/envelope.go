package queue

import "time"

// RcptState is where one recipient of a queued message stands.
type RcptState string

const (
	// Pending: not yet delivered; due at NextAttempt.
	Pending RcptState = "pending"
	// Delivered: handed over (local mailbox, LMTP, or a remote 250).
	Delivered RcptState = "delivered"
	// Failed: permanently failed (5xx, expired, policy); a DSN was due.
	Failed RcptState = "failed"
)

// Recipient is one envelope recipient and its delivery state.
type Recipient struct {
	Addr string `json:"addr"`
	// ORcpt is the RFC 3461 original recipient ("rfc822;addr"), if given.
	ORcpt string `json:"orcpt,omitempty"`
	// Notify is the RFC 3461 NOTIFY list (NEVER, SUCCESS, FAILURE, DELAY);
	// empty means the default (FAILURE and DELAY).
	Notify []string `json:"notify,omitempty"`

	State       RcptState `json:"state"`
	Attempts    int       `json:"attempts"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Status is the last RFC 3463 enhanced status code ("4.4.1").
	Status string `json:"status,omitempty"`
	// Diagnostic is the last reply or reason, e.g. "smtp; 550 5.1.1 no such user".
	Diagnostic string `json:"diagnostic,omitempty"`
	// RemoteMTA is the host that gave the last reply, if any.
	RemoteMTA string `json:"remote_mta,omitempty"`
	// DelayWarned is set once a delay warning DSN was sent.
	DelayWarned bool `json:"delay_warned,omitempty"`
}

// Envelope is everything about a queued message except its content.
type Envelope struct {
	ID string `json:"id"`
	// From is the reverse-path; "" is the null sender (bounces).
	From       string       `json:"from"`
	Recipients []*Recipient `json:"recipients"`
	Received   time.Time    `json:"received"`
	Size       int64        `json:"size"`

	// RFC 3461 DSN parameters of MAIL FROM.
	Ret   string `json:"ret,omitempty"`   // FULL or HDRS
	EnvID string `json:"envid,omitempty"` // ENVID

	BodyType   string `json:"body_type,omitempty"` // 7BIT, 8BITMIME, BINARYMIME
	SMTPUTF8   bool   `json:"smtputf8,omitempty"`
	RequireTLS bool   `json:"requiretls,omitempty"` // RFC 8689

	AuthUser   string `json:"auth_user,omitempty"`
	ClientAddr string `json:"client_addr,omitempty"`
	ClientHelo string `json:"client_helo,omitempty"`

	Held bool `json:"held,omitempty"`

	// Attrs carries extension data (plugin verdicts, policy decisions)
	// through the queue; keys are namespaced, e.g. "policy.encrypt".
	Attrs map[string]string `json:"attrs,omitempty"`

	// Recovered is true for messages found on disk at Open: a delivery may
	// have been under way when the previous process died, so deliverers
	// that can check for an earlier delivery (Maildir) should. Not stored.
	Recovered bool `json:"-"`
}
