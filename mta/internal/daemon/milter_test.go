package daemon_test

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
)

// scriptedMilter is a milter written for the tests: it speaks the milter
// protocol (version 6) on a loopback port and answers according to the
// local part of the envelope sender, so one daemon can be put through
// every action. It records what it was shown.
type scriptedMilter struct {
	t  *testing.T
	ln net.Listener

	mu       sync.Mutex
	macros   map[byte]map[string]string // by stage code, last seen
	headers  []string                   // "Name: value" of the last message
	body     []byte                     // body of the last message
	aborts   int
	messages int
}

func startScriptedMilter(t *testing.T) *scriptedMilter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &scriptedMilter{t: t, ln: ln, macros: map[byte]map[string]string{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go m.serve(c)
		}
	}()
	return m
}

func (m *scriptedMilter) addr() string { return "inet:" + m.ln.Addr().String() }

func readPkt(c net.Conn) (byte, []byte, error) {
	var n uint32
	if err := binary.Read(c, binary.BigEndian, &n); err != nil {
		return 0, nil, err
	}
	if n == 0 || n > 1<<20 {
		return 0, nil, fmt.Errorf("bad length %d", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}

func pkt(code byte, data ...string) []byte {
	body := []byte{code}
	for _, d := range data {
		body = append(body, d...)
	}
	out := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	return append(out, body...)
}

func cstrs(b []byte) []string {
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

func (m *scriptedMilter) serve(c net.Conn) {
	defer c.Close()
	mode := ""
	send := func(p ...[]byte) {
		for _, x := range p {
			c.Write(x)
		}
	}
	for {
		code, data, err := readPkt(c)
		if err != nil {
			return
		}
		switch code {
		case 'O':
			// version 6, all the actions we use, every step with a reply
			send(pkt('O', string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 6), 0x7f), 0))))
		case 'D':
			kv := cstrs(data[1:])
			mm := map[string]string{}
			for i := 0; i+1 < len(kv); i += 2 {
				mm[kv[i]] = kv[i+1]
			}
			m.mu.Lock()
			m.macros[data[0]] = mm
			m.mu.Unlock()
		case 'C', 'H':
			send(pkt('c'))
		case 'M':
			from := strings.Trim(cstrs(data)[0], "<>")
			mode, _, _ = strings.Cut(from, "@")
			m.mu.Lock()
			m.headers, m.body = nil, nil
			m.mu.Unlock()
			switch mode {
			case "mailreject":
				send(pkt('y', "553 5.7.1 Sender refused by the script\x00"))
			case "close":
				return
			default:
				send(pkt('c'))
			}
		case 'R':
			to := strings.Trim(cstrs(data)[0], "<>")
			if strings.HasPrefix(to, "postmaster@") && mode == "rcptreject" {
				send(pkt('y', "550 5.1.1 Not this one\x00"))
			} else {
				send(pkt('c'))
			}
		case 'T', 'N':
			send(pkt('c'))
		case 'L':
			kv := cstrs(data)
			m.mu.Lock()
			m.headers = append(m.headers, kv[0]+": "+kv[1])
			m.mu.Unlock()
			send(pkt('c'))
		case 'B':
			m.mu.Lock()
			m.body = append(m.body, data...)
			m.mu.Unlock()
			send(pkt('c'))
		case 'A':
			m.mu.Lock()
			m.aborts++
			m.mu.Unlock()
		case 'Q':
			return
		case 'E':
			m.mu.Lock()
			m.messages++
			body := string(m.body)
			m.mu.Unlock()
			switch {
			case mode == "reject" || strings.Contains(body, "SCRIPTED-MARKER"):
				send(pkt('y', "554 5.7.1 Rejected by the script: marker found\x00"))
			case mode == "plainreject":
				send(pkt('r'))
			case mode == "tempfail":
				send(pkt('t'))
			case mode == "discard":
				send(pkt('d'))
			case mode == "quarantine":
				send(pkt('h', "X-Scripted\x00quarantined\x00"), pkt('q', "held for review\x00"), pkt('a'))
			case mode == "modify":
				idx := func(i uint32) string { return string(binary.BigEndian.AppendUint32(nil, i)) }
				send(pkt('p'),
					pkt('h', "X-Added\x00yes\nand folded\x00"),
					pkt('i', idx(0), "X-Top\x00first\x00"),
					pkt('m', idx(1), "Subject\x00changed by the milter\x00"),
					pkt('m', idx(1), "X-Remove-Me\x00\x00"),
					pkt('e', "<changed@example.com>\x00"),
					pkt('+', "<bob@example.test>\x00"),
					pkt('-', "<postmaster@example.test>\x00"),
					pkt('p'),
					pkt('b', "A new body\nfrom the milter.\n"),
					pkt('a'))
			case mode == "slow":
				// progress packets keep the content timeout from firing
				for i := 0; i < 6; i++ {
					time.Sleep(250 * time.Millisecond) // a slow milter is what is tested
					send(pkt('p'))
				}
				send(pkt('h', "X-Slow\x00done\x00"), pkt('a'))
			case mode == "hang":
				time.Sleep(4 * time.Second) // a milter that does not answer is what is tested
				return
			case mode == "garbage":
				c.Write([]byte("\x00\x00\x00\x05Zjunk this is not milter"))
				return
			default:
				send(pkt('h', "X-Scripted\x00clean\x00"), pkt('a'))
			}
		default:
			return
		}
	}
}

func (m *scriptedMilter) macro(stage byte, name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.macros[stage][name]
}

func (m *scriptedMilter) seen() ([]string, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.headers...), string(m.body)
}

func milterConf(name, addr, extra string) string {
	return fmt.Sprintf(`
[[milter]]
name = %q
address = %q
connect_timeout = "2s"
command_timeout = "2s"
content_timeout = "1s"
%s
`, name, addr, extra)
}

func milterLists(mx, sub, local string) string {
	return fmt.Sprintf("\n[milters]\nmx = [%s]\nsubmission = [%s]\nlocal = [%s]\n", mx, sub, local)
}

// TestMilterActions puts the daemon through every milter action with the
// scripted milter on the MX listener.
func TestMilterActions(t *testing.T) {
	sm := startScriptedMilter(t)
	e := startEnv(t, milterConf("script-actions", sm.addr(), "")+milterLists(`"script-actions"`, `"script-actions"`, ""))
	actions0 := map[string]float64{}
	for _, a := range []string{"quarantine", "discard", "replace_body"} {
		actions0[a] = metric(t, e, `posthorn_milter_actions_total{action="`+a+`",milter="script-actions"}`)
	}
	c := e.dial(smtpd.MX)

	// Clean mail: the milter saw the message as the client sent it, with
	// Postfix's macros, and its header is added.
	if err := send(c, "clean@example.com", []string{"bob@example.test"}, testMessage("m1")); err != nil {
		t.Fatal(err)
	}
	m := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]
	if !strings.Contains(m, "X-Scripted: clean\n") {
		t.Fatalf("milter header missing:\n%s", m)
	}
	hdrs, body := sm.seen()
	if !strings.Contains(strings.Join(hdrs, "\n"), "Subject: test m1") || body != "Hello.\r\n" {
		t.Fatalf("milter saw headers %q body %q", hdrs, body)
	}
	for _, want := range []struct {
		stage      byte
		name, want string
	}{
		{'C', "j", "mx.example.test"}, {'C', "{daemon_name}", "mx"}, {'C', "{client_addr}", "127.0.0.1"},
		{'C', "_", "unknown [127.0.0.1]"}, {'C', "v", "Posthorn"},
		{'M', "{mail_addr}", "clean@example.com"}, {'R', "{rcpt_addr}", "bob@example.test"},
	} {
		if got := sm.macro(want.stage, want.name); got != want.want {
			t.Errorf("macro %s at %c: got %q, want %q", want.name, want.stage, got, want.want)
		}
	}
	qid := sm.macro('M', "i")
	if qid == "" || sm.macro('T', "i") != qid || sm.macro('E', "i") != qid || !strings.Contains(m, "id "+qid) {
		t.Errorf("macro i: MAIL %q DATA %q EOM %q; message:\n%s", qid, sm.macro('T', "i"), sm.macro('E', "i"), m)
	}

	// Refusals with the milter's own reply, at MAIL, RCPT and the end.
	err := send(c, "mailreject@example.com", []string{"bob@example.test"}, testMessage("m2"))
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 553 || se.Message != "Sender refused by the script" {
		t.Fatalf("MAIL: want the milter's 553, got %v", err)
	}
	c.Reset()
	if err := c.Mail("rcptreject@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("postmaster@example.test", nil); codeOf(err) != 550 || !strings.Contains(err.Error(), "Not this one") {
		t.Fatalf("RCPT: want the milter's 550, got %v", err)
	}
	if err := c.Rcpt("bob@example.test", nil); err != nil {
		t.Fatalf("the other RCPT: %v", err)
	}
	c.Reset()
	err = send(c, "reject@example.com", []string{"bob@example.test"}, testMessage("m3"))
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 554 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) ||
		se.Message != "Rejected by the script: marker found" {
		t.Fatalf("end of message: want the milter's 554 5.7.1, got %v", err)
	}
	if err := send(c, "plainreject@example.com", []string{"bob@example.test"}, testMessage("m4")); codeOf(err) != 550 {
		t.Fatalf("SMFIR_REJECT: want 550, got %v", err)
	}
	if err := send(c, "tempfail@example.com", []string{"bob@example.test"}, testMessage("m5")); codeOf(err) != 451 {
		t.Fatalf("SMFIR_TEMPFAIL: want 451, got %v", err)
	}

	// Discard: 250 for the client, nothing queued or delivered.
	before := len(e.d.Queue.List())
	if err := send(c, "discard@example.com", []string{"bob@example.test"}, testMessage("m6")); err != nil {
		t.Fatalf("discard: want 250, got %v", err)
	}
	if n := len(e.d.Queue.List()); n != before {
		t.Fatalf("discarded message was queued (%d → %d)", before, n)
	}

	// Quarantine: queued on hold, with the reason.
	if err := send(c, "quarantine@example.com", []string{"bob@example.test"}, testMessage("m7")); err != nil {
		t.Fatal(err)
	}
	held := false
	for _, env := range e.d.Queue.List() {
		if env.From == "quarantine@example.com" {
			held = env.Held && env.Attrs["milter.quarantine"] == "script-actions: held for review"
			if !held {
				t.Fatalf("quarantined message: held=%v attrs=%v", env.Held, env.Attrs)
			}
		}
	}
	if !held {
		t.Fatal("quarantined message not in the queue")
	}
	// ... as `posthorn queue list` shows it (the control socket's list).
	resp, err := control.Call(e.cfg.Control.Socket, control.Request{Cmd: "list"})
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, env := range resp.Messages {
		listed = listed || env.From == "quarantine@example.com" && env.Held
	}
	if !listed {
		t.Error("posthorn queue list does not show the quarantined message on hold")
	}

	// Header and body changes, sender change, recipients added and
	// removed, progress.
	if err := send(c, "modify@example.com", []string{"postmaster@example.test"}, "From: <modify@example.com>\r\n"+
		"Subject: original\r\nX-Remove-Me: bye\r\n\r\nOriginal body.\r\n"); err != nil {
		t.Fatal(err)
	}
	m = e.waitMail("example.test", "bob", 2, 10*time.Second)[1]
	hdr, mbody, _ := strings.Cut(m, "\n\n") // Maildir stores LF line ends
	if !strings.HasPrefix(hdr, "Return-Path: <changed@example.com>") && !strings.Contains(hdr, "changed@example.com") {
		t.Errorf("sender not changed:\n%s", m)
	}
	for _, want := range []string{"X-Top: first\n", "Subject: changed by the milter\n", "X-Added: yes\n\tand folded"} {
		if !strings.Contains(hdr, want) {
			t.Errorf("header %q missing:\n%s", want, m)
		}
	}
	if strings.Contains(hdr, "X-Remove-Me") || strings.Contains(hdr, "original") {
		t.Errorf("header not deleted/changed:\n%s", m)
	}
	if strings.Index(hdr, "X-Top:") > strings.Index(hdr, "Received:") {
		t.Errorf("X-Top not inserted at the top:\n%s", m)
	}
	if mbody != "A new body\nfrom the milter.\n" {
		t.Errorf("body not replaced: %q", mbody)
	}
	if n := e.mailCount("example.test", "postmaster"); n != 0 {
		t.Errorf("removed recipient postmaster got %d messages", n)
	}

	// Slow but alive: progress packets restart the content timeout.
	if err := send(c, "slow@example.com", []string{"bob@example.test"}, testMessage("m9")); err != nil {
		t.Fatalf("slow milter with progress: %v", err)
	}
	if !strings.Contains(e.waitMail("example.test", "bob", 3, 10*time.Second)[2], "X-Slow: done") {
		t.Error("slow milter's header missing")
	}

	// Submission: TLS and AUTH macros.
	sc := e.login()
	if err := send(sc, testUser, []string{"bob@example.test"}, testMessage("m10")); err != nil {
		t.Fatal(err)
	}
	if got := sm.macro('M', "{auth_authen}"); got != testUser {
		t.Errorf("{auth_authen} = %q", got)
	}
	if got := sm.macro('M', "{auth_type}"); got != "PLAIN" {
		t.Errorf("{auth_type} = %q", got)
	}
	if got := sm.macro('H', "{tls_version}"); !strings.HasPrefix(got, "TLSv1.") || sm.macro('H', "{cipher}") == "" {
		t.Errorf("{tls_version} = %q, {cipher} = %q", got, sm.macro('H', "{cipher}"))
	}
	if got := sm.macro('C', "{daemon_name}"); got != "submission" {
		t.Errorf("{daemon_name} = %q", got)
	}

	// Metrics per milter (counted since the test began).
	for _, a := range []string{"quarantine", "discard", "replace_body"} {
		series := `posthorn_milter_actions_total{action="` + a + `",milter="script-actions"}`
		if n := metric(t, e, series) - actions0[a]; n != 1 {
			t.Errorf("%s grew by %v, want 1", series, n)
		}
	}
	metrics := scrape(t, e)
	for _, want := range []string{
		`posthorn_milter_actions_total{action="progress",milter="script-actions"}`,
		`posthorn_milter_calls_total{milter="script-actions",stage="content"}`,
		`posthorn_milter_latency_seconds_count{milter="script-actions",stage="mail"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func scrape(t *testing.T, e *testEnv) string {
	t.Helper()
	resp, err := http.Get("http://" + e.d.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestMilterFailures: a milter that is down, too slow or speaks garbage
// gets its default action: tempfail (451 4.7.1) or accept (the mail goes
// through without it).
func TestMilterFailures(t *testing.T) {
	sm := startScriptedMilter(t)
	down := "inet:" + freeLocalAddr(t) // nothing listens there
	for _, tc := range []struct {
		name, addr, sender string
	}{
		{"down", down, "clean@example.com"},
		{"timeout", sm.addr(), "hang@example.com"},
		{"garbage", sm.addr(), "garbage@example.com"},
		{"closed", sm.addr(), "close@example.com"},
	} {
		for _, action := range []string{"tempfail", "accept"} {
			t.Run(tc.name+"/"+action, func(t *testing.T) {
				e := startEnv(t, milterConf("m", tc.addr, fmt.Sprintf("default_action = %q", action))+milterLists(`"m"`, "", ""))
				c := e.dial(smtpd.MX)
				start := time.Now()
				err := send(c, tc.sender, []string{"bob@example.test"}, testMessage(tc.name))
				if action == "tempfail" {
					if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 1}) {
						t.Fatalf("want 451 4.7.1, got %v", err)
					}
					// ... and so is every later transaction of the session.
					if err := send(c, "clean@example.com", []string{"bob@example.test"}, testMessage("again")); codeOf(err) != 451 {
						t.Fatalf("next transaction: want 451, got %v", err)
					}
					if n := len(e.d.Queue.List()); n != 0 {
						t.Fatalf("%d messages queued", n)
					}
				} else {
					if err != nil {
						t.Fatalf("want 250, got %v", err)
					}
					e.waitMail("example.test", "bob", 1, 10*time.Second)
				}
				// At most one command_timeout (2 s) is spent on the failed
				// milter; a session that waited at each later stage would
				// take 2 s for each of five or more. The rest of the bound
				// is for a loaded machine running -race (the accept case
				// includes the local delivery): 4 s was too tight there.
				if d := time.Since(start); d > 8*time.Second {
					t.Errorf("took %s", d)
				}
				want := fmt.Sprintf(`default_action=%q,milter="m"`, action)
				if !strings.Contains(scrape(t, e), want) {
					t.Errorf("no failure metric with %s", want)
				}
			})
		}
	}
}

// TestMilterLocalSubmission: the local list sees mail handed in by
// posthorn sendmail.
func TestMilterLocalSubmission(t *testing.T) {
	sm := startScriptedMilter(t)
	e := startEnv(t, realMilterConf("script", sm.addr(), "")+milterLists("", "", `"script"`))
	if _, err := e.sendmail("reject@example.com", []string{"bob@example.test"}, testMessage("l1")); err == nil ||
		!strings.Contains(err.Error(), "Rejected by the script") {
		t.Fatalf("want the milter's rejection, got %v", err)
	}
	if _, err := e.sendmail("clean@example.com", []string{"bob@example.test"}, testMessage("l2")); err != nil {
		t.Fatal(err)
	}
	if m := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]; !strings.Contains(m, "X-Scripted: clean") {
		t.Fatalf("milter header missing:\n%s", m)
	}
	if got := sm.macro('C', "{daemon_name}"); got != "local" {
		t.Errorf("{daemon_name} = %q", got)
	}
	// MX mail does not go to the local list.
	if err := send(e.dial(smtpd.MX), "reject@example.com", []string{"bob@example.test"}, testMessage("l3")); err != nil {
		t.Fatalf("MX mail went through the local milters: %v", err)
	}
}

// TestMilterRescanAfterPlugins: milters see what the client sent, before
// the inbound plugins change it; with rescan_after_plugins they also see
// what the plugins made of it (here the test plugin's "unwrap", a stand-in
// for decryption).
func TestMilterRescanAfterPlugins(t *testing.T) {
	sm := startScriptedMilter(t)
	inner := "SCRIPTED-MARKER inside the wrapped message\r\n"
	wrapped := "From: <unwrap@example.com>\r\nSubject: wrapped\r\n\r\n" + base64.StdEncoding.EncodeToString([]byte(inner)) + "\r\n"
	for _, rescan := range []bool{false, true} {
		t.Run(fmt.Sprint("rescan=", rescan), func(t *testing.T) {
			e := startEnv(t, pluginConf(t, "")+realMilterConf("script", sm.addr(), fmt.Sprintf("rescan_after_plugins = %v", rescan))+
				milterLists(`"script"`, "", `"script"`))
			waitPlugin(t, e, "running")
			err := send(e.dial(smtpd.MX), "unwrap@example.com", []string{"bob@example.test"}, wrapped)
			if rescan {
				if codeOf(err) != 554 || !strings.Contains(err.Error(), "marker found") {
					t.Fatalf("rescan of the unwrapped message: want the milter's 554, got %v", err)
				}
				// The same for a local submission.
				if _, err := e.sendmail("unwrap@example.com", []string{"bob@example.test"}, wrapped); err == nil ||
					!strings.Contains(err.Error(), "marker found") {
					t.Fatalf("rescan of a local submission: want the milter's 554, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]
			if !strings.Contains(m, "SCRIPTED-MARKER") || !strings.Contains(m, "X-Scripted: clean") {
				t.Fatalf("want the unwrapped message with the milter's header:\n%s", m)
			}
			if _, body := sm.seen(); strings.Contains(body, "SCRIPTED-MARKER") {
				t.Fatalf("the milter saw the plugin's result, not what the client sent: %q", body)
			}
		})
	}
}
