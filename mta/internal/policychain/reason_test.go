package policychain

import (
	"strings"
	"testing"

	"github.com/posthorn/posthorn/conf"
)

// TestTriggeredReasonNeverSaysNotEncrypted: the audit line of a message
// the subject tag makes encrypted must not say "not encrypted" beside
// outcome=encrypt (issue 17).
func TestTriggeredReasonNeverSaysNotEncrypted(t *testing.T) {
	c, err := New(conf.Encryption{SubjectTag: "[secure]", Methods: []string{"webmailbox"}})
	if err != nil {
		t.Fatal(err)
	}
	d := c.Decide("a@example.org", "b@partner.example", "[secure] hello", nil)
	if !d.Triggered || d.Encrypt != Required || strings.Contains(d.Reason, "not encrypted") {
		t.Errorf("decision %+v", d)
	}
	d = c.Decide("a@example.org", "b@partner.example", "hello", nil)
	if d.Triggered || !strings.Contains(d.Reason, "not encrypted") {
		t.Errorf("untriggered decision %+v", d)
	}
}
