package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/auth"
	"github.com/posthorn/posthorn/mta/internal/directory"
	"github.com/posthorn/posthorn/mta/internal/dovecot"
	"github.com/posthorn/posthorn/mta/internal/router"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
)

// openDirectory opens the user directory of cfg ([directory], with the
// password file for the static kind, and Dovecot's userdb for recipients
// the directory lacks) and picks who checks SMTP AUTH passwords: Dovecot
// when [dovecot] auth_socket is set, else the directory.
func openDirectory(cfg *conf.Config, log *slog.Logger) (*directory.Directory, smtpd.Authenticator, error) {
	users, err := auth.Open(cfg.Auth.PasswordFile)
	if err != nil {
		return nil, nil, fmt.Errorf("password file: %w", err)
	}
	dc := &dovecot.Client{AuthSocket: cfg.Dovecot.AuthSocket, UserdbSocket: cfg.Dovecot.UserdbSocket,
		Service: cfg.Dovecot.Service, Timeout: cfg.Dovecot.Timeout.D()}
	var userdb directory.Userdb
	if dc.UserdbSocket != "" {
		userdb = dc
	}
	dir, err := directory.Open(context.Background(), cfg, users, userdb, log)
	if err != nil {
		return nil, nil, err
	}
	if dc.AuthSocket != "" {
		return dir, dc, nil
	}
	return dir, dir, nil
}

// directoryFor gives a generation its router and AUTH checker. The static
// directory is the config's own tables, built anew with each generation;
// a database directory is opened once and shared by every generation
// (a change of [directory] or [database] takes effect at the next start).
func (d *Daemon) directoryFor(cfg *conf.Config) (*router.Router, smtpd.Authenticator, error) {
	if cfg.Directory.Kind == "static" || cfg.Directory.Kind == "" {
		dir, users, err := openDirectory(cfg, d.log.With("component", "directory"))
		if err != nil {
			return nil, nil, err
		}
		return router.NewWithDirectory(cfg, dir), users, nil
	}
	if d.dir == nil {
		dir, _, err := openDirectory(cfg, d.log.With("component", "directory"))
		if err != nil {
			return nil, nil, fmt.Errorf("directory: %w", err)
		}
		dir.Start()
		d.dir = dir
	}
	if cfg.Dovecot.AuthSocket != "" {
		dc := &dovecot.Client{AuthSocket: cfg.Dovecot.AuthSocket, Service: cfg.Dovecot.Service, Timeout: cfg.Dovecot.Timeout.D()}
		return router.NewWithDirectory(cfg, d.dir), dc, nil
	}
	return router.NewWithDirectory(cfg, d.dir), d.dir, nil
}

// localDomainNames are the generation's local domains: the [[domain]]
// tables in their order for the static directory, the database's domains
// (sorted; as loaded when the generation was built) otherwise. The first
// names the postmaster when none is configured; all of them get an
// MTA-STS policy when serving is on.
func localDomainNames(g *generation) []string {
	var out []string
	if k := g.cfg.Directory.Kind; k == "static" || k == "" {
		for _, dm := range g.cfg.Domains {
			out = append(out, strings.ToLower(dm.Name))
		}
		return out
	}
	for _, dm := range g.router.Directory().Domains() {
		out = append(out, dm.Name)
	}
	sort.Strings(out)
	return out
}
