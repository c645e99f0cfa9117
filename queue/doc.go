// Package queue is Posthorn's durable spool (first cut; the full design
// notes follow in this comment).
//
// Layout under Options.Dir: msg/<id>.body (message bytes), msg/<id>.env
// (checksummed append-only envelope journal), tmp/ (files being written),
// quarantine/ (unreadable entries, moved aside at Open).
package queue
