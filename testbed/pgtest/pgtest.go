// Package pgtest starts a private PostgreSQL server for a test: initdb and
// postgres from Debian's postgresql package in a temporary directory,
// listening on a free loopback port, run as an unprivileged user (initdb
// refuses root) and stopped by PID when the test ends. Tests skip with a
// clear message when PostgreSQL is not installed.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/sdk"
)

// Server is a running private PostgreSQL.
type Server struct {
	Dir    string
	Host   string
	Port   int
	cmd    *exec.Cmd
	exited chan struct{}
	n      atomic.Int32
}

// binDir finds the newest /usr/lib/postgresql/*/bin with initdb.
func binDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[j]))))
		return vi > vj
	})
	if len(dirs) == 0 {
		return ""
	}
	return filepath.Dir(dirs[0])
}

// Start runs a PostgreSQL server until the test ends, or skips the test
// when PostgreSQL is not installed (Debian package postgresql).
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binDir()
	if bin == "" {
		t.Skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql")
	}
	if testing.Short() {
		t.Skip("starts a PostgreSQL server; skipped with -short")
	}
	dir, err := os.MkdirTemp("", "posthorn-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: use the postgres account of
		// the Debian package (or nobody).
		u, err := user.Lookup("postgres")
		if err != nil {
			u, err = user.Lookup("nobody")
		}
		if err != nil {
			t.Skip("running as root and neither user postgres nor nobody exists")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(filepath.Join(bin, name), args...)
		c.Dir = dir
		c.Env = []string{"LANG=C.UTF-8", "PATH=/usr/bin:/bin"}
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
		return c
	}
	data := filepath.Join(dir, "data")
	if out, err := run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	s := &Server{Dir: dir, Host: "127.0.0.1", Port: port}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	if cred != nil {
		os.Chown(logf.Name(), int(cred.Uid), int(cred.Gid))
	}
	s.cmd = run("postgres", "-D", data, "-k", dir, "-h", s.Host, "-p", strconv.Itoa(port),
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	exited := make(chan struct{})
	s.exited = exited
	go func() { s.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGINT: fast shutdown (rolls back sessions, no waiting).
		s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			s.cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		db, err := s.open("postgres", "postgres", "")
		if err == nil {
			err = db.Ping()
			db.Close()
			if err == nil {
				break
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Fatalf("postgres exited:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres not ready after 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// DSN is the URL of database db as user with password ("" = none).
func (s *Server) DSN(user, password, db string) string {
	up := user
	if password != "" {
		up += ":" + password
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", up, s.Host, s.Port, db)
}

func (s *Server) open(user, password, db string) (*sql.DB, error) {
	if db == "" {
		db = "postgres"
	}
	return sql.Open("pgx", s.DSN(user, password, db))
}

var _ = stdlib.GetDefaultDriver // registers "pgx"

// NewDatabase creates a fresh database owned by a fresh login role and
// returns the [database] settings that reach it.
func (s *Server) NewDatabase(t testing.TB) conf.Database {
	t.Helper()
	n := s.n.Add(1)
	name := fmt.Sprintf("test%d", n)
	db, err := s.open("postgres", "", "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, q := range []string{
		"CREATE ROLE " + name + " LOGIN PASSWORD 'secret-" + name + "'",
		"CREATE DATABASE " + name + " OWNER " + name,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return conf.Database{DSN: s.DSN(name, "secret-"+name, name), MaxConns: 10}
}

// Exec runs statements as the superuser in database db.
func (s *Server) Exec(t testing.TB, db string, stmts ...string) {
	t.Helper()
	h, err := s.open("postgres", "", db)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, q := range stmts {
		if _, err := h.Exec(q); err != nil {
			t.Fatalf("%s: %v", strings.SplitN(q, "\n", 2)[0], err)
		}
	}
}

// Stop shuts the server down now and waits for it (an outage, for tests
// of what happens then).
func (s *Server) Stop() {
	s.cmd.Process.Signal(syscall.SIGINT)
	<-s.exited
}

// NewShared creates a fresh database like NewDatabase and returns it as a
// host hands it to plugins (sdk.Config.Database).
func (s *Server) NewShared(t testing.TB) sdk.Database {
	c := s.NewDatabase(t)
	return sdk.Database{DSN: c.DSN, MaxConns: c.MaxConns}
}
