package dsn

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/queue"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestHumanTextGolden pins the people's part of a notification, in both
// languages, byte for byte: every action, every status with words of its
// own and every class fallback, with and without subject, arrival and
// original. Rewrite testdata/human.golden with -update after a deliberate
// change of wording.
func TestHumanTextGolden(t *testing.T) {
	header := []byte("From: alice@example.org\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= \"quoted\"\r\n")
	var all []RecipientReport
	for _, st := range []string{
		"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.2.1", "5.2.2", "5.2.3", "5.3.4",
		"5.4.1", "5.4.2", "5.4.3", "5.4.4", "5.4.6", "5.4.7", "5.7.1", "5.7.10", "5.7.11",
		"5.1.0", "5.2.0", "5.3.0", "5.4.0", "5.5.0", "5.6.0", "5.7.0", "5.8.0", "5.0.0", "bogus", "",
	} {
		all = append(all, RecipientReport{Addr: "f-" + st + "@example.net", Action: Failed, Status: st})
	}
	all = append(all,
		RecipientReport{Addr: "diag@example.net", Action: Failed, Status: "5.1.1",
			Diagnostic: "smtp; 550 5.1.1 no such user\r\nInjected: header", RemoteMTA: "mx.example.net"},
		RecipientReport{Addr: "late@example.net", Action: Delayed, Status: "4.4.1",
			Diagnostic: "smtp; 421 try later", RemoteMTA: "mx.example.net", WillRetryUntil: until},
		RecipientReport{Addr: "late2@example.net", Action: Delayed},
		RecipientReport{Addr: "ok@example.net", Action: Delivered, Status: "2.0.0", RemoteMTA: "mx.example.net"},
		RecipientReport{Addr: "relay@example.net", Action: Relayed, Diagnostic: "smtp; 250 ok"},
		RecipientReport{Addr: "list@example.net", Action: Expanded},
	)
	cases := []struct {
		name         string
		r            Report
		header       []byte
		haveOriginal bool
		full         bool
	}{
		{"everything", Report{Envelope: envelope(), Recipients: all}, header, true, true},
		{"headers only", Report{Envelope: envelope(), Recipients: all[:1], Arrival: attempt}, header, true, false},
		{"no original, no subject, no arrival", Report{Envelope: &queue.Envelope{}, Recipients: all[len(all)-3:]}, nil, false, false},
		{"delayed only", Report{Envelope: envelope(), Recipients: all[len(all)-5 : len(all)-3]}, header, false, false},
		{"TLS failures only: no advice to check the address", Report{Envelope: envelope(), Recipients: []RecipientReport{
			{Addr: "tls@example.net", Action: Failed, Status: "5.7.10", Diagnostic: "x-posthorn; no secure connection"},
			{Addr: "rtls@example.net", Action: Failed, Status: "5.7.30"}}}, header, false, false},
		{"arrival in another zone", Report{Envelope: envelope(), Recipients: all[:2], Arrival: arrival.In(time.FixedZone("CET", 3600))}, []byte("Subject: plain\r\n"), true, false},
	}
	var b strings.Builder
	for _, c := range cases {
		fmt.Fprintf(&b, "=== %s\n%s", c.name, humanText(c.r, "mx.example.org", c.header, c.haveOriginal, c.full))
	}
	for _, a := range []Action{Failed, Delayed, Delivered, Relayed, Expanded} {
		en, de := subjects(a)
		fmt.Fprintf(&b, "=== subject %s\n%s\n%s\n", a, en, de)
	}
	golden := filepath.Join("testdata", "human.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) && i < len(wl); i++ {
			if gl[i] != wl[i] {
				t.Fatalf("differs from %s at line %d:\n got %q\nwant %q", golden, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("differs from %s in length: %d lines, want %d", golden, len(gl), len(wl))
	}
}
