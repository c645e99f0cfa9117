package daemon_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
	"github.com/posthorn/posthorn/testbed/dovecottest"
)

// TestDovecotAuthAndUserdb: SMTP AUTH is checked by a real Dovecot, and a
// recipient only Dovecot knows is accepted at RCPT; when Dovecot is gone,
// AUTH answers 454 and RCPT of an address not seen before 451 (never 5xx).
func TestDovecotAuthAndUserdb(t *testing.T) {
	dc := dovecottest.Start(t, []dovecottest.User{
		{Name: "carol@example.test", Password: "carol's password"},
		{Name: "dave@example.test", Password: "dave's password"},
	})
	e := startEnv(t, "\n[dovecot]\nauth_socket = \""+dc.AuthSocket+"\"\nuserdb_socket = \""+dc.UserdbSocket+"\"\n")

	c := e.dialTLS(smtpd.Submission)
	if err := c.Auth(sasl.NewPlainClient("", "carol@example.test", "wrong")); codeOf(err) != 535 {
		t.Fatalf("bad password: want 535, got %v", err)
	}
	c = e.dialTLS(smtpd.Submission)
	if err := c.Auth(sasl.NewPlainClient("", "carol@example.test", "carol's password")); err != nil {
		t.Fatalf("Dovecot user: %v", err)
	}
	if err := send(c, "carol@example.test", []string{"dave@example.test"}, testMessage("via dovecot")); err != nil {
		t.Fatal(err)
	}
	e.waitMail("example.test", "dave", 1, 10*time.Second)

	m := e.dial(smtpd.MX)
	if err := m.Mail("someone@remote.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Rcpt("carol@example.test", nil); err != nil {
		t.Errorf("RCPT of a Dovecot user: %v", err)
	}
	if err := m.Rcpt("nobody@example.test", nil); codeOf(err) != 550 {
		t.Errorf("RCPT of an unknown user: want 550, got %v", err)
	}
	m.Close()

	// Dovecot stops: AUTH 454, RCPT of an address not cached 451.
	dc.Stop()
	c = e.dialTLS(smtpd.Submission)
	if err := c.Auth(sasl.NewPlainClient("", "carol@example.test", "carol's password")); codeOf(err) != 454 {
		t.Errorf("AUTH with Dovecot down: want 454, got %v", err)
	}
	m = e.dial(smtpd.MX)
	if err := m.Mail("someone@remote.example", nil); err != nil {
		t.Fatal(err)
	}
	err := m.Rcpt("erin@example.test", nil)
	if code := codeOf(err); code < 400 || code > 499 {
		t.Errorf("RCPT with Dovecot down: want 4xx, got %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "dovecot") {
		t.Errorf("reply leaks internals: %v", err)
	}
}

// TestAdminAPISecureAliasOptIn: a user's secure-alias opt-in made through
// the admin API (over HTTPS, with a bearer token) takes effect on the
// next RCPT, without a restart; the same directory is managed over the
// control socket (posthorn directory).
func TestAdminAPISecureAliasOptIn(t *testing.T) {
	const token = "portal-secret-token"
	sum := sha256.Sum256([]byte(token))
	e := startEnvConfig(t, func(s string) string {
		return s + fmt.Sprintf(`
[directory]
kind = "sqlite"
path = "directory.db"
[admin]
address = "127.0.0.1:0"
[[admin.token]]
name = "portal"
sha256 = %q
scopes = ["directory:read", "directory:write", "preflight"]
`, hex.EncodeToString(sum[:]))
	})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: e.client}}
	api := func(method, path, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, "https://"+e.d.AdminAddr()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// The directory is managed over the control socket as well.
	op := func(args string) error {
		t.Helper()
		_, err := control.Call(e.cfg.Control.Socket, control.Request{Cmd: "directory", Args: json.RawMessage(args)})
		return err
	}
	if err := op(`{"op":"put-domain","domain":"example.org"}`); err != nil {
		t.Fatal(err)
	}
	if err := op(`{"op":"put-mailbox","address":"carol@example.org","password":"carol's password"}`); err != nil {
		t.Fatal(err)
	}
	if err := op(`{"op":"put-mailbox","address":"bad"}`); err == nil || !strings.Contains(err.Error(), "not an address") {
		t.Errorf("bad address over the control socket: %v", err)
	}

	rcpt := func(addr string) error {
		c := e.dialTLS(smtpd.MX)
		if err := c.Mail("someone@remote.example", nil); err != nil {
			t.Fatal(err)
		}
		return c.Rcpt(addr, nil)
	}
	if err := rcpt("carol@example.org"); err != nil {
		t.Fatalf("carol's own address: %v", err)
	}
	if err := rcpt("carol@secure.example.org"); codeOf(err) != 550 {
		t.Fatalf("secure alias before the opt-in: want 550, got %v", err)
	}
	if s := api("PUT", "/v1/addresses/carol@example.org/secure-alias", `{"enabled":true,"level":"dane-only"}`); s != 200 {
		t.Fatalf("opt-in: status %d", s)
	}
	if err := rcpt("carol@secure.example.org"); err != nil {
		t.Errorf("secure alias after the opt-in: %v", err)
	}
	if s := api("DELETE", "/v1/addresses/carol@example.org/secure-alias", ""); s != 200 {
		t.Fatalf("opt-out: status %d", s)
	}
	if err := rcpt("carol@secure.example.org"); codeOf(err) != 550 {
		t.Errorf("secure alias after the opt-out: want 550, got %v", err)
	}
	// Scopes hold in the daemon too.
	if s := api("GET", "/v1/queue", ""); s != 403 {
		t.Errorf("queue without queue:read: status %d", s)
	}
	// AUTH with the password set over the control socket.
	c := e.dialTLS(smtpd.Submission)
	if err := c.Auth(sasl.NewPlainClient("", "carol@example.org", "carol's password")); err != nil {
		t.Errorf("AUTH with the directory's password: %v", err)
	}
}
