// Package control is the daemon's local control socket: a Unix socket,
// one JSON request and one JSON response per connection, used by
// `posthorn queue …` (Postfix's postqueue/postsuper/qshape in one) while the
// daemon runs. Only local users who can open the socket file (mode 0600,
// owned by the daemon's user) can use it.
package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/posthorn/posthorn/queue"
)

// ErrUnreachable wraps the error of a client that could not connect to
// the daemon (not running, or no permission on the socket).
var ErrUnreachable = errors.New("daemon unreachable")

// Request is one control command.
type Request struct {
	Cmd string `json:"cmd"`
	ID  string `json:"id,omitempty"`
	// Body asks "show" for the whole message, not just its header.
	Body bool `json:"body,omitempty"`

	// For "submit" (posthorn sendmail): the envelope; the message follows
	// the request line on the connection until the client closes its side.
	From   string   `json:"from,omitempty"`
	To     []string `json:"to,omitempty"`
	User   string   `json:"user,omitempty"` // local user who submits
	Notify []string `json:"notify,omitempty"`
	Ret    string   `json:"ret,omitempty"`
	EnvID  string   `json:"envid,omitempty"`

	// Day is a UTC day, "2006-01-02" (tls-report).
	Day string `json:"day,omitempty"`
	// Args are the arguments of a command in Commands ("directory",
	// "preflight").
	Args json.RawMessage `json:"args,omitempty"`
}

// Response carries the result of a command.
type Response struct {
	Error    string            `json:"error,omitempty"`
	Messages []*queue.Envelope `json:"messages,omitempty"`
	Message  *queue.Envelope   `json:"message,omitempty"`
	Headers  string            `json:"headers,omitempty"`
	Summary  *Summary          `json:"summary,omitempty"`
	Done     int               `json:"done,omitempty"`
	Plugins  json.RawMessage   `json:"plugins,omitempty"`
	QueueID  string            `json:"queue_id,omitempty"`
	// Data is the answer of a command in Commands.
	Data json.RawMessage `json:"data,omitempty"`
}

// Queue is what the control socket needs of the spool.
type Queue interface {
	List() []*queue.Envelope
	Get(id string) (*queue.Envelope, error)
	Body(id string) (io.ReadCloser, error)
	Hold(id string) error
	Unhold(id string) error
	Delete(id string) error
	Flush(id string) error
	Requeue(id string) error
}

// Server answers requests on a Unix socket.
type Server struct {
	q    Queue
	ln   net.Listener
	log  *slog.Logger
	now  func() time.Time
	path string
	// Extra answers commands beyond the queue ones (e.g. "plugins").
	Extra map[string]func() (json.RawMessage, error)
	// Submit queues a message for "submit"; nil refuses submissions.
	Submit func(req Request, body io.Reader) (string, error)
	// Commands answer further commands that take the request (e.g.
	// "tls-report"); the answer goes into Response.Data.
	Commands map[string]func(Request) (json.RawMessage, error)
}

// Listen creates the socket at path (replacing a stale one).
func Listen(path string, q Queue, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use: is another posthorn running?", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return &Server{q: q, ln: ln, log: log, now: time.Now, path: path, Extra: map[string]func() (json.RawMessage, error){}}, nil
}

// Serve answers until Close.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go s.handle(c)
	}
}

// Close removes the socket.
func (s *Server) Close() error {
	err := s.ln.Close()
	os.Remove(s.path)
	return err
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	br := bufio.NewReaderSize(c, 64<<10)
	line, err := br.ReadSlice('\n')
	var req Request
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	if err != nil {
		json.NewEncoder(c).Encode(Response{Error: "bad request: " + err.Error()})
		return
	}
	var resp Response
	if req.Cmd == "submit" {
		resp = s.submit(req, br)
	} else {
		resp = s.do(req)
	}
	if resp.Error == "" {
		s.log.Info("control command", "cmd", req.Cmd, "queue_id", req.ID)
	}
	json.NewEncoder(c).Encode(resp)
}

// New returns a server for q without a socket: its Do answers requests
// for other front ends (the admin API), the same way as over the socket.
func New(q Queue, log *slog.Logger) *Server {
	return &Server{q: q, log: log, now: time.Now, Extra: map[string]func() (json.RawMessage, error){}}
}

// Do answers one request, as over the socket.
func (s *Server) Do(req Request) Response { return s.do(req) }

func (s *Server) do(req Request) Response {
	errResp := func(err error) Response {
		if errors.Is(err, queue.ErrNotFound) {
			return Response{Error: fmt.Sprintf("%s: no such message in the queue", req.ID)}
		}
		return Response{Error: err.Error()}
	}
	needID := func() error {
		if req.ID == "" {
			return errors.New(req.Cmd + " needs a queue ID")
		}
		return nil
	}
	switch req.Cmd {
	case "list":
		return Response{Messages: s.q.List()}
	case "show":
		if err := needID(); err != nil {
			return errResp(err)
		}
		env, err := s.q.Get(req.ID)
		if err != nil {
			return errResp(err)
		}
		var text string
		if req.Body {
			text, err = s.content(req.ID)
		} else {
			text, err = s.headers(req.ID)
		}
		if err != nil {
			return errResp(err)
		}
		return Response{Message: env, Headers: text}
	case "summary":
		sum := Summarize(s.q.List(), s.now())
		return Response{Summary: &sum}
	case "flush":
		if err := s.q.Flush(req.ID); err != nil {
			return errResp(err)
		}
		return Response{Done: 1}
	case "hold", "release", "requeue", "delete":
		if err := needID(); err != nil {
			return errResp(err)
		}
		var err error
		switch req.Cmd {
		case "hold":
			err = s.q.Hold(req.ID)
		case "release":
			err = s.q.Unhold(req.ID)
		case "requeue":
			err = s.q.Requeue(req.ID)
		case "delete":
			err = s.q.Delete(req.ID)
		}
		if err != nil {
			return errResp(err)
		}
		return Response{Done: 1}
	}
	if f, ok := s.Extra[req.Cmd]; ok {
		raw, err := f()
		if err != nil {
			return errResp(err)
		}
		return Response{Plugins: raw}
	}
	if f, ok := s.Commands[req.Cmd]; ok {
		raw, err := f(req)
		if err != nil {
			return errResp(err)
		}
		return Response{Data: raw}
	}
	return Response{Error: fmt.Sprintf("unknown command %q", req.Cmd)}
}

func (s *Server) submit(req Request, body io.Reader) Response {
	if s.Submit == nil {
		return Response{Error: "submission is not enabled"}
	}
	id, err := s.Submit(req, body)
	if err != nil {
		return Response{Error: err.Error()}
	}
	return Response{QueueID: id}
}

// maxShowBody bounds what "show --body" returns.
const maxShowBody = 1 << 20

// content returns the message (up to maxShowBody bytes), line endings LF.
func (s *Server) content(id string) (string, error) {
	rc, err := s.q.Body(id)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxShowBody+1))
	if err != nil {
		return "", err
	}
	text := strings.ReplaceAll(string(b), "\r\n", "\n")
	if len(b) > maxShowBody {
		text = text[:maxShowBody] + "\n[... truncated at 1 MiB ...]\n"
	}
	return text, nil
}

// headers returns the message header (up to 64 KiB).
func (s *Server) headers(id string) (string, error) {
	rc, err := s.q.Body(id)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	br := bufio.NewReader(io.LimitReader(rc, 64<<10))
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if strings.TrimRight(line, "\r\n") == "" {
			break
		}
		b.WriteString(strings.TrimRight(line, "\r\n") + "\n")
		if err != nil {
			break
		}
	}
	return b.String(), nil
}

// Call sends one request to the daemon's socket at path.
func Call(path string, req Request) (*Response, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the daemon at %s (is `posthorn serve` running?): %w", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	return readResponse(c)
}

// Submit sends a message to the daemon for queueing and returns its queue
// ID, which the daemon gives only once the message is on disk.
func Submit(path string, req Request, body io.Reader) (string, error) {
	req.Cmd = "submit"
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("cannot reach the daemon at %s (is `posthorn serve` running?): %w: %w", path, ErrUnreachable, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return "", err
	}
	_, copyErr := io.Copy(c, body)
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	// The daemon may refuse (say, an unknown recipient) before reading
	// the message: its answer then explains the broken pipe.
	resp, err := readResponse(c)
	if err == nil && copyErr != nil {
		return "", copyErr
	}
	if err != nil {
		return "", err
	}
	return resp.QueueID, nil
}

func readResponse(c net.Conn) (*Response, error) {
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("bad answer from daemon: %w", err)
	}
	if resp.Error != "" {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}

// AgeBuckets are the summary's age columns, qshape style.
var AgeBuckets = []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute,
	80 * time.Minute, 160 * time.Minute, 320 * time.Minute, 640 * time.Minute, 1280 * time.Minute}

// Summary counts queued recipients per state and per destination domain.
type Summary struct {
	Messages int            `json:"messages"`
	States   map[string]int `json:"states"` // active, deferred, held
	Domains  []DomainRow    `json:"domains"`
}

// DomainRow is one destination domain: recipients in total, by state and
// by age (index i counts those younger than AgeBuckets[i]; the last slot
// is older than all).
type DomainRow struct {
	Domain string         `json:"domain"`
	Total  int            `json:"total"`
	States map[string]int `json:"states"`
	Ages   []int          `json:"ages"`
}

// StateOf names a pending recipient's state as operators know it.
func StateOf(env *queue.Envelope, r *queue.Recipient) string {
	switch {
	case env.Held:
		return "held"
	case r.Attempts > 0:
		return "deferred"
	}
	return "active"
}

// Summarize builds the summary of pending recipients in msgs.
func Summarize(msgs []*queue.Envelope, now time.Time) Summary {
	sum := Summary{Messages: len(msgs), States: map[string]int{}}
	rows := map[string]*DomainRow{}
	for _, env := range msgs {
		age := now.Sub(env.Received)
		b := len(AgeBuckets)
		for i, lim := range AgeBuckets {
			if age < lim {
				b = i
				break
			}
		}
		for _, r := range env.Recipients {
			if r.State != queue.Pending {
				continue
			}
			st := StateOf(env, r)
			sum.States[st]++
			dom := strings.ToLower(r.Addr[strings.LastIndexByte(r.Addr, '@')+1:])
			row := rows[dom]
			if row == nil {
				row = &DomainRow{Domain: dom, States: map[string]int{}, Ages: make([]int, len(AgeBuckets)+1)}
				rows[dom] = row
			}
			row.Total++
			row.States[st]++
			row.Ages[b]++
		}
	}
	for _, r := range rows {
		sum.Domains = append(sum.Domains, *r)
	}
	sort.Slice(sum.Domains, func(i, j int) bool {
		if sum.Domains[i].Total != sum.Domains[j].Total {
			return sum.Domains[i].Total > sum.Domains[j].Total
		}
		return sum.Domains[i].Domain < sum.Domains[j].Domain
	})
	return sum
}
