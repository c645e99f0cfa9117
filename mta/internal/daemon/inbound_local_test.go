package daemon_test

import (
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/smtpd"
)

// sendmail submits msg over the control socket, as `posthorn sendmail`
// does (control.Submit is its client).
func (e *testEnv) sendmail(from string, to []string, msg string) (string, error) {
	return control.Submit(e.cfg.Control.Socket, control.Request{From: from, To: to, User: "alice"}, strings.NewReader(msg))
}

// TestLocalSubmissionThroughInboundHooks: mail injected with posthorn
// sendmail passes through the inbound hooks like mail received over SMTP:
// a plugin's rejection reaches the submitter, its headers and
// replacements land in the queued message. With local_submissions =
// "skip" the plugin does not see local mail.
func TestLocalSubmissionThroughInboundHooks(t *testing.T) {
	e := startEnv(t, pluginConf(t, ""))
	waitPlugin(t, e, "running")
	_, err := e.sendmail("reject@example.com", []string{"bob@example.test"}, "Subject: VIAGRA\r\n\r\nbuy now\r\n")
	if err == nil || !strings.Contains(err.Error(), "550") || !strings.Contains(err.Error(), "rejected by testplugin") {
		t.Fatalf("sendmail of a mail the plugin rejects: %v", err)
	}
	if _, err := e.sendmail("count@example.com", []string{"bob@example.test"}, testMessage("local1")); err != nil {
		t.Fatal(err)
	}
	m := e.waitMail("example.test", "bob", 1, 10*time.Second)[0]
	if !strings.Contains(m, "X-Count: ") || !strings.Contains(m, "from local user alice") {
		t.Fatalf("plugin headers missing from the locally submitted mail:\n%s", m)
	}
	if n := e.mailCount("example.test", "bob"); n != 1 {
		t.Fatalf("%d mails for bob, want 1 (the rejected one must not be queued)", n)
	}
}

func TestLocalSubmissionExempt(t *testing.T) {
	e := startEnv(t, pluginConfWith(t, `local_submissions = "skip"`, ""))
	waitPlugin(t, e, "running")
	if _, err := e.sendmail("reject@example.com", []string{"bob@example.test"}, testMessage("local2")); err != nil {
		t.Fatalf("exempt plugin still saw the local submission: %v", err)
	}
	e.waitMail("example.test", "bob", 1, 10*time.Second)
	// Over SMTP the plugin still rejects.
	c := e.dial(smtpd.MX)
	if err := send(c, "reject@example.com", []string{"bob@example.test"}, testMessage("smtp2")); codeOf(err) != 550 {
		t.Fatalf("over SMTP: want 550, got %v", err)
	}
}
