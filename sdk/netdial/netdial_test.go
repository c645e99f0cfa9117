package netdial

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer answers A queries for the names in zone over UDP on
// 127.0.0.1 and NXDOMAIN for everything else.
func dnsServer(t *testing.T, zone map[string]net.IP) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
			ip, ok := zone[strings.ToLower(q.Name.String())]
			if !ok {
				rh.RCode = dnsmessage.RCodeNameError
			}
			b := dnsmessage.NewBuilder(nil, rh)
			b.EnableCompression()
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if ok && q.Type == dnsmessage.TypeA {
				var a [4]byte
				copy(a[:], ip.To4())
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: a})
			}
			out, err := b.Finish()
			if err == nil {
				pc.WriteTo(out, addr)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func listener(t *testing.T) (port string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	return port
}

// TestNamesGoToTheConfiguredServer: a name only the configured server
// knows resolves; the system's resolver is never asked.
func TestNamesGoToTheConfiguredServer(t *testing.T) {
	srv := dnsServer(t, map[string]net.IP{"wkd.partner.invalid.": net.IPv4(127, 0, 0, 1)})
	port := listener(t)
	d := &Dialer{Server: srv, Timeout: 5 * time.Second}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("wkd.partner.invalid", port))
	if err != nil {
		t.Fatalf("dial through the configured resolver: %v", err)
	}
	c.Close()
	if _, err := d.DialContext(ctx, "tcp", net.JoinHostPort("unknown.partner.invalid", port)); err == nil {
		t.Error("a name the configured resolver does not know was dialled")
	}
	// The system resolver knows nothing of .invalid.
	if _, err := (&Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", net.JoinHostPort("wkd.partner.invalid", port)); err == nil {
		t.Error("the system resolver resolved a name only the test server has")
	}
}

func TestLiteralsAndStatic(t *testing.T) {
	port := listener(t)
	// A resolver that never answers: literals and static names must not need it.
	d := &Dialer{Server: "127.0.0.1:9", Timeout: 2 * time.Second, Static: map[string]string{
		"keys.example.test": "127.0.0.1:" + port,
		"wkd.example.test":  ":" + port,
	}}
	ctx := context.Background()
	for _, addr := range []string{"127.0.0.1:" + port, "keys.example.test:1", "KEYS.example.test:1"} {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Errorf("%s: %v", addr, err)
			continue
		}
		c.Close()
	}
	bad := &Dialer{Server: "no-port", Static: map[string]string{"x": "y"}}
	if err := bad.Validate(); err == nil {
		t.Error("Validate accepted a server without a port")
	}
}
