package smime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

// benchPlugin is the plugin as benchcompare -smime runs it: one RSA
// signing identity (alice@org.test), the trust store, and the
// recipient's certificate imported into the SQLite store.
func benchPlugin(b *testing.B) (*Plugin, Identity) {
	pki := newPKI(b)
	alice := pki.leaf(b, "alice@org.test")
	bob := pki.leaf(b, "bob@ext.test")
	dir := b.TempDir()
	writeFile(b, dir, "ca.pem", certPEM(pki.ca.Cert))
	writeFile(b, dir, "alice.pem", certPEM(alice.Cert))
	writeFile(b, dir, "alice.key", keyPEM(b, alice))
	js, _ := json.Marshal(map[string]any{
		"identity":    []map[string]any{{"cert": "alice.pem", "key": "alice.key"}},
		"trust_store": "ca.pem",
	})
	p := &Plugin{}
	if err := p.Configure(context.Background(), sdk.Config{JSON: js, DataDir: dir}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.st.close() })
	for _, r := range NewRecords(bob.Cert, Capabilities{}, "import", time.Now()) {
		if err := p.st.store.Put(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
	return p, bob
}

// BenchmarkOutbound100KB is what the plugin does for one outbound
// message of 100 KiB to one recipient (issue 19.4): CanHandle, then
// Transform (sign with RSA-2048, encrypt to the recipient and the
// sender's copy), reading the output. Look-ups: the store's ForAddress
// for the recipient and the sender's copy.
func BenchmarkOutbound100KB(b *testing.B) {
	p, _ := benchPlugin(b)
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2) + "\r\n"
	body := strings.Repeat(line, (100<<10)/len(line)+1)[:100<<10]
	msg := []byte("From: alice@org.test\r\nTo: bob@ext.test\r\nSubject: bench\r\nContent-Type: text/plain\r\n\r\n" + body)
	// A context that can end, as gRPC's of every call.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := &sdk.Envelope{ID: "Q1", MailFrom: "alice@org.test", Size: int64(len(msg))}
	rcpts := []sdk.Recipient{{Address: "bob@ext.test"}}
	b.Run("canhandle", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for i := 0; i < b.N; i++ {
			ans, err := p.CanHandle(ctx, env, rcpts)
			if err != nil || !ans[0].CanHandle {
				b.Fatal(err, ans)
			}
		}
	})
	b.Run("canhandle-fresh", func(b *testing.B) {
		// From a new goroutine each time, as gRPC calls a hook.
		b.ReportAllocs()
		defer reportCPU(b)()
		for i := 0; i < b.N; i++ {
			done := make(chan error, 1)
			go func() {
				ans, err := p.CanHandle(ctx, env, rcpts)
				if err == nil && !ans[0].CanHandle {
					err = errors.New(ans[0].Reason)
				}
				done <- err
			}()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("message", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		defer reportCPU(b)()
		for i := 0; i < b.N; i++ {
			ans, err := p.CanHandle(ctx, env, rcpts)
			if err != nil || !ans[0].CanHandle {
				b.Fatal(err, ans)
			}
			res, err := p.Transform(ctx, env, rcpts, bytes.NewReader(msg))
			if err != nil || res.Action != sdk.OutboundTransformed {
				b.Fatal(err, res)
			}
			if _, err := io.Copy(io.Discard, res.Outputs[0].Body); err != nil {
				b.Fatal(err)
			}
			if c, ok := res.Outputs[0].Body.(io.Closer); ok { // as the SDK does once it has sent it
				c.Close()
			}
		}
	})
}

// reportCPU adds the process's CPU time (user and system, every
// goroutine's, the garbage collector's too) per operation: steadier than
// ns/op on a machine others use. Call the function it returns at the
// end.
func reportCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() {
		b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
	}
}

// deep uses about n KiB of stack, as signing does.
//
//go:noinline
func deep(n int) byte {
	var pad [1000]byte
	pad[n%len(pad)] = byte(n)
	if n == 0 {
		return pad[0]
	}
	return deep(n-1) + pad[n%len(pad)]
}

// BenchmarkRun is the cost of run (the goroutine a hook's work runs in)
// for work that needs 32 KiB of stack.
func BenchmarkRun(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	for i := 0; i < b.N; i++ {
		if _, err := run(ctx, func() (byte, error) { return deep(32), nil }); err != nil {
			b.Fatal(err)
		}
	}
}
