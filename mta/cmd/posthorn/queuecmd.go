package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/queue"
)

func queueMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("queue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	sub, rest := rest[0], rest[1:]
	asJSON, withBody := false, false
	var pos []string
	for _, a := range rest {
		switch a {
		case "--json", "-json":
			asJSON = true
		case "--body", "-body":
			withBody = true
		default:
			pos = append(pos, a)
		}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	sock := cfg.Control.Socket
	req := control.Request{Cmd: sub, Body: withBody && sub == "show"}
	switch sub {
	case "list", "summary":
	case "flush":
		if len(pos) > 1 {
			fmt.Fprintln(stderr, "usage: posthorn queue flush [ID]")
			return 2
		}
		if len(pos) == 1 {
			req.ID = pos[0]
		}
	case "show", "hold", "release", "requeue", "delete":
		if len(pos) != 1 {
			fmt.Fprintf(stderr, "usage: posthorn queue %s ID\n", sub)
			return 2
		}
		req.ID = pos[0]
	default:
		fmt.Fprintf(stderr, "posthorn: unknown queue command %q\n", sub)
		return 2
	}
	resp, err := control.Call(sock, req)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		switch sub {
		case "list":
			if resp.Messages == nil {
				resp.Messages = []*queue.Envelope{}
			}
			enc.Encode(resp.Messages)
		case "summary":
			enc.Encode(resp.Summary)
		default:
			enc.Encode(resp)
		}
		return 0
	}
	now := time.Now()
	switch sub {
	case "list":
		printList(stdout, resp.Messages, now)
	case "show":
		printShow(stdout, resp.Message, resp.Headers, withBody)
	case "summary":
		printSummary(stdout, resp.Summary)
	default:
		what := req.ID
		if what == "" {
			what = "all messages"
		}
		fmt.Fprintf(stdout, "%s: %s\n", sub, what)
	}
	return 0
}

// printList prints the queue like postqueue -p: one block a message.
func printList(w io.Writer, msgs []*queue.Envelope, now time.Time) {
	if len(msgs) == 0 {
		fmt.Fprintln(w, "Mail queue is empty")
		return
	}
	n := 0
	for _, m := range msgs {
		flag := ""
		if m.Held {
			flag = "!"
		}
		from := m.From
		if from == "" {
			from = "MAILER-DAEMON"
		}
		fmt.Fprintf(w, "%-18s %8d %s  %s\n", m.ID+flag, m.Size, m.Received.Local().Format("Mon Jan _2 15:04:05"), from)
		for _, r := range m.Recipients {
			if r.State != queue.Pending {
				continue
			}
			n++
			state := control.StateOf(m, r)
			if r.Diagnostic != "" {
				fmt.Fprintf(w, "    (%s, %d attempts: %s)\n", state, r.Attempts, oneLine(r.Diagnostic, 110))
			}
			next := ""
			if !r.NextAttempt.IsZero() && r.NextAttempt.After(now) {
				next = " next attempt in " + r.NextAttempt.Sub(now).Round(time.Second).String()
			}
			fmt.Fprintf(w, "                                         %s [%s%s]\n", r.Addr, state, next)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "-- %d message(s), %d recipient(s) pending\n", len(msgs), n)
}

func printShow(w io.Writer, m *queue.Envelope, headers string, withBody bool) {
	if m == nil {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", m.ID)
	fmt.Fprintf(tw, "received:\t%s\n", m.Received.Local().Format(time.RFC1123Z))
	fmt.Fprintf(tw, "size:\t%d\n", m.Size)
	fmt.Fprintf(tw, "from:\t<%s>\n", m.From)
	if m.Held {
		fmt.Fprintf(tw, "held:\tyes\n")
	}
	for _, kv := range [][2]string{{"client", m.ClientAddr}, {"helo", m.ClientHelo}, {"auth user", m.AuthUser},
		{"ret", m.Ret}, {"envid", m.EnvID}, {"body", m.BodyType}} {
		if kv[1] != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
		}
	}
	if m.SMTPUTF8 {
		fmt.Fprintf(tw, "smtputf8:\tyes\n")
	}
	if m.RequireTLS {
		fmt.Fprintf(tw, "requiretls:\tyes\n")
	}
	keys := make([]string, 0, len(m.Attrs))
	for k := range m.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "attr %s:\t%s\n", k, m.Attrs[k])
	}
	tw.Flush()
	fmt.Fprintln(w, "recipients:")
	for _, r := range m.Recipients {
		fmt.Fprintf(w, "  %s  %s  attempts=%d", r.Addr, r.State, r.Attempts)
		if r.Status != "" {
			fmt.Fprintf(w, "  status=%s", r.Status)
		}
		if !r.NextAttempt.IsZero() && r.State == queue.Pending {
			fmt.Fprintf(w, "  next=%s", r.NextAttempt.Local().Format(time.RFC3339))
		}
		fmt.Fprintln(w)
		if r.Diagnostic != "" {
			fmt.Fprintf(w, "      %s\n", r.Diagnostic)
		}
	}
	if withBody {
		// The whole message, as Postfix's postcat -q shows it.
		fmt.Fprintln(w, "message:")
		fmt.Fprint(w, headers)
		return
	}
	fmt.Fprintln(w, "headers:")
	for _, l := range strings.Split(strings.TrimRight(headers, "\n"), "\n") {
		fmt.Fprintf(w, "  %s\n", l)
	}
}

// printSummary prints a qshape-style table: domains by age of the message.
func printSummary(w io.Writer, s *control.Summary) {
	if s == nil {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "domain\ttotal\tactive\tdeferred\theld\t")
	for _, b := range control.AgeBuckets {
		fmt.Fprintf(tw, "<%s\t", shortDur(b))
	}
	fmt.Fprintf(tw, "older\t\n")
	fmt.Fprintf(tw, "TOTAL\t%d\t%d\t%d\t%d\t", s.States["active"]+s.States["deferred"]+s.States["held"],
		s.States["active"], s.States["deferred"], s.States["held"])
	totals := make([]int, len(control.AgeBuckets)+1)
	for _, d := range s.Domains {
		for i, n := range d.Ages {
			totals[i] += n
		}
	}
	for _, n := range totals {
		fmt.Fprintf(tw, "%d\t", n)
	}
	fmt.Fprintln(tw)
	for _, d := range s.Domains {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t", d.Domain, d.Total, d.States["active"], d.States["deferred"], d.States["held"])
		for _, n := range d.Ages {
			fmt.Fprintf(tw, "%d\t", n)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d message(s)\n", s.Messages)
}

func shortDur(d time.Duration) string {
	if d < time.Hour {
		return fmt.Sprintf("%dm", int(d.Minutes()))
	}
	return fmt.Sprintf("%dh", int(d.Hours()))
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	return s
}
