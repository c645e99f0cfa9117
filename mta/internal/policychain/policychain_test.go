package policychain

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/conf"
)

func testChain(t *testing.T) *Chain {
	t.Helper()
	c, err := New(conf.Encryption{
		SubjectTag:    "[secure]",
		TriggerHeader: "X-Posthorn-Encrypt",
		Methods:       []string{"smime", "webmailbox"},
		Rules: []conf.EncryptionRule{
			// 0: the secure alias domain always encrypts.
			{Senders: []string{"*@secure.example.org"}, Recipients: []string{"*"}, Encrypt: Required, Methods: []string{"smime", "pgp", "webmailbox"}, Sign: true},
			// 1: one partner never (a specific rule before the general).
			{Senders: []string{"*"}, Recipients: []string{"nocrypt@partner.example"}, Encrypt: Never},
			// 2: partner domain and its subdomains opportunistically.
			{Senders: []string{"example.org"}, Recipients: []string{"partner.example", "*.partner.example"}, Encrypt: Opportunistic, Methods: []string{"smime", "pgp"}},
			// 3: the boss, to anyone, opportunistic with default methods.
			{Senders: []string{"Boss@Example.org"}, Encrypt: Opportunistic},
			// 4: subdomains only.
			{Recipients: []string{"*.sub.example"}, Encrypt: Required, Methods: []string{"pgp"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDecide(t *testing.T) {
	c := testChain(t)
	tests := []struct {
		name, sender, rcpt, subject string
		headers                     map[string][]string
		rule                        int
		encrypt                     string
		methods                     []string
		sign, triggered             bool
	}{
		{"secure alias", "alice@secure.example.org", "x@anywhere.test", "hi", nil, 0, Required, []string{"smime", "pgp", "webmailbox"}, true, false},
		{"secure alias case", "ALICE@Secure.Example.ORG", "x@anywhere.test", "hi", nil, 0, Required, []string{"smime", "pgp", "webmailbox"}, true, false},
		{"first match wins", "alice@secure.example.org", "nocrypt@partner.example", "", nil, 0, Required, []string{"smime", "pgp", "webmailbox"}, true, false},
		{"never rule", "bob@example.org", "NoCrypt@partner.example", "", nil, 1, Never, nil, false, false},
		{"domain pattern", "bob@example.org", "carol@partner.example", "", nil, 2, Opportunistic, []string{"smime", "pgp"}, false, false},
		{"subdomain pattern", "bob@example.org", "carol@mx.eu.partner.example", "", nil, 2, Opportunistic, []string{"smime", "pgp"}, false, false},
		{"lookalike domain", "bob@example.org", "carol@evilpartner.example", "", nil, -1, Never, nil, false, false},
		{"sender subdomain not domain", "bob@sub.example.org", "carol@partner.example", "", nil, -1, Never, nil, false, false},
		{"exact sender, default methods", "boss@example.org", "x@y.test", "", nil, 3, Opportunistic, []string{"smime", "webmailbox"}, false, false},
		{"*.domain excludes domain", "a@b.test", "x@sub.example", "", nil, -1, Never, nil, false, false},
		{"*.domain includes subdomain", "a@b.test", "x@a.sub.example", "", nil, 4, Required, []string{"pgp"}, false, false},
		{"null sender", "", "x@a.sub.example", "", nil, 4, Required, []string{"pgp"}, false, false},
		{"null sender vs domain rule", "", "carol@partner.example", "", nil, -1, Never, nil, false, false},
		{"angle brackets", "<bob@example.org>", "<carol@partner.example>", "", nil, 2, Opportunistic, []string{"smime", "pgp"}, false, false},
		{"no rule", "a@b.test", "c@d.test", "hello", nil, -1, Never, nil, false, false},
		{"tag, no rule", "a@b.test", "c@d.test", "[secure] hello", nil, -1, Required, []string{"smime", "webmailbox"}, false, true},
		{"tag any case", "a@b.test", "c@d.test", "Re: [SeCuRe] hello", nil, -1, Required, []string{"smime", "webmailbox"}, false, true},
		{"tag encoded word", "a@b.test", "c@d.test", "=?utf-8?q?=5Bsecure=5D_Gr=C3=BC=C3=9Fe?=", nil, -1, Required, []string{"smime", "webmailbox"}, false, true},
		{"tag upgrades never", "bob@example.org", "nocrypt@partner.example", "[secure]", nil, 1, Required, []string{"smime", "webmailbox"}, false, true},
		{"tag upgrades opportunistic", "bob@example.org", "carol@partner.example", "x [secure]", nil, 2, Required, []string{"smime", "pgp"}, false, true},
		{"header", "a@b.test", "c@d.test", "", map[string][]string{"X-Posthorn-Encrypt": {"required"}}, -1, Required, []string{"smime", "webmailbox"}, false, true},
		{"header any case", "a@b.test", "c@d.test", "", map[string][]string{"x-posthorn-encrypt": {" Required "}}, -1, Required, []string{"smime", "webmailbox"}, false, true},
		{"header other value", "a@b.test", "c@d.test", "", map[string][]string{"X-Posthorn-Encrypt": {"no"}}, -1, Never, nil, false, false},
		{"other header", "a@b.test", "c@d.test", "", map[string][]string{"X-Encrypt": {"required"}}, -1, Never, nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := c.Decide(tt.sender, tt.rcpt, tt.subject, tt.headers)
			if d.Rule != tt.rule || d.Encrypt != tt.encrypt || d.Sign != tt.sign || d.Triggered != tt.triggered || !reflect.DeepEqual(d.Methods, tt.methods) {
				t.Errorf("Decide = %+v\nwant rule %d encrypt %s methods %v sign %v triggered %v", d, tt.rule, tt.encrypt, tt.methods, tt.sign, tt.triggered)
			}
			if d.Recipient != tt.rcpt || d.Reason == "" {
				t.Errorf("recipient %q reason %q", d.Recipient, d.Reason)
			}
		})
	}
}

func TestDecideEmptyChain(t *testing.T) {
	c, err := New(conf.Encryption{})
	if err != nil {
		t.Fatal(err)
	}
	d := c.Decide("a@b", "c@d", "[secure] x", map[string][]string{"X-Posthorn-Encrypt": {"required"}})
	if d.Encrypt != Never || d.Triggered || d.Rule != -1 {
		t.Errorf("no tag, no header configured: %+v", d)
	}
	if got := c.StripTag("[secure] x"); got != "[secure] x" {
		t.Errorf("StripTag without tag = %q", got)
	}
	// Required by tag without any method: bounce, clearly.
	c, _ = New(conf.Encryption{SubjectTag: "[s]"})
	d = c.Decide("a@b", "c@d", "[s] x", nil)
	m, ok, why := Choose(d, nil)
	if m != "" || ok || !strings.Contains(why, "no encryption method is configured") {
		t.Errorf("Choose = %q %v %q", m, ok, why)
	}
}

func TestStripTag(t *testing.T) {
	c := testChain(t)
	for in, want := range map[string]string{
		"[secure] Offer":             "Offer",
		"[SECURE]   Offer":           "Offer",
		"Re: [secure] Offer":         "Re: Offer",
		"Offer [secure]":             "Offer",
		"Offer [Secure] for you":     "Offer for you",
		"[secure]":                   "",
		"a[secure]b":                 "ab",
		"[secure] [secure] twice":    "twice",
		"no tag here":                "no tag here",
		"  leading blanks stay":      "  leading blanks stay",
		"Grüße [secure] aus Köln":    "Grüße aus Köln",
		"[secure\u00a0] not the tag": "[secure\u00a0] not the tag",
	} {
		if got := c.StripTag(in); got != want {
			t.Errorf("StripTag(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestChoose(t *testing.T) {
	c := testChain(t)
	secure := c.Decide("alice@secure.example.org", "x@anywhere.test", "", nil) // rule 0, required
	opp := c.Decide("bob@example.org", "carol@partner.example", "", nil)       // rule 2
	never := c.Decide("bob@example.org", "nocrypt@partner.example", "", nil)   // rule 1
	none := c.Decide("a@b.test", "c@d.test", "", nil)                          // no rule
	tagged := c.Decide("a@b.test", "c@d.test", "[secure] x", nil)              // triggered

	tests := []struct {
		name    string
		d       Decision
		answers map[string]bool
		method  string
		ok      bool
		temp    bool
		why     string
	}{
		{"first that can", secure, map[string]bool{"smime": false, "pgp": true, "webmailbox": true}, "pgp", true, false, "pgp can handle x@anywhere.test (encryption required by rule 1)"},
		{"order wins", secure, map[string]bool{"smime": true, "pgp": true, "webmailbox": true}, "smime", true, false, "smime can"},
		{"fallback webmailbox", secure, map[string]bool{"smime": false, "pgp": false, "webmailbox": true}, "webmailbox", true, false, "webmailbox can"},
		{"required none can", secure, map[string]bool{"smime": false, "pgp": false, "webmailbox": false}, "", false, false,
			"no certificate, key or web mailbox available for recipient x@anywhere.test; encryption is required by rule 1"},
		{"required, one down", secure, map[string]bool{"smime": false, "webmailbox": false}, "", false, true, "pgp is unavailable, retrying later"},
		{"required, all down", secure, nil, "", false, true, "smime, pgp, webmailbox are unavailable"},
		{"down but later can", secure, map[string]bool{"webmailbox": true}, "webmailbox", true, false, "webmailbox can"},
		{"answer for unlisted method ignored", secure, map[string]bool{"other": true, "smime": false, "pgp": false, "webmailbox": false}, "", false, false, "no certificate"},
		{"opportunistic none", opp, map[string]bool{"smime": false, "pgp": false}, "", true, false, "no method (smime, pgp) can handle carol@partner.example; sent without encryption (opportunistic by rule 3)"},
		{"opportunistic down", opp, nil, "", true, false, "sent without encryption"},
		{"opportunistic can", opp, map[string]bool{"pgp": true}, "pgp", true, false, "pgp can"},
		{"never", never, map[string]bool{"smime": true}, "", true, false, "encryption is off by rule 2"},
		{"no rule", none, map[string]bool{"smime": true}, "", true, false, "no encryption rule matches"},
		{"triggered none can", tagged, map[string]bool{"smime": false, "webmailbox": false}, "", false, false,
			"no certificate or web mailbox available for recipient c@d.test; encryption is required by the sender's request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ChooseDetail(tt.d, tt.answers)
			if got.Method != tt.method || got.OK != tt.ok || got.Temporary != tt.temp || !strings.Contains(got.Why, tt.why) {
				t.Errorf("ChooseDetail = %+v\nwant method %q ok %v temporary %v why containing %q", got, tt.method, tt.ok, tt.temp, tt.why)
			}
			m, ok, why := Choose(tt.d, tt.answers)
			if m != got.Method || ok != got.OK || why != got.Why {
				t.Errorf("Choose and ChooseDetail disagree")
			}
		})
	}
	// The sender's request on top of a rule names both.
	d := c.Decide("bob@example.org", "nocrypt@partner.example", "[secure]", nil)
	if _, _, why := Choose(d, map[string]bool{"smime": false, "webmailbox": false}); !strings.HasSuffix(why, "required by the sender's request and rule 2") {
		t.Errorf("why = %q", why)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  conf.Encryption
		want string
	}{
		{conf.Encryption{Rules: []conf.EncryptionRule{{Encrypt: "always"}}}, `encryption.rule[0].encrypt: "always"`},
		{conf.Encryption{Rules: []conf.EncryptionRule{{Encrypt: Required}}}, "without methods"},
		{conf.Encryption{Rules: []conf.EncryptionRule{{Encrypt: Never, Senders: []string{"a*@x"}}}}, "senders[0]: invalid address pattern"},
		{conf.Encryption{Rules: []conf.EncryptionRule{{Encrypt: Never, Recipients: []string{"*", "@x"}}}}, "recipients[1]: invalid address pattern"},
		{conf.Encryption{Rules: []conf.EncryptionRule{{Encrypt: Never, Recipients: []string{"*.*.x"}}}}, "recipients[0]"},
	} {
		_, err := New(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
}

func TestAudit(t *testing.T) {
	c := testChain(t)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	for _, answers := range []map[string]bool{
		{"smime": true},
		{"smime": false, "pgp": false, "webmailbox": false},
		{"smime": false},
	} {
		d := c.Decide("alice@secure.example.org", "x@anywhere.test", "", nil)
		Audit(context.Background(), log, "Q1", d, ChooseDetail(d, answers))
	}
	d := c.Decide("a@b.test", "c@d.test", "", nil)
	Audit(context.Background(), log, "Q2", d, ChooseDetail(d, nil))

	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, m)
	}
	want := []struct {
		level, outcome, method string
		rule                   float64
	}{
		{"INFO", "encrypt", "smime", 0},
		{"WARN", "bounce", "", 0},
		{"WARN", "defer", "", 0},
		{"INFO", "plain", "", -1},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records", len(recs))
	}
	for i, w := range want {
		r := recs[i]
		if r["level"] != w.level || r["outcome"] != w.outcome || r["method"] != w.method || r["rule"] != w.rule ||
			r["msg"] != "encryption policy" || r["rcpt"] == "" || r["why"] == "" || r["queue_id"] == "" {
			t.Errorf("record %d = %v", i, r)
		}
	}
}

// TestUnloop: mail a plugin generated never goes to a web mailbox method;
// what only the web mailbox would have caught goes as it is, other
// methods still encrypt, and a decision without a web mailbox stays.
func TestUnloop(t *testing.T) {
	c, err := New(conf.Encryption{
		Methods: []string{"smime", "wmb"},
		Rules: []conf.EncryptionRule{
			{Recipients: []string{"only-wmb.test"}, Encrypt: Required, Methods: []string{"wmb"}},
			{Recipients: []string{"both.test"}, Encrypt: Required, Methods: []string{"smime", "wmb"}},
			{Recipients: []string{"no-wmb.test"}, Encrypt: Required, Methods: []string{"smime"}},
			{Recipients: []string{"defaults.test"}, Encrypt: Required},
		},
	}, WebMailboxes("wmb"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsWebMailbox("wmb") || c.IsWebMailbox("smime") {
		t.Fatal("IsWebMailbox")
	}
	tests := []struct {
		rcpt     string
		answers  map[string]bool
		methods  []string
		unlooped bool
		method   string
		ok       bool
	}{
		{"a@only-wmb.test", map[string]bool{"wmb": true}, nil, true, "", true},
		{"a@both.test", map[string]bool{"smime": true, "wmb": true}, []string{"smime"}, true, "smime", true},
		{"a@both.test", map[string]bool{"smime": false, "wmb": true}, []string{"smime"}, true, "", true},
		{"a@no-wmb.test", map[string]bool{"smime": false}, []string{"smime"}, false, "", false},
		{"a@defaults.test", map[string]bool{"smime": false, "wmb": true}, []string{"smime"}, true, "", true},
		{"a@elsewhere.test", nil, nil, false, "", true},
	}
	for _, tc := range tests {
		d := c.Unloop(c.Decide("noreply@example.org", tc.rcpt, "", nil))
		if !reflect.DeepEqual(d.Methods, tc.methods) || d.Unlooped != tc.unlooped {
			t.Errorf("%s: methods %v unlooped %v, want %v %v", tc.rcpt, d.Methods, d.Unlooped, tc.methods, tc.unlooped)
		}
		ch := ChooseDetail(d, tc.answers)
		if ch.Method != tc.method || ch.OK != tc.ok {
			t.Errorf("%s: chose %q ok=%v (%s), want %q ok=%v", tc.rcpt, ch.Method, ch.OK, ch.Why, tc.method, tc.ok)
		}
		if tc.unlooped && ch.Method == "" && !strings.Contains(ch.Why, "loop guard") {
			t.Errorf("%s: why %q does not name the loop guard", tc.rcpt, ch.Why)
		}
	}
	// Without WebMailboxes nothing is a web mailbox.
	c2, _ := New(conf.Encryption{Rules: []conf.EncryptionRule{{Encrypt: Required, Methods: []string{"webmailbox"}}}})
	if d := c2.Unloop(c2.Decide("a@b.test", "c@d.test", "", nil)); d.Unlooped || len(d.Methods) != 1 {
		t.Errorf("chain without web mailboxes changed the decision: %+v", d)
	}
}

// TestMayStrip: whenever StripTag changes a subject, MayStrip says so
// (a false "nothing to strip" would send the tag out).
func TestMayStrip(t *testing.T) {
	c := testChain(t)
	for _, in := range []string{
		"[secure] Offer", "[SECURE]   Offer", "Offer [Secure] for you", "a[secure]b", "[secure]",
		"no tag here", "Grüße [secure] aus Köln", "[secure\u00a0] not the tag", "[se cure] spaced", "",
	} {
		changes := c.StripTag(in) != in
		if changes && !c.MayStrip(nil, []string{in}) {
			t.Errorf("MayStrip(%q) = false, but StripTag changes it", in)
		}
	}
	if c.MayStrip(map[string][]string{"Subject": {"hello"}, "From": {"a@b"}}, []string{"hello"}) {
		t.Error("MayStrip without tag or trigger = true")
	}
	if !c.MayStrip(map[string][]string{"X-Posthorn-Encrypt": {"yes"}}, nil) || !c.MayStrip(map[string][]string{"x-posthorn-ENCRYPT": {""}}, nil) {
		t.Error("MayStrip with the trigger header = false")
	}
	bare, _ := New(conf.Encryption{})
	if bare.MayStrip(map[string][]string{"X-Posthorn-Encrypt": {"yes"}}, []string{"[secure] x"}) {
		t.Error("MayStrip without tag and trigger configured = true")
	}
}
