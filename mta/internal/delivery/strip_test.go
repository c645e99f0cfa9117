package delivery

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/policychain"
)

func bodyOf(s string) Body {
	return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s)), nil }
}

func readBody(t *testing.T, b Body) []byte {
	t.Helper()
	rc, err := b()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPlainBodyPassThrough: Apply hands the queued message on unchanged
// (no header rewrite pass) only when stripping would not change a byte:
// for every header below, the pass-through decision agrees with what
// stripTrigger produces. Tags split by folding, the trigger header in other
// cases, broken and truncated headers all take the rewriting path.
func TestPlainBodyPassThrough(t *testing.T) {
	chain, err := policychain.New(conf.Encryption{SubjectTag: "[secure]", TriggerHeader: "X-Posthorn-Encrypt", Methods: []string{"smime"}})
	if err != nil {
		t.Fatal(err)
	}
	body := "\r\n" + strings.Repeat("line of the body [secure] X-Posthorn-Encrypt: yes\r\n", 50)
	for _, hdr := range []string{
		"Subject: hello\r\nFrom: a@b.example\r\n",
		"Subject: [secure] hello\r\n",
		"Subject: hello\r\n [secure]\r\n",
		"Subject: hello [sec\r\n ure]\r\n",
		"Subject: hello\r\nSubject: second [SECURE]\r\n",
		"x-posthorn-encrypt: yes\r\nSubject: hi\r\n",
		"X-Posthorn-Encrypt:\r\n",
		"From: a@b.example\r\n X-Posthorn-Encrypt: folded into From\r\n",
		" leading continuation\r\nSubject: x\r\n",
		"no colon here\r\nSubject: [secure] x\r\n",
		"Subject: =?utf-8?q?=5Bsecure=5D?= encoded\r\n",
		"Subject: unterminated header [secure]",
		"",
	} {
		msg := hdr + body
		if !strings.Contains(hdr, "\r\n") || hdr == "" {
			msg = hdr
		}
		_, fields, clean, err := readHeader(bodyOf(msg))
		if err != nil {
			continue // Apply defers the message
		}
		stripped := readBody(t, stripTrigger(bodyOf(msg), chain, chain.TriggerHeader()))
		pass := clean && !chain.MayStrip(fields, fields["Subject"])
		if pass && !bytes.Equal(stripped, []byte(msg)) {
			t.Errorf("header %q: passed through, but stripping changes it to %q", hdr, stripped[:min(len(stripped), 80)])
		}
	}
	// The common case does pass through.
	_, fields, clean, _ := readHeader(bodyOf("Subject: hello\r\nFrom: a@b.example\r\n" + body))
	if !clean || chain.MayStrip(fields, fields["Subject"]) {
		t.Error("a message without tag and trigger header is rewritten")
	}
}
