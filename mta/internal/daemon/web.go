package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/posthorn/posthorn/mta/internal/adminapi"
	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/selfservice"
)

// webServer is one of the daemon's HTTPS servers (the admin API, the
// self-service page). It follows reloads as the SMTP listeners do: while
// its address stays the same, its port stays open and every new request
// is answered by the handler, and every new TLS handshake made with the
// certificate, of the config in force; when the address changes, the new
// port is bound before the switch (a port that cannot be bound refuses the
// reload) and the old server stops accepting, finishes the requests it is
// answering, then closes.
type webServer struct {
	name, role string
	addr       string       // as configured (may be port 0)
	ln         net.Listener // the bound TCP port
	srv        *http.Server
	grace      time.Duration // how long a request may take: the drain bound
	cur        atomic.Pointer[webState]
}

// webState is what answers a webServer's new requests.
type webState struct {
	h   http.Handler
	tls *tls.Config
}

// listenWeb binds addr; serve starts answering.
func listenWeb(name, role, addr string, read, write time.Duration, log *slog.Logger) (*webServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	w := &webServer{name: name, role: role, addr: addr, ln: ln, grace: read + write}
	w.srv = &http.Server{
		Handler:           http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { w.cur.Load().h.ServeHTTP(rw, r) }),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: read, WriteTimeout: write,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return w, nil
}

func (w *webServer) set(h http.Handler, tc *tls.Config) { w.cur.Store(&webState{h: h, tls: tc}) }

// Addr is the bound address.
func (w *webServer) Addr() string { return w.ln.Addr().String() }

func (w *webServer) serve(d *Daemon) {
	tl := tls.NewListener(w.ln, &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return w.cur.Load().tls, nil
	}})
	d.goRun(func() {
		if err := w.srv.Serve(tl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("web server", "listener", w.name, "err", err)
		}
	})
	d.log.Info("listening", "listener", w.name, "address", w.Addr(), "role", w.role)
}

// drain stops accepting at once and waits for the requests in progress
// (at most grace), then closes what is left.
func (w *webServer) drain(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := w.srv.Shutdown(ctx); err != nil {
		w.srv.Close()
	}
	w.ln.Close() // in case Serve never ran
}

// webPlan is what switching to a generation does to one web server:
// bind is a newly bound server for a changed address (nil: the address
// is unchanged, or now empty).
type webPlan struct {
	bind *webServer
}

// webPlans binds the ports of g's web servers whose address changed. On
// error nothing is left bound.
func (d *Daemon) webPlans(g *generation) (admin, self webPlan, err error) {
	cfg := g.cfg
	if a := cfg.Admin.Address; a != "" && (d.admin == nil || d.admin.addr != a) {
		if admin.bind, err = listenWeb("admin-api", "admin API (HTTPS, bearer tokens)", a, time.Minute, 5*time.Minute,
			d.log.With("component", "admin-api")); err != nil {
			return admin, self, fmt.Errorf("admin.address: %w", err)
		}
	}
	if a := cfg.SelfService.Address; a != "" && (d.self == nil || d.self.addr != a) {
		if self.bind, err = listenWeb("self-service", "users' secure-alias settings (HTTPS)", a, 30*time.Second, 30*time.Second,
			d.log.With("component", "self-service")); err != nil {
			if admin.bind != nil {
				admin.bind.ln.Close()
			}
			return admin, self, fmt.Errorf("self_service.address: %w", err)
		}
	}
	return admin, self, nil
}

// abort releases what webPlans bound for a generation that is not used.
func (p webPlan) abort() {
	if p.bind != nil {
		p.bind.ln.Close()
	}
}

// switchWeb puts g's admin API and self-service page in force, moving
// them where their address changed (reloadMu held).
func (d *Daemon) switchWeb(g *generation, admin, self webPlan) {
	cfg := g.cfg
	var adminH http.Handler
	if cfg.Admin.Address != "" {
		queueOps := d.control
		if queueOps == nil {
			queueOps = control.New(d.Queue, d.log.With("component", "control"))
		}
		adminH = adminapi.New(adminapi.Config{
			Tokens: cfg.Admin.Tokens, Dir: g.router.Directory(), Queue: queueOps,
			Plugins: d.pluginStatus, Preflight: func(ctx context.Context, from string, to []string) (any, error) {
				return d.Preflight(ctx, from, to)
			},
			Logger: d.log.With("component", "admin-api"),
		})
	}
	d.admin = d.switchOne(d.admin, admin, adminH, g.tlsConf)

	var selfH http.Handler
	if cfg.SelfService.Address != "" {
		page := selfservice.New(selfservice.Config{
			Dir: g.router.Directory(), Auth: g.users, Subdomain: cfg.SecureAlias.Subdomain,
			DefaultLevel: cfg.SecureAlias.Level.String(), Logger: d.log.With("component", "self-service"),
			Guard: func(ctx context.Context, ip net.IP, user, password string) (bool, bool, error) {
				return d.guard.AuthenticateFrom(ctx, d.gen.Load().users, ip, user, password)
			},
		})
		if d.selfPage != nil {
			page.ShareSessions(d.selfPage) // users stay logged in
		}
		d.selfPage, selfH = page, page
	} else {
		d.selfPage = nil
	}
	d.self = d.switchOne(d.self, self, selfH, g.tlsConf)
}

// switchOne moves one web server to handler h (nil: off) and returns the
// one in force.
func (d *Daemon) switchOne(cur *webServer, p webPlan, h http.Handler, tc *tls.Config) *webServer {
	next := cur
	if p.bind != nil || h == nil {
		next = p.bind
	}
	if next != nil {
		next.set(h, tc)
		if next != cur {
			next.serve(d)
		}
	}
	if cur != nil && next != cur {
		d.drainingWeb = append(d.drainingWeb, cur)
		d.goRun(func() { cur.drain(cur.grace) })
		d.log.Info("web listener moved; finishing its requests", "listener", cur.name, "old_address", cur.Addr())
	}
	return next
}

// SelfServiceAddr is the bound self-service address, or "".
func (d *Daemon) SelfServiceAddr() string {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.self == nil {
		return ""
	}
	return d.self.Addr()
}

// AdminAddr is the bound admin API address, or "".
func (d *Daemon) AdminAddr() string {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.admin == nil {
		return ""
	}
	return d.admin.Addr()
}
