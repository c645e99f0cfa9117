package sdk

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pb "github.com/posthorn/posthorn/sdk/proto/posthorn/plugin/v1"
	"google.golang.org/protobuf/proto"
)

func TestVerdictValidate(t *testing.T) {
	for _, tc := range []struct {
		v   Verdict
		err string // substring; "" = valid
	}{
		{Accept(), ""},
		{Reject(0, "", "no"), ""},
		{Reject(554, "5.6.0", "bad"), ""},
		{Reject(451, "4.3.0", "x"), "not 5xx"},
		{Reject(550, "4.7.1", "x"), "not 5.x.y"},
		{Reject(550, "5.7", "x"), "not 5.x.y"},
		{Reject(550, "5.7.1", "two\r\nlines"), "CR, LF"},
		{Tempfail("later"), ""},
		{Verdict{Action: ActionTempfail, Code: 550}, "not 4xx"},
		{AddHeaders(Header{"X-Tag", "v"}), ""},
		{AddHeaders(), "without headers"},
		{AddHeaders(Header{"X Tag", "v"}), "invalid character"},
		{AddHeaders(Header{"X-Tag:", "v"}), "invalid character"},
		{AddHeaders(Header{"X-Tag", "v\r\nBcc: evil"}), "CR, LF"},
		{AddHeaders(Header{"", "v"}), "empty"},
		{Replace(strings.NewReader("x")), ""},
		{Verdict{}, "no valid action"},
	} {
		err := tc.v.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%+v: %v", tc.v, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%+v: %v, want %q", tc.v, err, tc.err)
		}
	}
}

func TestOutboundResultValidate(t *testing.T) {
	group := []Recipient{{"a@x"}, {"b@x"}}
	body := strings.NewReader("")
	for _, tc := range []struct {
		r   OutboundResult
		err string
	}{
		{Transformed(Output{[]string{"a@x", "b@x"}, body}), ""},
		{Transformed(Output{[]string{"a@x"}, body}, Output{[]string{"b@x"}, body}), ""},
		{Transformed(Output{[]string{"a@x"}, body}), `"b@x" is in no output`},
		{Transformed(Output{[]string{"a@x", "b@x"}, body}, Output{[]string{"b@x"}, body}), "more than one"},
		{Transformed(Output{[]string{"a@x", "b@x", "c@x"}, body}), "not in the group"},
		{Transformed(Output{[]string{"a@x", "b@x"}, nil}), "no body"},
		{Transformed(Output{nil, body}), "no recipients"},
		{Transformed(), "without outputs"},
		{Diverted(true, "kept"), ""},
		{Declined("no key"), ""},
		{OutboundResult{}, "no valid action"},
	} {
		err := tc.r.Validate(group)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%+v: %v", tc.r, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%+v: %v, want %q", tc.r, err, tc.err)
		}
	}
}

func TestDescriptionValidate(t *testing.T) {
	for _, tc := range []struct {
		d  Description
		ok bool
	}{
		{Description{Name: "smime", Version: "1.2.3"}, true},
		{Description{Name: "web-mailbox_2", Version: "v0.3.0-rc.1+build.5"}, true},
		{Description{Name: "", Version: "1.0.0"}, false},
		{Description{Name: "has space", Version: "1.0.0"}, false},
		{Description{Name: "x", Version: "1.0"}, false},
		{Description{Name: "x", Version: "01.0.0"}, false},
		{Description{Name: "x", Version: "1.0.0", EventTypes: []string{"*", "smime.*", "delivered"}}, true},
		{Description{Name: "x", Version: "1.0.0", EventTypes: []string{"Bad Type"}}, false},
		{Description{Name: "x", Version: "1.0.0", MaxMessageSize: -1}, false},
	} {
		if err := tc.d.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.d, err)
		}
	}
}

func TestMatchEventType(t *testing.T) {
	pats := []string{"delivered", "smime.*"}
	for typ, want := range map[string]bool{
		"delivered": true, "bounced": false, "smime.cert_expiring": true,
		"smime.": false, "smime": false, "smimex.y": false,
	} {
		if got := MatchEventType(pats, typ); got != want {
			t.Errorf("MatchEventType(%v, %q) = %v", pats, typ, got)
		}
	}
	if !MatchEventType([]string{"*"}, "anything.at_all") {
		t.Error("* does not match")
	}
}

func TestEventValidateEmitted(t *testing.T) {
	for typ, ok := range map[string]bool{
		"webmailbox.activation": true, "smime.cert_expiring": true,
		"delivered": false, ".x": false, "x.": false, "": false, "A.b": false,
	} {
		if err := (Event{Type: typ}).ValidateEmitted(); (err == nil) != ok {
			t.Errorf("%q: %v", typ, err)
		}
	}
}

func TestConfigDecode(t *testing.T) {
	type cfg struct {
		Tag  string `json:"tag"`
		Keys struct {
			Dir string `json:"dir"`
		} `json:"keys"`
		N int `json:"n"`
	}
	for _, tc := range []struct {
		in       string
		key, msg string
	}{
		{`{"tag": "x", "keys": {"dir": "/k"}, "n": 3}`, "", ""},
		{``, "", ""},
		{`{"tga": "x"}`, "tga", "unknown key"},
		{`{"n": "three"}`, "n", "wrong type"},
		{`{"keys": {"dir": 5}}`, "keys.dir", "wrong type"},
		{`[1]`, "", "must be a table"},
	} {
		var c cfg
		err := Config{JSON: []byte(tc.in)}.Decode(&c)
		if tc.msg == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.in, err)
			}
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(ce.Message, tc.msg) {
			t.Errorf("%s: %#v, want key %q message ~%q", tc.in, err, tc.key, tc.msg)
		}
	}
}

func TestConfirmationValidate(t *testing.T) {
	good := Confirmation{QueueID: "Q", Recipient: "a@x", Outcome: ConfirmFailed, Reason: "expired"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Confirmation{{Recipient: "a", Outcome: ConfirmDelivered}, {QueueID: "Q", Outcome: ConfirmDelivered}, {QueueID: "Q", Recipient: "a"}} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestConvertRoundTrip: plain → protobuf → wire → protobuf → plain keeps
// every field.
func TestConvertRoundTrip(t *testing.T) {
	env := &Envelope{
		ID: "Q1", MailFrom: "a@x", Recipients: []Recipient{{"b@x"}, {"c@x"}},
		ClientAddr: "192.0.2.1:25", Helo: "h", AuthUser: "u", Size: 99, SMTPUTF8: true,
		TLS: &TLSInfo{Version: "TLS1.3", CipherSuite: "C", ServerName: "s", ClientSubject: "CN=c"},
	}
	var back pb.Envelope
	wire, err := proto.Marshal(envelopeToPB(env))
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(wire, &back); err != nil {
		t.Fatal(err)
	}
	got := envelopeFromPB(&back)
	if got.ID != env.ID || got.MailFrom != env.MailFrom || len(got.Recipients) != 2 || got.Recipients[1] != env.Recipients[1] ||
		got.ClientAddr != env.ClientAddr || got.Helo != env.Helo || got.AuthUser != env.AuthUser || got.Size != env.Size ||
		!got.SMTPUTF8 || *got.TLS != *env.TLS {
		t.Fatalf("envelope round trip: %+v", got)
	}

	ev := Event{ID: "e", Type: "smime.cert_expiring", QueueID: "Q", Sender: "s", Recipient: "r",
		Time: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), Attributes: map[string]string{"k": "v"}, SourcePlugin: "p", Language: "de"}
	gotEv := eventFromPB(eventToPB(ev))
	if gotEv.ID != ev.ID || gotEv.Type != ev.Type || !gotEv.Time.Equal(ev.Time) || gotEv.Attributes["k"] != "v" ||
		gotEv.SourcePlugin != "p" || gotEv.Language != "de" || gotEv.Sender != "s" || gotEv.Recipient != "r" || gotEv.QueueID != "Q" {
		t.Fatalf("event round trip: %+v", gotEv)
	}
	if !eventFromPB(eventToPB(Event{Type: "x.y"})).Time.IsZero() {
		t.Fatal("zero time not kept")
	}

	v := Reject(554, "5.7.1", "t")
	pv := verdictToPB(v)
	if pv.Action != pb.Verdict_ACTION_REJECT || pv.SmtpCode != 554 || pv.EnhancedCode != "5.7.1" || pv.Text != "t" {
		t.Fatalf("verdict: %v", pv)
	}
	v.Headers = []Header{{Name: "X-A", Value: "1"}, {Name: "X-B", Value: "2"}}
	if back := verdictFromPB(verdictToPB(v)); back.Action != v.Action || back.Code != v.Code || back.EnhancedCode != v.EnhancedCode ||
		back.Text != v.Text || len(back.Headers) != 2 || back.Headers[1] != v.Headers[1] {
		t.Fatalf("verdict round trip: %+v", back)
	}
	if back := verdictFromPB(&pb.Verdict{Action: pb.Verdict_ACTION_UNSPECIFIED}); back.Action != 0 || back.Validate() == nil {
		t.Fatalf("unspecified action: %+v", back)
	}
	if len(verdictActionToPB) != 5 || len(outboundActionToPB) != 3 || len(confirmOutcomeToPB) != 2 || len(hookToPB) != 3 {
		t.Fatal("an action is missing from the conversion tables")
	}
	if len(verdictActionFromPB) != 5 || len(outboundActionFromPB) != 3 || len(confirmOutcomeFromPB) != 2 || len(hookFromPB) != 3 {
		t.Fatal("an inverted table lost an entry")
	}
	hooks := []Hook{HookEvents, "bogus", HookInbound, HookOutbound}
	if back := hooksFromPB(append(hooksToPB(hooks), pb.Hook(99))); len(back) != 3 || back[0] != HookEvents || back[1] != HookInbound || back[2] != HookOutbound {
		t.Fatalf("hooks round trip: %v", back)
	}
}

func TestHooksOf(t *testing.T) {
	if h := hooksOf(onlyEvents{}); len(h) != 1 || h[0] != HookEvents {
		t.Fatalf("hooks %v", h)
	}
}

type onlyEvents struct{ Plugin }

func (onlyEvents) HandleEvent(_ context.Context, _ Event) error { return nil }
