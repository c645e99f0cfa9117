package pgp_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
	"github.com/posthorn/posthorn/sdk/plugintest"
)

// TestApprovalFlow (issue 13.6) with the built plugin: a key harvested
// from an Autocrypt header is pending (approval harvest = "manual"); the
// operator gets pgp.key_pending; mail to carol cannot be encrypted ("no
// key"); posthorn-pgp keys pending lists it, keys approve approves it;
// the plugin emits pgp.key_activated to carol and encrypts to her.
func TestApprovalFlow(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "pgp")
	host := &plugintest.RecordingHost{}
	h := plugintest.Start(t, bin, hostside.Options{Name: "pgp", Logger: plugintest.TestLogger(t, slog.LevelWarn)})
	cfg, _ := json.Marshal(map[string]any{
		"discovery": []any{"local", "autocrypt"}, "internal_domains": []any{"example.org"},
		"approval": map[string]any{"harvest": "manual"}, "approval_notify": "ops@example.org", "approval_poll": "100ms",
	})
	if _, err := h.Describe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Configure(ctx, cfg, data, host); err != nil {
		t.Fatal(err)
	}
	carol, err := pgpmail.Generate("carol@partner.test", pgpmail.GenerateOptions{Name: "Carol"})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := pgpmail.Armor(carol, false)
	fpr := pgpmail.Fingerprint(carol)
	msg := "From: carol@partner.test\r\nTo: erik@example.org\r\nSubject: hi\r\nAutocrypt: addr=carol@partner.test; keydata=" +
		base64.StdEncoding.EncodeToString(pub) + "\r\n\r\nHello.\r\n"
	if _, _, err := h.Inspect(ctx, &sdk.Envelope{MailFrom: "carol@partner.test", Recipients: []sdk.Recipient{{Address: "erik@example.org"}}}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	event := func(typ string) *sdk.Event {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			_, evs, _ := host.Snapshot()
			for i := range evs {
				if evs[i].Type == typ {
					return &evs[i]
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no %s event", typ)
		return nil
	}
	p := event("pgp.key_pending")
	if p.Attributes["notify_to"] != "ops@example.org" || p.Attributes["fingerprint"] != fpr || p.Attributes["addresses"] != "carol@partner.test" {
		t.Fatalf("pending event: %+v", p)
	}
	env := &sdk.Envelope{MailFrom: "erik@example.org", Recipients: []sdk.Recipient{{Address: "carol@partner.test"}}}
	ans, err := h.CanHandle(ctx, env, env.Recipients)
	if err != nil || ans[0].CanHandle || !strings.Contains(ans[0].Reason, "waits for operator approval") {
		t.Fatalf("before approval: %+v %v", ans, err)
	}
	out, e, code := cli(t, "", "keys", "pending", "--data", data)
	if code != 0 || !strings.Contains(out, fpr) || !strings.Contains(out, "pending") {
		t.Fatalf("keys pending: %d %s %s", code, out, e)
	}
	if _, e, code := cli(t, "", "keys", "approve", fpr, "--data", data); code != 0 {
		t.Fatal(e)
	}
	if _, _, code := cli(t, "", "keys", "approve", fpr, "--data", data); code == 0 {
		t.Fatal("approved twice")
	}
	a := event("pgp.key_activated")
	if a.Recipient != "carol@partner.test" || a.Attributes["fingerprint"] != fpr {
		t.Fatalf("activation event: %+v", a)
	}
	ans, err = h.CanHandle(ctx, env, env.Recipients)
	if err != nil || !ans[0].CanHandle {
		t.Fatalf("after approval: %+v %v", ans, err)
	}
	// Harvested again: stays approved.
	h.Inspect(ctx, &sdk.Envelope{MailFrom: "carol@partner.test", Recipients: []sdk.Recipient{{Address: "erik@example.org"}}}, strings.NewReader(msg))
	if out, _, _ := cli(t, "", "keys", "pending", "--data", data); strings.Contains(out, fpr) {
		t.Fatalf("pending again:\n%s", out)
	}
}
