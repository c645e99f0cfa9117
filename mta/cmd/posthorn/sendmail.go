package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/maildrop"
)

// sendmailOpts are the sendmail(1) flags we honour.
type sendmailOpts struct {
	from      string // -f
	fullName  string // -F
	useHeader bool   // -t
	ignoreDot bool   // -i, -oi
	notify    []string
	ret       string
	envid     string
	config    string // -C (posthorn config file)
	rcpts     []string
}

// parseSendmailArgs understands the flags that programs calling sendmail
// use (-t -f -F -i -oi, -N, -R, -V, -C), accepts and ignores the delivery
// mode and other -o/-b flags that make no sense here, and rejects the rest.
func parseSendmailArgs(args []string) (*sendmailOpts, error) {
	o := &sendmailOpts{config: os.Getenv("POSTHORN_CONFIG")}
	value := func(i *int, a, flag string) (string, error) {
		if len(a) > len(flag) {
			return a[len(flag):], nil
		}
		if *i+1 >= len(args) {
			return "", fmt.Errorf("%s needs a value", flag)
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		var err error
		switch {
		case a == "--":
			o.rcpts = append(o.rcpts, args[i+1:]...)
			i = len(args)
		case !strings.HasPrefix(a, "-") || a == "-":
			o.rcpts = append(o.rcpts, a)
		case a == "-t":
			o.useHeader = true
		case a == "-i", a == "-oi":
			o.ignoreDot = true
		case strings.HasPrefix(a, "-f"), strings.HasPrefix(a, "-r"):
			o.from, err = value(&i, a, a[:2])
		case strings.HasPrefix(a, "-F"):
			o.fullName, err = value(&i, a, "-F")
		case strings.HasPrefix(a, "-N"):
			var v string
			v, err = value(&i, a, "-N")
			for _, n := range strings.Split(strings.ToUpper(v), ",") {
				if n = strings.TrimSpace(n); n != "" {
					o.notify = append(o.notify, n)
				}
			}
		case strings.HasPrefix(a, "-R"):
			o.ret, err = value(&i, a, "-R")
			o.ret = strings.ToUpper(o.ret)
			if o.ret == "HDRS" || o.ret == "FULL" {
				break
			}
			err = fmt.Errorf("-R takes full or hdrs")
		case strings.HasPrefix(a, "-V"):
			o.envid, err = value(&i, a, "-V")
		case strings.HasPrefix(a, "-C"):
			o.config, err = value(&i, a, "-C")
		case strings.HasPrefix(a, "-o"), a == "-bm", a == "-v", strings.HasPrefix(a, "-B"), strings.HasPrefix(a, "-X"):
			if (a == "-oA" || a == "-X" || a == "-B") && i+1 < len(args) {
				i++
			}
		default:
			return nil, fmt.Errorf("unsupported option %s", a)
		}
		if err != nil {
			return nil, err
		}
	}
	return o, nil
}

func sendmailMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, err := parseSendmailArgs(args)
	if err != nil {
		fmt.Fprintln(stderr, "sendmail:", err)
		return 64 // EX_USAGE
	}
	cfg, err := loadConfig(o.config)
	if err != nil {
		fmt.Fprintln(stderr, "sendmail:", err)
		return 78 // EX_CONFIG
	}
	login := "nobody"
	if u, err := user.Current(); err == nil {
		login = u.Username
	}
	if o.from == "" {
		o.from = login + "@" + senderDomain(cfg.Hostname)
	}
	if o.from == "<>" {
		o.from = ""
	}
	msg, rcpts, err := prepareMessage(stdin, o, time.Now(), senderDomain(cfg.Hostname))
	if err != nil {
		fmt.Fprintln(stderr, "sendmail:", err)
		return 65 // EX_DATAERR
	}
	if len(rcpts) == 0 {
		fmt.Fprintln(stderr, "sendmail: no recipients")
		return 64
	}
	req := control.Request{From: o.from, To: rcpts, User: login, Notify: o.notify, Ret: o.ret, EnvID: o.envid}
	id, err := control.Submit(cfg.Control.Socket, req, bytes.NewReader(msg))
	if errors.Is(err, control.ErrUnreachable) && cfg.Queue.Maildrop != "" {
		// The daemon is down: leave the message in the drop directory,
		// durably; the daemon queues it when it starts.
		name, derr := maildrop.Write(cfg.Queue.Maildrop, req, bytes.NewReader(msg))
		if derr == nil {
			fmt.Fprintf(stderr, "sendmail: the daemon is not running or its socket is closed to this user; message left in %s as %s\n", cfg.Queue.Maildrop, name)
			return 0
		}
		fmt.Fprintln(stderr, "sendmail:", err)
		fmt.Fprintln(stderr, "sendmail: and the drop directory failed too:", derr)
		return 75 // EX_TEMPFAIL
	}
	if err != nil {
		fmt.Fprintln(stderr, "sendmail:", err)
		if strings.Contains(err.Error(), "no such user") {
			return 67 // EX_NOUSER
		}
		return 75 // EX_TEMPFAIL
	}
	fmt.Fprintf(stderr, "sendmail: queued as %s\n", id)
	return 0
}

// senderDomain is the domain of the default sender: the configured
// hostname, or, when that is the built-in "localhost", this machine's
// name as hostname(1) prints it.
func senderDomain(configured string) string {
	if configured != "" && configured != "localhost" {
		return configured
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// prepareMessage reads the message (a lone "." ends it unless -i), makes
// every line end in CRLF, takes recipients from To/Cc/Bcc with -t (and
// drops Bcc), and adds From, Date and Message-ID where missing.
func prepareMessage(r io.Reader, o *sendmailOpts, now time.Time, hostname string) ([]byte, []string, error) {
	br := bufio.NewReader(r)
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if line != "" || err == nil {
			line = strings.TrimRight(line, "\r\n")
			if !o.ignoreDot && line == "." {
				break
			}
			lines = append(lines, line)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
	}
	// Split header and body at the first empty line.
	split := len(lines)
	for i, l := range lines {
		if l == "" {
			split = i
			break
		}
		if !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") && !strings.Contains(l, ":") {
			split = i // no header at all: it is body text
			break
		}
	}
	type field struct{ name, raw string }
	var fields []field
	for _, l := range lines[:split] {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(fields) > 0 {
			fields[len(fields)-1].raw += "\r\n" + l
			continue
		}
		name, _, _ := strings.Cut(l, ":")
		fields = append(fields, field{strings.ToLower(strings.TrimSpace(name)), l})
	}
	rcpts := append([]string(nil), o.rcpts...)
	has := map[string]bool{}
	var out bytes.Buffer
	for _, f := range fields {
		has[f.name] = true
		if o.useHeader && (f.name == "to" || f.name == "cc" || f.name == "bcc") {
			_, v, _ := strings.Cut(strings.ReplaceAll(f.raw, "\r\n", ""), ":")
			list, err := mail.ParseAddressList(v)
			if err != nil {
				return nil, nil, fmt.Errorf("cannot parse %s header: %v", f.name, err)
			}
			for _, a := range list {
				rcpts = append(rcpts, a.Address)
			}
		}
		if f.name == "bcc" {
			continue
		}
		out.WriteString(f.raw + "\r\n")
	}
	var extra bytes.Buffer
	if !has["from"] {
		from := (&mail.Address{Name: o.fullName, Address: o.from}).String()
		if o.from == "" {
			from = "<>"
		}
		fmt.Fprintf(&extra, "From: %s\r\n", from)
	}
	if !has["date"] {
		fmt.Fprintf(&extra, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	if !has["message-id"] {
		var b [12]byte
		rand.Read(b[:])
		fmt.Fprintf(&extra, "Message-ID: <%s.%s@%s>\r\n", now.UTC().Format("20060102150405"), hex.EncodeToString(b[:]), hostname)
	}
	var msg bytes.Buffer
	msg.Write(out.Bytes())
	msg.Write(extra.Bytes())
	msg.WriteString("\r\n")
	body := lines[split:]
	if len(body) > 0 && body[0] == "" {
		body = body[1:]
	}
	for _, l := range body {
		msg.WriteString(l + "\r\n")
	}
	return msg.Bytes(), rcpts, nil
}
