package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/delivery"
	"github.com/posthorn/posthorn/queue"
	"github.com/posthorn/posthorn/testbed/remotemta"
)

// commands returns the verbs the client sent on one recorded connection.
func commands(c remotemta.Connection) []string {
	var out []string
	for _, l := range c.Log {
		if line, ok := strings.CutPrefix(l, "C: "); ok {
			verb, _, _ := strings.Cut(line, " ")
			out = append(out, strings.ToUpper(verb))
		}
	}
	return out
}

// TestReuseResetsOnlyUnfinished: on a cached pipelined connection a
// completed transaction (whatever its end-of-data reply) is followed by the
// next MAIL directly, with no RSET and no new EHLO; one left open (every
// RCPT refused, so the server refused DATA and still holds the MAIL) gets
// RSET in front of the next MAIL, or that MAIL would be refused as nested.
// (A new connection says EHLO twice: once in open, once by go-smtp's
// client.)
func TestReuseResetsOnlyUnfinished(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{})
	m.SetRcptReply("gone@dest.test", remotemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"})
	tr := n.transport("")
	want := func(step string, rcpt string, state queue.RcptState, status string) {
		t.Helper()
		out := deliver(t, tr, env1(rcpt), plainMsg)[0]
		if out.State != state || out.Status != status {
			t.Fatalf("%s: %+v, want %s %s", step, out, state, status)
		}
	}
	want("first", "a@dest.test", queue.Delivered, "2.0.0")
	if out := deliver(t, tr, env1("b@dest.test"), plainMsg)[0]; !strings.HasPrefix(out.Diagnostic, "smtp; 250 ") ||
		!strings.HasSuffix(out.Diagnostic, " (plaintext)") || strings.Contains(out.Diagnostic, "\n") || out.RemoteMTA != "mx.dest.test" {
		t.Fatalf("second: %+v", out)
	}
	want("all refused", "gone@dest.test", queue.Failed, "5.1.1")
	want("after the open transaction", "c@dest.test", queue.Delivered, "2.0.0")
	m.SetReply(remotemta.StageData, remotemta.Reply{Code: 554, Enhanced: "5.7.1", Text: "spam", Times: 1})
	want("refused after the data", "d@dest.test", queue.Failed, "5.7.1")
	want("after the refused data", "e@dest.test", queue.Delivered, "2.0.0")

	conns := m.Connections()
	if len(conns) != 1 {
		t.Fatalf("%d connections, want 1", len(conns))
	}
	got := strings.Join(commands(conns[0]), " ")
	wantCmds := "EHLO EHLO MAIL RCPT DATA MAIL RCPT DATA MAIL RCPT DATA RSET MAIL RCPT DATA MAIL RCPT DATA MAIL RCPT DATA"
	if got != wantCmds {
		t.Errorf("commands\n got %s\nwant %s", got, wantCmds)
	}
	var to []string
	for _, msg := range m.Messages() {
		to = append(to, msg.To()...)
	}
	if strings.Join(to, ",") != "a@dest.test,b@dest.test,c@dest.test,e@dest.test" {
		t.Errorf("arrived for %v", to)
	}
}

// TestReuseAfterDeadIdleConnection: a cached connection with a transaction
// left open that died while idle (the write of RSET and MAIL fails) is
// replaced by a fresh one, which needs no RSET, and the message is
// delivered.
func TestReuseAfterDeadIdleConnection(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{})
	m.SetRcptReply("gone@dest.test", remotemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"})
	tr := n.transport("")
	if out := deliver(t, tr, env1("gone@dest.test"), plainMsg)[0]; out.State != queue.Failed {
		t.Fatal(out)
	}
	tr.mu.Lock()
	cached := 0
	for _, cs := range tr.idle {
		for _, c := range cs {
			cached++
			if !c.txnOpen {
				t.Error("cached connection after a refused transaction is not marked open")
			}
			c.raw.Close()
		}
	}
	tr.mu.Unlock()
	if cached != 1 {
		t.Fatalf("%d cached connections, want 1", cached)
	}
	if out := deliver(t, tr, env1("c@dest.test"), plainMsg)[0]; out.State != queue.Delivered {
		t.Fatal(out)
	}
	conns := m.Connections()
	if len(conns) != 2 {
		t.Fatalf("%d connections, want 2", len(conns))
	}
	if got := strings.Join(commands(conns[1]), " "); got != "EHLO EHLO MAIL RCPT DATA" {
		t.Errorf("fresh connection: %s", got)
	}
}

// TestReuseAfter421AtMAIL: a server that closes a connection after a
// number of messages answers the next MAIL with 421; the message goes out
// on a fresh connection instead of being deferred.
func TestReuseAfter421AtMAIL(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{MaxMessagesPerConn: 1})
	tr := n.transport("")
	for _, rcpt := range []string{"a@dest.test", "b@dest.test", "c@dest.test"} {
		if out := deliver(t, tr, env1(rcpt), plainMsg)[0]; out.State != queue.Delivered {
			t.Fatalf("%s: %+v", rcpt, out)
		}
	}
	if n := len(m.Connections()); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
	if n := len(m.Messages()); n != 3 {
		t.Fatalf("%d messages arrived, want 3", n)
	}
	// On a fresh connection a 421 is that host's failure, deferred.
	m.SetReply(remotemta.StageMail, remotemta.Reply{Code: 421, Enhanced: "4.7.0", Text: "go away", Times: 1})
	tr2 := n.transport("")
	if out := deliver(t, tr2, env1("d@dest.test"), plainMsg)[0]; out.State != queue.Pending || out.Status != "4.7.0" {
		t.Fatalf("421 on a fresh connection: %+v", out)
	}
}

// TestUnreadableBodyClosesConnection: when the queued body cannot be
// opened after the server said 354, the connection is dropped rather
// than ended with "." (which would deliver an empty message), and the
// recipient is deferred.
func TestUnreadableBodyClosesConnection(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{})
	tr := n.transport("")
	e := env1("a@dest.test")
	e.ID, e.Size = "TESTID", int64(len(plainMsg))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := tr.Deliver(ctx, e, []int{0}, func() (io.ReadCloser, error) { return nil, errors.New("spool file gone") })
	if out[0].State != queue.Pending || out[0].Status != "4.3.0" {
		t.Fatalf("%+v", out[0])
	}
	if o := deliver(t, tr, env1("b@dest.test"), plainMsg)[0]; o.State != queue.Delivered {
		t.Fatal(o)
	}
	msgs := m.Messages()
	if len(msgs) != 1 || strings.Join(msgs[0].To(), ",") != "b@dest.test" {
		t.Fatalf("arrived: %+v", msgs)
	}
	if c := m.Connections(); len(c) != 2 {
		t.Fatalf("%d connections, want 2 (the first one dropped)", len(c))
	}
}

// TestReuseWithoutPipelining: go-smtp's client path still resets before
// a connection is cached; several messages go over one connection.
func TestReuseWithoutPipelining(t *testing.T) {
	n := newNet(t)
	m := n.mx("dest.test", "mx.dest.test", 10, remotemta.Config{NoPIPELINING: true})
	m.SetRcptReply("gone@dest.test", remotemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"})
	tr := n.transport("")
	for _, rcpt := range []string{"a@dest.test", "gone@dest.test", "b@dest.test"} {
		out := deliver(t, tr, env1(rcpt), plainMsg)[0]
		if (rcpt == "gone@dest.test") != (out.State == queue.Failed) || out.State == queue.Pending {
			t.Fatalf("%s: %+v", rcpt, out)
		}
	}
	if c := m.Connections(); len(c) != 1 {
		t.Fatalf("%d connections, want 1", len(c))
	}
	if len(m.Messages()) != 2 {
		t.Fatalf("%d messages arrived, want 2", len(m.Messages()))
	}
}

var _ delivery.Body = func() (io.ReadCloser, error) { return nil, nil }

// TestHeaderReadOnlyWhenAsked: the "TLS-Required: No" header only matters
// for an MX route with MTA-STS; a smarthost delivery opens the body once
// (to send it), an MX delivery with MTA-STS twice (header, then send),
// and the header still waives the policy there (TestRequireTLSOnward).
func TestHeaderReadOnlyWhenAsked(t *testing.T) {
	tr, m, _, n := stsNet(t, remotemta.Config{}, "enforce", "mx.dest.test")
	relay, err := remotemta.Start(remotemta.Config{Hostname: "relay.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	smart := n.transport(fmt.Sprintf("[[transport]]\ndomain = \"far.test\"\nkind = \"smarthost\"\nhost = \"127.0.0.1:%d\"\n", relay.Port()))
	smart.SetEnforcement(tr.sts, nil, nil)
	opens := 0
	body := func() (io.ReadCloser, error) {
		opens++
		return io.NopCloser(strings.NewReader("TLS-Required: No\r\n" + plainMsg)), nil
	}
	send := func(tr *Transport, rcpt string) delivery.Outcome {
		t.Helper()
		e := env1(rcpt)
		e.ID, e.Size = "TESTID", int64(len("TLS-Required: No\r\n"+plainMsg))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return tr.Deliver(ctx, e, []int{0}, body)[0]
	}
	if out := send(smart, "x@far.test"); out.State != queue.Delivered || len(relay.Messages()) != 1 {
		t.Fatalf("smarthost: %+v", out)
	}
	if opens != 1 {
		t.Errorf("smarthost delivery opened the body %d times, want 1", opens)
	}
	opens = 0
	// The MX offers no STARTTLS, which MTA-STS enforce refuses, unless
	// the header waives it.
	if out := send(tr, "x@dest.test"); out.State != queue.Delivered || len(m.Messages()) != 1 {
		t.Fatalf("MX with MTA-STS: %+v", out)
	}
	if opens != 2 {
		t.Errorf("MX delivery with MTA-STS opened the body %d times, want 2", opens)
	}
}
