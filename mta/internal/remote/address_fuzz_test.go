package remote

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/envaddr"
)

// recorder is a go-smtp backend that keeps the last MAIL and RCPT it was
// given, refusing (as smtpd does) addresses envaddr refuses.
type recorder struct {
	mu    sync.Mutex
	from  string
	mopts smtp.MailOptions
	to    string
	ropts smtp.RcptOptions
}

func (b *recorder) NewSession(*smtp.Conn) (smtp.Session, error) { return recSession{b}, nil }

type recSession struct{ b *recorder }

var errRefused = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "refused"}

func (s recSession) Mail(from string, o *smtp.MailOptions) error {
	if envaddr.Check(from, o.UTF8) != nil {
		return errRefused
	}
	s.b.mu.Lock()
	s.b.from, s.b.mopts = from, *o
	s.b.mu.Unlock()
	return nil
}

func (s recSession) Rcpt(to string, o *smtp.RcptOptions) error {
	if to == "" || envaddr.Check(to, true) != nil {
		return errRefused
	}
	s.b.mu.Lock()
	s.b.to, s.b.ropts = to, *o
	s.b.mu.Unlock()
	return nil
}

func (recSession) Data(io.Reader) error { return errors.New("no data here") }
func (recSession) Reset()               {}
func (recSession) Logout() error        { return nil }

// wireRig is one go-smtp server on loopback with a raw connection (what
// our pipelining code writes) and a go-smtp client (what the
// non-pipelined path writes), shared by the fuzz iterations.
type wireRig struct {
	rec *recorder
	raw net.Conn
	tp  *textproto.Reader
	cl  *smtp.Client
}

var (
	rigOnce sync.Once
	rig     *wireRig
	rigErr  error
)

func startRig() (*wireRig, error) {
	rigOnce.Do(func() {
		r := &wireRig{rec: &recorder{}}
		srv := smtp.NewServer(r.rec)
		srv.Domain = "fuzz.test"
		srv.EnableSMTPUTF8 = true
		srv.EnableDSN = true
		srv.AllowInsecureAuth = true
		srv.ErrorLog = nopLogger{}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			rigErr = err
			return
		}
		go srv.Serve(ln)
		if r.raw, err = net.Dial("tcp", ln.Addr().String()); err != nil {
			rigErr = err
			return
		}
		r.tp = textproto.NewReader(bufio.NewReader(r.raw))
		if _, _, err := r.tp.ReadResponse(220); err != nil {
			rigErr = err
			return
		}
		if _, err := io.WriteString(r.raw, "EHLO fuzz\r\n"); err != nil {
			rigErr = err
			return
		}
		if _, _, err := r.tp.ReadResponse(250); err != nil {
			rigErr = err
			return
		}
		if r.cl, err = smtp.Dial(ln.Addr().String()); err != nil {
			rigErr = err
			return
		}
		if err := r.cl.Hello("fuzz"); err != nil {
			rigErr = err
			return
		}
		rig = r
	})
	return rig, rigErr
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

// cmd sends one command line on the raw connection and returns the code.
func (r *wireRig) cmd(t *testing.T, line string) int {
	t.Helper()
	if _, err := io.WriteString(r.raw, line+"\r\n"); err != nil {
		t.Fatal(err)
	}
	code, _, err := r.tp.ReadResponse(0)
	if err != nil && code == 0 {
		t.Fatalf("%q: %v", line, err)
	}
	return code
}

func nonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}

// FuzzWireAddress (issue 20.4): for any MAIL FROM argument the server
// accepts, the address our client writes back — by the pipelining code
// and by go-smtp's client — parses at a go-smtp server to the same
// address with exactly the parameters we sent: nothing in an address can
// become an ESMTP parameter at the next hop. The same for RCPT TO.
func FuzzWireAddress(f *testing.F) {
	for _, s := range []string{
		`<a@example.org>`,
		`<"a> AUTH=<postmaster@example.org> ENVID=x"@attacker.example>`,
		`<"x y"@example.org> SIZE=10`,
		`<"a\"b"@example.org>`,
		`<"a\\b"@example.org>`,
		`<pöst@exämple.org> SMTPUTF8`,
		`<@relay.example:a@example.org>`,
		`<".a"@example.org>`,
		`<a..b@example.org>`,
		`<"a>"@[127.0.0.1]>`,
		`<"=?x?="@example.org> BODY=8BITMIME`,
		`<"ORCPT=rfc822;x"@example.org>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		if strings.ContainsAny(arg, "\r\n") || len(arg) > 900 {
			return
		}
		r, err := startRig()
		if err != nil {
			t.Fatal(err)
		}
		r.rec.mu.Lock()
		r.rec.from = "\x00unset"
		r.rec.mu.Unlock()
		code := r.cmd(t, "MAIL FROM:"+arg)
		r.cmd(t, "RSET")
		r.rec.mu.Lock()
		addr := r.rec.from
		r.rec.mu.Unlock()
		if code != 250 || addr == "" {
			return // refused (or the null path, which has nothing to quote)
		}
		utf8 := nonASCII(addr)
		want := smtp.MailOptions{Size: 100, UTF8: utf8}
		params := " SIZE=100"
		if utf8 {
			params += " SMTPUTF8"
		}

		// What pipeline.go writes.
		if code := r.cmd(t, "MAIL FROM:<"+wireAddr(addr)+">"+params); code != 250 {
			t.Fatalf("%q (from %q) written as %q: refused with %d", addr, arg, wireAddr(addr), code)
		}
		r.rec.mu.Lock()
		gotFrom, gotOpts := r.rec.from, r.rec.mopts
		r.rec.mu.Unlock()
		if gotFrom != addr {
			t.Fatalf("MAIL FROM: %q written as %q parses as %q", addr, wireAddr(addr), gotFrom)
		}
		if gotOpts != want {
			t.Fatalf("MAIL FROM: %q written as %q adds parameters: %+v", addr, wireAddr(addr), gotOpts)
		}
		if code := r.cmd(t, "RCPT TO:<"+wireAddr(addr)+">"); code != 250 {
			t.Fatalf("RCPT TO: %q written as %q: refused with %d", addr, wireAddr(addr), code)
		}
		r.rec.mu.Lock()
		gotTo, gotR := r.rec.to, r.rec.ropts
		r.rec.mu.Unlock()
		if gotTo != addr || gotR.Notify != nil || gotR.OriginalRecipient != "" || gotR.OriginalRecipientType != "" {
			t.Fatalf("RCPT TO: %q written as %q parses as %q %+v", addr, wireAddr(addr), gotTo, gotR)
		}
		r.cmd(t, "RSET")

		// What go-smtp's client writes (the non-pipelined path).
		if err := r.cl.Mail(wireAddr(addr), &smtp.MailOptions{Size: 100, UTF8: utf8}); err != nil {
			t.Fatalf("client MAIL FROM %q: %v", wireAddr(addr), err)
		}
		r.rec.mu.Lock()
		gotFrom, gotOpts = r.rec.from, r.rec.mopts
		r.rec.mu.Unlock()
		want.Body = smtp.Body8BitMIME // go-smtp's client always adds it when offered
		if gotFrom != addr || gotOpts != want {
			t.Fatalf("client MAIL FROM: %q parses as %q %+v", addr, gotFrom, gotOpts)
		}
		if err := r.cl.Reset(); err != nil {
			t.Fatal(err)
		}
	})
}
