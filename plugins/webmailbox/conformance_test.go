package webmailbox

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/hostside"
	"github.com/posthorn/posthorn/sdk/plugintest"
)

func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the plugin binary")
	}
	bin := plugintest.Build(t, "./cmd/posthorn-webmailbox")
	plugintest.Run(t, bin, plugintest.Options{Config: baseConfig(), LargeMessageMB: 20})
}

// TestProcessDivert runs the real binary through the host's client: the
// message is diverted and the activation event reaches the host.
func TestProcessDivert(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the plugin binary")
	}
	bin := plugintest.Build(t, "./cmd/posthorn-webmailbox")
	host := &plugintest.RecordingHost{}
	c := plugintest.Start(t, bin, hostside.Options{Name: "webmailbox"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := c.Describe(ctx)
	if err != nil || !info.Has(sdk.HookOutbound) {
		t.Fatalf("Describe: %+v, %v", info, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := baseConfig()
	cfg["listen"] = addr
	if err := c.Configure(ctx, mustJSON(cfg), t.TempDir(), host); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	// The plugin's own web server answers.
	r, err := http.Get("http://" + addr + "/box/login")
	if err != nil {
		t.Fatalf("web server: %v", err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || !strings.Contains(string(body), `name="password"`) || r.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("login page from the plugin process: %d %s", r.StatusCode, body)
	}
	env := &sdk.Envelope{ID: "Q42", MailFrom: "alice@org.example", Recipients: []sdk.Recipient{{Address: "bob@partner.test"}}}
	res, err := c.Transform(ctx, env, env.Recipients, strings.NewReader(testMsg))
	if err != nil {
		t.Fatalf("Transform: %v", err)
	}
	defer res.Close()
	if res.Action != sdk.OutboundDiverted {
		t.Fatalf("action %v", res.Action)
	}
	_, evs, _ := host.Snapshot()
	if len(evs) != 1 || evs[0].Type != "webmailbox.activation" || evs[0].Recipient != "bob@partner.test" || evs[0].QueueID != "Q42" {
		t.Fatalf("events = %+v", evs)
	}
}
