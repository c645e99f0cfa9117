// Package server runs a posthorn MTA inside another Go program. It is the
// one deliberate public surface of the MTA besides the posthorn binary
// (see mta/doc.go): the testbed's demo uses it to start posthorn next to
// its fake internet. Everything else lives under mta/internal.
package server

import (
	"context"
	"io"
	"log/slog"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/daemon"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/queue"
)

// Server is a running MTA.
type Server struct {
	d *daemon.Daemon
}

// Start brings up the MTA described by cfg: listeners, queue, delivery
// and plugins, exactly as `posthorn serve` does.
func Start(cfg *conf.Config, log *slog.Logger) (*Server, error) {
	d, err := daemon.Start(cfg, log, daemon.Options{})
	if err != nil {
		return nil, err
	}
	return &Server{d: d}, nil
}

// MXAddr is the bound address of the MX listener, or "".
func (s *Server) MXAddr() string { return s.d.Addr(smtpd.MX) }

// Queued lists what is waiting in the queue, as `posthorn queue list` does.
func (s *Server) Queued() []*queue.Envelope { return s.d.Queue.List() }

// Shutdown stops the MTA; queued mail stays on disk.
func (s *Server) Shutdown(ctx context.Context) error { return s.d.Shutdown(ctx) }

// Explain writes what `posthorn tls explain DOMAIN` prints for cfg.
func Explain(w io.Writer, cfg *conf.Config, domain, sender string, requireTLS, probe bool) error {
	ex, err := daemon.Explain(cfg, domain, sender, requireTLS, probe)
	if err != nil {
		return err
	}
	ex.Print(w)
	return nil
}
