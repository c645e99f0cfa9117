// Package metrics defines posthorn's Prometheus metrics (exposition format
// served on /metrics by the daemon) in one place, so names stay consistent:
// every metric is posthorn_<area>_<what>[_unit].
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds every posthorn metric plus the Go and process collectors.
var Registry = prometheus.NewRegistry()

var (
	// SMTPSessions counts inbound sessions by listener.
	SMTPSessions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_smtp_sessions_total", Help: "Inbound SMTP sessions started, by listener.",
	}, []string{"listener"})
	// SMTPActive is the number of open inbound sessions by listener.
	SMTPActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "posthorn_smtp_sessions_active", Help: "Inbound SMTP sessions open now, by listener.",
	}, []string{"listener"})
	// SMTPConnections is the number of inbound connections holding a
	// session slot (what max_sessions limits), counted from accept to close.
	SMTPConnections = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "posthorn_smtp_connections_open", Help: "Inbound connections holding a session slot now (what max_sessions limits), by listener.",
	}, []string{"listener"})
	// SMTPConnectionsPeak is the most connections that held a session slot
	// at once since the daemon started.
	SMTPConnectionsPeak = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "posthorn_smtp_connections_open_peak", Help: "Most inbound connections that held a session slot at once since start, by listener.",
	}, []string{"listener"})
	// SMTPRefused counts connections refused before the greeting.
	SMTPRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_smtp_connections_refused_total", Help: "Connections refused by a session limit.",
	}, []string{"listener", "reason"})
	// AuthFailures counts failed AUTH attempts by listener and reason
	// (bad_credentials, throttled).
	AuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_smtp_auth_failures_total", Help: "Failed AUTH attempts, by listener and reason (bad_credentials, throttled).",
	}, []string{"listener", "reason"})
	// AuthChecksInFlight is the number of password hashes being computed.
	AuthChecksInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "posthorn_smtp_auth_checks_in_flight", Help: "Password checks (argon2id) running now.",
	})
	// SpoolFreeBytes is the free space in the spool at the last MAIL FROM.
	SpoolFreeBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "posthorn_spool_free_bytes", Help: "Free bytes on the spool's file system, as last seen at MAIL FROM.",
	})
	// LowSpaceRefusals counts MAIL FROM refused with 452 4.3.1.
	LowSpaceRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_smtp_low_space_refusals_total", Help: "MAIL FROM refused (452 4.3.1) because the spool is below queue.min_free_space.",
	}, []string{"listener"})
	// MaildirTmpRemoved counts stale files removed from Maildir tmp/.
	MaildirTmpRemoved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "posthorn_maildir_tmp_removed_total", Help: "Files older than 36 hours removed from Maildir tmp/ directories.",
	})
	// Accepted counts messages acknowledged with 250.
	Accepted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_messages_accepted_total", Help: "Messages accepted (250 after fsync), by listener.",
	}, []string{"listener"})
	// Rejected counts refused commands and messages by stage and code class.
	Rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_messages_rejected_total", Help: "Refused MAIL/RCPT/DATA/AUTH, by listener, stage and reply code.",
	}, []string{"listener", "stage", "code"})
	// AcceptLatency is the time from end of DATA to the 250.
	AcceptLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "posthorn_accept_latency_seconds", Help: "Time from the start of DATA to the 250 reply (includes fsync).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	// Deliveries counts delivery results per recipient.
	Deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_deliveries_total", Help: "Per-recipient delivery results, by transport and result (delivered, deferred, failed).",
	}, []string{"transport", "result"})
	// DeliveryLatency is the time a delivery attempt takes.
	DeliveryLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "posthorn_delivery_latency_seconds", Help: "Duration of one delivery attempt, by transport.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
	}, []string{"transport"})
	// QueueTime is the time from acceptance to final delivery.
	QueueTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "posthorn_queue_residence_seconds", Help: "Time from acceptance to a final result per recipient.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 14),
	})
	// QueueRecipients is the number of queued recipients by state.
	QueueRecipients = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "posthorn_queue_recipients", Help: "Pending recipients in the queue of messages not on hold, by state (active: not tried yet, deferred: tried and waiting).",
	}, []string{"state"})
	// QueueHeld is the number of messages on hold.
	QueueHeld = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "posthorn_queue_held_messages", Help: "Messages on hold (posthorn queue hold).",
	})
	// QueueMessages is the number of messages in the queue.
	QueueMessages = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "posthorn_queue_messages", Help: "Messages in the queue.",
	})
	// AuthResults counts sender authentication results on the MX listener.
	AuthResults = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_sender_auth_results_total", Help: "SPF, DKIM and DMARC results of mail on the MX listener, by method and result.",
	}, []string{"method", "result"})
	// MilterCalls counts commands sent to each milter, by stage.
	MilterCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_milter_calls_total", Help: "Milter protocol stages run, by milter and stage (connect, helo, mail, rcpt, data, content).",
	}, []string{"milter", "stage"})
	// MilterActions counts what milters answered.
	MilterActions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_milter_actions_total", Help: "Milter replies and modifications, by milter and action.",
	}, []string{"milter", "action"})
	// MilterLatency is how long each stage took.
	MilterLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "posthorn_milter_latency_seconds", Help: "Time a milter took for one stage, by milter and stage.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
	}, []string{"milter", "stage"})
	// MilterFailures counts milters that could not be used (down,
	// timeout, protocol error), by the default action then taken.
	MilterFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_milter_failures_total", Help: "Milter failures (connect, timeout, protocol), by milter, reason and the default action taken.",
	}, []string{"milter", "reason", "default_action"})
	// Bounces counts DSNs generated by kind (failed, delayed, delivered).
	Bounces = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_dsn_generated_total", Help: "Delivery status notifications generated, by action.",
	}, []string{"action"})
	// DoubleBouncesLost counts bounces that could not be delivered to the
	// sender nor, as a double bounce, to the postmaster.
	DoubleBouncesLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "posthorn_double_bounces_lost_total", Help: "Double bounces (to the postmaster) that could not be delivered either; each is logged at error level.",
	})
	// MaildropPickedUp and MaildropFailed count files from the drop
	// directory queued and set aside; MaildropFailed by reason
	// (malformed, owner, too_big, refused, unreadable), MaildropBounced
	// the bounces sent to the senders of refused files.
	MaildropPickedUp = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "posthorn_maildrop_queued_total", Help: "Messages sendmail left in the drop directory that were queued.",
	})
	MaildropFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_maildrop_refused_total", Help: "Files in the drop directory set aside as .bad.NAME, by reason (malformed, owner, too_big, refused, unreadable); each is logged at error level.",
	}, []string{"reason"})
	MaildropBounced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "posthorn_maildrop_bounces_total", Help: "Bounces queued to the senders of messages refused from the drop directory.",
	})
	// Reloads counts config reloads by result (ok, refused).
	Reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_config_reloads_total", Help: "Config reloads (SIGHUP, posthorn reload), by result.",
	}, []string{"result"})
	// PluginCalls, PluginErrors and PluginLatency are per plugin and
	// hook (Inspect, CanHandle, Transform, DeliverEvent).
	PluginCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_plugin_calls_total", Help: "Hook calls to plugins, by plugin and hook.",
	}, []string{"plugin", "hook"})
	PluginErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_plugin_call_errors_total", Help: "Hook calls that failed, by plugin, hook and kind (not_running, timeout, error).",
	}, []string{"plugin", "hook", "kind"})
	PluginLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "posthorn_plugin_call_seconds", Help: "Time until a plugin hook answered, by plugin and hook.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
	}, []string{"plugin", "hook"})
	// PluginRestarts counts plugin process starts after the first.
	PluginRestarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "posthorn_plugin_restarts_total", Help: "Plugin processes started again after a crash, a failed health check or a reload.",
	}, []string{"plugin"})
	// PluginUp is 1 while a plugin runs.
	PluginUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "posthorn_plugin_up", Help: "1 while the plugin's process runs, else 0.",
	}, []string{"plugin"})
)

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		SMTPSessions, SMTPActive, SMTPConnections, SMTPConnectionsPeak, SMTPRefused, AuthFailures, AuthChecksInFlight, SpoolFreeBytes, LowSpaceRefusals, MaildirTmpRemoved,
		Accepted, Rejected, AcceptLatency,
		Deliveries, DeliveryLatency, QueueTime, QueueRecipients, QueueHeld, QueueMessages, Bounces, AuthResults,
		MilterCalls, MilterActions, MilterLatency, MilterFailures,
		DoubleBouncesLost, MaildropPickedUp, MaildropFailed, MaildropBounced, Reloads, PluginCalls, PluginErrors, PluginLatency, PluginRestarts, PluginUp)
}

// Handler serves the registry in the Prometheus exposition format.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{})
}
