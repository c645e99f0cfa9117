package conf

import (
	"strings"
	"testing"
)

// TestWebMailboxLoopWarning: a rule that sends recipients to the web
// mailbox for every sender, or for senders that include the notify
// plugin's from address, is warned about; a rule limited to other
// senders, or after a rule that decides for the notifications, is not.
func TestWebMailboxLoopWarning(t *testing.T) {
	plugins := []Plugin{
		{Name: "notify", Path: "/usr/lib/posthorn/posthorn-notify", Config: PluginConfig{"from": "Notices@Example.org"}},
		{Name: "vault", Path: "/usr/lib/posthorn/posthorn-webmailbox"},
		{Name: "smime", Path: "/usr/lib/posthorn/posthorn-smime"},
	}
	tests := []struct {
		name  string
		rules []EncryptionRule
		want  string // "" for no warning
	}{
		{"no senders", []EncryptionRule{{Recipients: []string{"partner.test"}, Encrypt: "required", Methods: []string{"smime", "vault"}}}, "for every sender (no senders)"},
		{"star", []EncryptionRule{{Senders: []string{"*"}, Encrypt: "opportunistic", Methods: []string{"vault"}}}, `senders = ["*"]`},
		{"notify's domain", []EncryptionRule{{Senders: []string{"*@example.org"}, Encrypt: "required", Methods: []string{"vault"}}}, "notices@example.org too"},
		{"default methods", []EncryptionRule{{Encrypt: "required"}}, "for every sender"},
		{"other senders", []EncryptionRule{{Senders: []string{"staff@example.org", "*.corp.example"}, Encrypt: "required", Methods: []string{"vault"}}}, ""},
		{"never rule", []EncryptionRule{{Encrypt: "never", Methods: []string{"vault"}}}, ""},
		{"no web mailbox", []EncryptionRule{{Encrypt: "required", Methods: []string{"smime"}}}, ""},
		{"earlier rule for the notifications", []EncryptionRule{
			{Senders: []string{"notices@example.org"}, Encrypt: "never"},
			{Encrypt: "required", Methods: []string{"vault"}}}, ""},
		{"earlier rule also a web mailbox", []EncryptionRule{
			{Senders: []string{"notices@example.org"}, Encrypt: "required", Methods: []string{"vault"}},
			{Senders: []string{"boss@example.org"}, Encrypt: "required", Methods: []string{"vault"}}}, "encryption.rule[0]"},
	}
	for _, tc := range tests {
		c := &Config{Plugins: plugins, Encryption: Encryption{Methods: []string{"smime", "vault"}, Rules: tc.rules}}
		ws := c.Warnings()
		got := strings.Join(ws, "\n")
		if tc.want == "" && len(ws) != 0 || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: warnings %q, want one with %q", tc.name, got, tc.want)
		}
		if tc.want != "" && !strings.Contains(got, "loop guard") {
			t.Errorf("%s: warning does not explain: %q", tc.name, got)
		}
	}
	if got := (&Config{Plugins: plugins}).WebMailboxPlugins(); len(got) != 1 || got[0] != "vault" {
		t.Errorf("WebMailboxPlugins = %v", got)
	}
}
