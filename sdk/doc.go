// Package sdk is the Posthorn plugin SDK: what encryption, notification and
// other plugins are built on. A plugin is a separate program the MTA starts
// and talks to over gRPC (hashicorp/go-plugin); this package hides all of
// that behind plain Go types.
//
// A plugin is a type implementing Plugin (Describe, Configure) plus one or
// more hooks:
//
//   - InboundHook: sees a received message before it is queued and returns
//     a Verdict (Accept, Reject, Tempfail, AddHeaders, Replace).
//   - OutboundHook: for a queued message and a group of recipients, says
//     which it can handle (CanHandle) and then transforms the message
//     (Transformed: new messages per recipient subset), takes it (Diverted)
//     or not (Declined). The host usually asks both in one call (protocol
//     minor 6); the SDK then calls CanHandle and Transform in turn, with the
//     recipients CanHandle said yes to.
//   - EventHook: receives delivery events and plugin-emitted events it
//     subscribed to in Description.EventTypes.
//
// main is one line:
//
//	func main() { sdk.Serve(&MyPlugin{}) }
//
// Rules (see README.md for the whole guide):
//
//   - Never write to standard output: it carries the go-plugin handshake.
//     Log with Logger().
//   - Stream bodies: they arrive as io.Reader and leave as io.Reader; a
//     message can be far larger than memory allows. Do not use a body after
//     the hook returned, except through the Replacement/Output readers you
//     return (the SDK drains those before the call ends).
//   - Honour the context: it ends when the host's timeout for the plugin
//     expires, and the host has moved on by then.
//   - Host.Submit takes an idempotency key: a retried submission must not
//     queue a second message.
//   - A panic in a hook fails that call (the host applies its on_failure
//     policy) and is logged with its stack; the plugin keeps serving. Panics
//     in goroutines you start yourself still kill the process.
//   - The plugin exits when the host goes away.
//
// Protocol versioning: posthorn.plugin.v1 (sdk/proto) is frozen; within v1
// only additive changes are made, each bumping ProtocolMinor, which
// Describe reports to the host.
package sdk
