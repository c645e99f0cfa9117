package queue

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// TestEnvelopeJSONMatchesEncodingJSON: the hand-written encoder gives
// exactly json.Marshal's bytes for envelopes with every field set or
// empty, nil recipients and slices, and strings that need escaping
// (quotes, backslashes, HTML characters, control characters, non-ASCII,
// invalid UTF-8, U+2028).
func TestEnvelopeJSONMatchesEncodingJSON(t *testing.T) {
	strs := []string{"", "a@example.org", `q"uo\te`, "<a&b>", "tab\there\nnl\r\x00\x1f\x7f", "Grüße ☃",
		"bad \xff\xfe utf8", "line\u2028sep\u2029", "smtp; 550 5.1.1 <x@y> no such user", "rfc822;x+2B@y"}
	times := []time.Time{{}, time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 4, 21, 0, 0, 123456789, time.FixedZone("x", 3600+1800)), time.Unix(0, 1)}
	rng := rand.New(rand.NewPCG(7, 9))
	pick := func() string { return strs[rng.IntN(len(strs))] }
	pickT := func() time.Time { return times[rng.IntN(len(times))] }
	for i := 0; i < 3000; i++ {
		env := &Envelope{ID: pick(), From: pick(), Received: pickT(), Size: rng.Int64N(1 << 40),
			Ret: pick(), EnvID: pick(), BodyType: pick(), SMTPUTF8: rng.IntN(2) == 0, RequireTLS: rng.IntN(2) == 0,
			AuthUser: pick(), ClientAddr: pick(), ClientHelo: pick(), Held: rng.IntN(2) == 0, Recovered: rng.IntN(2) == 0}
		switch rng.IntN(4) {
		case 0:
		case 1:
			env.Recipients = []*Recipient{}
		default:
			for n := rng.IntN(4); n >= 0; n-- {
				if rng.IntN(8) == 0 {
					env.Recipients = append(env.Recipients, nil)
					continue
				}
				r := &Recipient{Addr: pick(), ORcpt: pick(), State: RcptState(pick()), Attempts: rng.IntN(100) - 3,
					LastAttempt: pickT(), NextAttempt: pickT(), Status: pick(), Diagnostic: pick(), RemoteMTA: pick(),
					DelayWarned: rng.IntN(2) == 0}
				switch rng.IntN(3) {
				case 1:
					r.Notify = []string{}
				case 2:
					r.Notify = []string{pick(), pick()}
				}
				env.Recipients = append(env.Recipients, r)
			}
		}
		switch rng.IntN(3) {
		case 1:
			env.Attrs = map[string]string{}
		case 2:
			env.Attrs = map[string]string{pick(): pick(), pick(): pick(), "policy.encrypt": pick(), "z": pick()}
		}
		want, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendEnvelopeJSON(nil, env)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("envelope %d:\n got %s\nwant %s", i, got, want)
		}
	}
	// A time encoding/json refuses is refused too.
	bad := &Envelope{Received: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Recipients: []*Recipient{}}
	if _, err := json.Marshal(bad); err == nil {
		t.Fatal("encoding/json took year 10000")
	}
	if _, err := appendEnvelopeJSON(nil, bad); err == nil {
		t.Fatal("year 10000 encoded")
	}
}

func BenchmarkEnvelopeJSON(b *testing.B) {
	env := &Envelope{ID: "0123456789ABCDEF", From: "sender@example.org", Received: time.Now(), Size: 10240,
		Recipients: []*Recipient{{Addr: "rcpt@example.net", State: Pending, NextAttempt: time.Now()}},
		ClientAddr: "192.0.2.1", ClientHelo: "client.example.org", BodyType: "8BITMIME"}
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(env)
		}
	})
	b.Run("append", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		for b.Loop() {
			appendEnvelopeJSON(buf[:0], env)
		}
	})
}
