package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
	"github.com/posthorn/posthorn/sdk/plugintest"
)

var testConfig = map[string]any{
	"tag":          "[ext]",
	"reject_words": []string{"viagra"},
	"domains":      []string{"example.test"},
	"footer":       "Scanned by subjecttag.",
}

// TestConformance runs the SDK's conformance kit against the built binary.
func TestConformance(t *testing.T) {
	bin := plugintest.Build(t, ".")
	plugintest.Run(t, bin, plugintest.Options{Config: testConfig})
}

// TestHooks drives the real binary through its hooks.
func TestHooks(t *testing.T) {
	bin := plugintest.Build(t, ".")
	host := &plugintest.RecordingHost{}
	c := plugintest.Start(t, bin, hostside.Options{Name: "subjecttag", Logger: plugintest.TestLogger(t, slog.LevelDebug)})
	ctx := context.Background()
	if _, err := c.Describe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Configure(ctx, mustJSON(t, testConfig), t.TempDir(), host); err != nil {
		t.Fatal(err)
	}
	env := &sdk.Envelope{MailFrom: "a@remote.test", Recipients: []sdk.Recipient{{Address: "b@example.test"}, {Address: "c@other.test"}}}

	t.Run("InboundTagged", func(t *testing.T) {
		v, repl, err := c.Inspect(ctx, env, strings.NewReader("Subject: hi\r\n\r\nhello\r\n"))
		if err != nil || repl != nil {
			t.Fatalf("Inspect: %v %v", err, repl)
		}
		if v.Action != sdk.ActionAddHeaders || len(v.Headers) != 1 || v.Headers[0] != (sdk.Header{Name: "X-Subject-Tag", Value: "[ext]"}) {
			t.Fatalf("verdict %+v", v)
		}
	})

	t.Run("InboundRejected", func(t *testing.T) {
		// The word straddles two chunks of the SDK's stream.
		body := "Subject: offer\r\n\r\n" + strings.Repeat("a", sdk.ChunkSize-3) + "VIAGRA cheap\r\n"
		v, _, err := c.Inspect(ctx, env, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if v.Action != sdk.ActionReject || v.Code != 550 || v.EnhancedCode != "5.7.1" {
			t.Fatalf("verdict %+v", v)
		}
		_, evs, _ := host.Snapshot()
		if len(evs) != 1 || evs[0].Type != "subjecttag.rejected" || evs[0].SourcePlugin != "subjecttag" || evs[0].Attributes["word"] != "viagra" {
			t.Fatalf("emitted events %+v", evs)
		}
	})

	t.Run("Outbound", func(t *testing.T) {
		answers, err := c.CanHandle(ctx, env, env.Recipients)
		if err != nil {
			t.Fatal(err)
		}
		if !answers[0].CanHandle || answers[1].CanHandle {
			t.Fatalf("answers %+v", answers)
		}
		res, err := c.Transform(ctx, env, env.Recipients[:1], strings.NewReader("Subject: hi\r\nContent-Type: text/plain\r\n\r\nbody\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Close()
		out, err := res.Next()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(out.Body)
		if err != nil {
			t.Fatal(err)
		}
		want := "Subject: [ext] hi\r\nContent-Type: text/plain\r\n\r\nbody\r\n\r\n-- \r\nScanned by subjecttag.\r\n"
		if string(got) != want {
			t.Fatalf("output\n%q\nwant\n%q", got, want)
		}
		if _, err := res.Next(); err != io.EOF {
			t.Fatalf("second output: %v", err)
		}
	})

	t.Run("BadConfigKey", func(t *testing.T) {
		err := c.Configure(ctx, []byte(`{"reject_words": "viagra"}`), t.TempDir(), host)
		if err == nil || !strings.Contains(err.Error(), "reject_words: wrong type") {
			t.Fatalf("Configure: %v", err)
		}
	})
}

func TestRewrite(t *testing.T) {
	cfg := Config{Tag: "[t]", Footer: "f"}
	for _, tc := range []struct{ in, want string }{
		{"Subject: x\r\n\r\nb\r\n", "Subject: [t] x\r\n\r\nb\r\n\r\n-- \r\nf\r\n"},
		{"Subject: [t] x\r\n\r\nb\r\n", "Subject: [t] x\r\n\r\nb\r\n\r\n-- \r\nf\r\n"},
		{"Content-Type: multipart/mixed; boundary=x\r\nSubject: x\r\n\r\nb\r\n", "Content-Type: multipart/mixed; boundary=x\r\nSubject: [t] x\r\n\r\nb\r\n"},
		{"X-A: 1\r\n x-subject: no\r\n", "X-A: 1\r\n x-subject: no\r\n"},
	} {
		var b strings.Builder
		if err := rewrite(&b, strings.NewReader(tc.in), cfg); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("rewrite(%q) = %q, want %q", tc.in, b.String(), tc.want)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := jsonMarshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var jsonMarshal = json.Marshal
