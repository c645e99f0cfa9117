// Package lmtp is an LMTP client (RFC 2033) for handing messages to a local
// mail store such as Dovecot or Cyrus.
//
// Unlike SMTP, LMTP answers the end of DATA once per accepted recipient, so
// every recipient gets its own result. Deliver speaks LHLO, MAIL, RCPT and
// DATA over TCP or a unix domain socket, using the LMTP support of
// github.com/emersion/go-smtp, and reports one Result per recipient with its
// reply code and RFC 3463 enhanced status code.
package lmtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/posthorn/posthorn/mta/internal/envaddr"
)

// DefaultTimeout limits each command when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// Options tune a delivery.
type Options struct {
	// LHLO is the name the client introduces itself with; "localhost"
	// when empty.
	LHLO string
	// EightBit says the message is 8BITMIME; BODY=8BITMIME is sent when
	// the server offers it.
	EightBit bool
	// SMTPUTF8 says the message needs SMTPUTF8 (RFC 6531). If the server
	// does not offer it, every recipient fails with 5.6.7.
	SMTPUTF8 bool
	// Timeout limits each command and the transfer of the message
	// (DefaultTimeout when zero). The deadline of ctx always applies too.
	Timeout time.Duration
	// Dial connects to the server ("tcp" HOST:PORT or "unix" path); nil
	// means a plain net.Dialer. The MTA passes one that resolves HOST
	// through its configured resolver and binds the source address.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Result is the outcome for one recipient.
type Result struct {
	Addr string
	// Code is the reply code (250, 452, 550, ...).
	Code int
	// Enhanced is the RFC 3463 status code ("2.0.0"), "" if the server
	// gave none.
	Enhanced string
	// Text is the reply text without the codes.
	Text string
	// OK is true when the message was delivered to Addr.
	OK bool
	// Temporary is true when a failure is worth retrying (4xx).
	Temporary bool
}

// Deliver sends msg from the envelope sender from to rcpts over LMTP to
// target ("tcp:HOST:PORT" or "unix:/path") and returns one Result per
// recipient, in the order of rcpts.
//
// If the connection or the protocol fails before any recipient has a final
// result, Deliver returns an error and the caller should retry all
// recipients later. A recipient rejected at RCPT gets that reply as its
// result and the others carry on. If the connection breaks after some
// recipients have final results, the remaining recipients get a temporary
// result (451 4.4.2) and the error is nil, so that final results are not
// lost.
func Deliver(ctx context.Context, target string, from string, rcpts []string, opts Options, msg io.Reader) ([]Result, error) {
	if len(rcpts) == 0 {
		return nil, errors.New("lmtp: no recipients")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	network, addr, err := parseTarget(target)
	if err != nil {
		return nil, err
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < timeout {
			timeout = left
		}
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}

	dctx, cancel := context.WithTimeout(ctx, timeout)
	dial := opts.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(dctx, network, addr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("lmtp: %w", err)
	}
	// Closing the connection unblocks whatever the client is doing when
	// ctx ends.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	c.CommandTimeout = timeout
	c.SubmissionTimeout = timeout

	d := &delivery{ctx: ctx, rcpts: rcpts, results: make([]*Result, len(rcpts))}
	err = d.run(c, conn, from, opts, msg, timeout)
	if err == nil {
		c.Quit()
	}
	return d.finish(err)
}

type delivery struct {
	ctx     context.Context
	rcpts   []string
	results []*Result
	final   int // how many results are set
}

func (d *delivery) set(i int, r Result) {
	r.Addr = d.rcpts[i]
	if d.results[i] == nil {
		d.final++
	}
	d.results[i] = &r
}

func (d *delivery) run(c *smtp.Client, conn net.Conn, from string, opts Options, msg io.Reader, timeout time.Duration) error {
	lhlo := opts.LHLO
	if lhlo == "" {
		lhlo = "localhost"
	}
	if err := c.Hello(lhlo); err != nil {
		return d.wrap("LHLO", err)
	}
	if opts.SMTPUTF8 {
		if ok, _ := c.Extension("SMTPUTF8"); !ok {
			for i := range d.rcpts {
				d.set(i, Result{Code: 553, Enhanced: "5.6.7", Text: "LMTP server does not support SMTPUTF8"})
			}
			return nil
		}
	}
	mopts := &smtp.MailOptions{UTF8: opts.SMTPUTF8}
	if opts.EightBit {
		mopts.Body = smtp.Body8BitMIME
	}
	if err := c.Mail(wireAddr(from), mopts); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			// The sender was refused: that answer holds for everyone.
			for i := range d.rcpts {
				d.set(i, fromSMTPError(se))
			}
			c.Reset()
			return nil
		}
		return d.wrap("MAIL", err)
	}

	// Each distinct address is sent once; duplicates share its result.
	first := map[string]int{}
	var accepted []int
	for i, rcpt := range d.rcpts {
		if _, dup := first[rcpt]; dup {
			continue
		}
		first[rcpt] = i
		if err := c.Rcpt(wireAddr(rcpt), nil); err != nil {
			var se *smtp.SMTPError
			if errors.As(err, &se) {
				d.set(i, fromSMTPError(se))
				continue
			}
			return d.wrap("RCPT", err)
		}
		accepted = append(accepted, i)
	}
	defer d.copyDuplicates(first)
	if len(accepted) == 0 {
		c.Reset()
		return nil
	}

	w, err := c.Data()
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			for _, i := range accepted {
				d.set(i, fromSMTPError(se))
			}
			return nil
		}
		return d.wrap("DATA", err)
	}
	conn.SetDeadline(time.Now().Add(timeout))
	if msg != nil {
		if _, err := io.Copy(w, msg); err != nil {
			return d.wrap("DATA", err)
		}
	}
	resp, err := w.CloseWithLMTPResponse()
	var lerr smtp.LMTPDataError
	if err != nil && !errors.As(err, &lerr) {
		// A broken connection: keep what did arrive.
		d.collect(accepted, resp, nil)
		return d.wrap("end of DATA", err)
	}
	d.collect(accepted, resp, lerr)
	return nil
}

func (d *delivery) collect(accepted []int, resp map[string]*smtp.DataResponse, lerr smtp.LMTPDataError) {
	for _, i := range accepted {
		rcpt := d.rcpts[i]
		if r, ok := resp[rcpt]; ok && r != nil {
			res := Result{Code: 250, OK: true}
			res.Enhanced, res.Text = splitEnhanced(r.StatusText)
			d.set(i, res)
		} else if se, ok := lerr[rcpt]; ok && se != nil {
			d.set(i, fromSMTPError(se))
		}
	}
}

func (d *delivery) copyDuplicates(first map[string]int) {
	for i, rcpt := range d.rcpts {
		j := first[rcpt]
		if j != i && d.results[j] != nil {
			d.set(i, *d.results[j])
		}
	}
}

func (d *delivery) wrap(stage string, err error) error {
	if cerr := d.ctx.Err(); cerr != nil {
		return fmt.Errorf("lmtp: %s: %w (%v)", stage, cerr, err)
	}
	return fmt.Errorf("lmtp: %s: %w", stage, err)
}

// finish turns the collected results into the answer of Deliver.
func (d *delivery) finish(err error) ([]Result, error) {
	if err != nil && d.final == 0 {
		return nil, err
	}
	out := make([]Result, len(d.rcpts))
	for i, r := range d.results {
		if r != nil {
			out[i] = *r
			continue
		}
		text := "no status from LMTP server"
		if err != nil {
			text = "connection lost: " + oneLine(err.Error())
		}
		out[i] = Result{Addr: d.rcpts[i], Code: 451, Enhanced: "4.4.2", Text: text, Temporary: true}
	}
	return out, nil
}

func fromSMTPError(se *smtp.SMTPError) Result {
	r := Result{Code: se.Code, Text: se.Message}
	ec := se.EnhancedCode
	if ec != smtp.EnhancedCodeNotSet && ec != smtp.NoEnhancedCode && ec[0] > 0 {
		r.Enhanced = fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
	} else {
		r.Enhanced, r.Text = splitEnhanced(se.Message)
	}
	switch se.Code / 100 {
	case 2:
		r.OK = true
	case 5:
	default:
		r.Temporary = true
	}
	return r
}

// splitEnhanced splits "2.1.5 Ok" into "2.1.5" and "Ok".
func splitEnhanced(s string) (enh, text string) {
	code, rest, _ := strings.Cut(s, " ")
	parts := strings.Split(code, ".")
	if len(parts) != 3 {
		return "", s
	}
	for k, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || (k == 0 && (n < 2 || n > 5)) {
			return "", s
		}
	}
	return code, rest
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// parseTarget accepts "tcp:HOST:PORT", "unix:/path", and for convenience
// "HOST:PORT" and "/path".
func parseTarget(t string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(t, "tcp:"):
		network, addr = "tcp", t[len("tcp:"):]
	case strings.HasPrefix(t, "unix:"):
		network, addr = "unix", t[len("unix:"):]
	case strings.HasPrefix(t, "/"):
		network, addr = "unix", t
	default:
		network, addr = "tcp", t
	}
	if addr == "" {
		return "", "", fmt.Errorf("lmtp: invalid target %q", t)
	}
	if network == "tcp" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", "", fmt.Errorf("lmtp: invalid target %q: %v", t, err)
		}
	}
	return network, addr, nil
}

// wireAddr quotes a local part that is not a dot-atom (RFC 5321 §4.1.2),
// so that an address never becomes a parameter at the LMTP server; smtpd
// refuses at MAIL and RCPT what cannot be written this way.
func wireAddr(addr string) string {
	if w, err := envaddr.Format(addr); err == nil {
		return w
	}
	return addr
}
