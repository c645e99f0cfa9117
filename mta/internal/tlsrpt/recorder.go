package tlsrpt

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/sdk/sqldb"
)

// Attempt is the result of one delivery attempt (one SMTP session, or the
// failure to set one up) to an MX host of a domain.
type Attempt struct {
	Time time.Time `json:"t"`
	// Domain is the report domain: the recipient domain, whose
	// _smtp._tls record says where reports go.
	Domain string `json:"d"`
	// The policy the session was held to: type, its text (one string per
	// line: MTA-STS policy lines, or TLSA records in presentation
	// format), the domain it belongs to (empty: Domain) and, for
	// MTA-STS, the MX patterns.
	PolicyType   PolicyType `json:"pt"`
	PolicyString []string   `json:"ps,omitempty"`
	PolicyDomain string     `json:"pd,omitempty"`
	MXHost       []string   `json:"mx,omitempty"`
	// Success: a TLS session that satisfied the policy. Otherwise Result
	// says what failed.
	Success bool       `json:"ok,omitempty"`
	Result  ResultType `json:"r,omitempty"`
	// Where: our address, the MX host's name, EHLO name and address.
	SendingMTAIP        string `json:"sip,omitempty"`
	ReceivingMXHostname string `json:"rmx,omitempty"`
	ReceivingMXHelo     string `json:"rhelo,omitempty"`
	ReceivingIP         string `json:"rip,omitempty"`
	// Free text and a machine-readable code for the failure (e.g. an
	// OpenSSL-style verify error name).
	AdditionalInfo    string `json:"info,omitempty"`
	FailureReasonCode string `json:"code,omitempty"`
}

// Options configure a Recorder.
type Options struct {
	// Dir keeps one append-only file of attempts per day (UTC), and the
	// record of sent reports. Required (without DB).
	Dir string
	// DB, when set, is the PostgreSQL database the nodes of a cluster
	// share ([database]): attempts and sent reports are kept there
	// instead of Dir, so one daily report per domain covers every node,
	// and one node at a time sends (an advisory lock).
	DB *sql.DB
	// OrganizationName and ContactInfo go into every report (RFC 8460
	// section 4.4); Submitter is our host name (the report's
	// "Submitter"); From is the sender of mailed reports (default
	// "postmaster@" + Submitter).
	OrganizationName string
	ContactInfo      string
	Submitter        string
	From             string
	// For DailyLoop: the resolver for _smtp._tls records, submit hands a
	// mailed report to our queue, HTTPClient posts to https: URIs (nil:
	// a client with a one-minute timeout).
	Resolver   Resolver
	Submit     func(to string, msg []byte) error
	HTTPClient *http.Client
	// KeepDays: attempt files older than this many days are removed by
	// DailyLoop (default 7).
	KeepDays int
	Logger   *slog.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Recorder records delivery attempts per report domain on disk and builds
// and sends daily reports. It is safe for concurrent use.
type Recorder struct {
	o   Options
	log *slog.Logger

	mu     sync.Mutex
	day    string
	f      *os.File
	sendMu sync.Mutex
}

// New makes a Recorder; Dir is created if needed.
func New(o Options) (*Recorder, error) {
	if o.Dir == "" && o.DB == nil {
		return nil, errors.New("tlsrpt: no state directory")
	}
	if o.Submitter == "" {
		return nil, errors.New("tlsrpt: no submitter (host name)")
	}
	if o.DB != nil {
		if err := sqldb.Migrate(context.Background(), o.DB, sqldb.Postgres, "tlsrpt", schema); err != nil {
			return nil, fmt.Errorf("tlsrpt: %w", err)
		}
	} else if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("tlsrpt: %w", err)
	}
	if o.From == "" {
		o.From = "postmaster@" + o.Submitter
	}
	if o.OrganizationName == "" {
		o.OrganizationName = o.Submitter
	}
	if o.ContactInfo == "" {
		o.ContactInfo = o.From
	}
	if o.KeepDays <= 0 {
		o.KeepDays = 7
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Recorder{o: o, log: log}, nil
}

// Close closes the current day's file.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

func dayString(t time.Time) string { return t.UTC().Format("2006-01-02") }

func (r *Recorder) dayFile(day string) string { return filepath.Join(r.o.Dir, day+".jsonl") }

// Record appends one attempt to the day's file (the day of a.Time, now if
// zero). A line is written with one write call on a file opened for
// appending, so concurrent records and crashes never interleave lines; a
// torn last line is skipped when reading.
func (r *Recorder) Record(a Attempt) error {
	if a.Time.IsZero() {
		a.Time = r.o.Now()
	}
	a.Time = a.Time.UTC()
	a.Domain = strings.ToLower(strings.TrimSuffix(a.Domain, "."))
	if a.Domain == "" {
		return errors.New("tlsrpt: attempt without a domain")
	}
	if a.PolicyType == "" {
		a.PolicyType = PolicyNone
	}
	if a.Success {
		a.Result = ""
	} else if a.Result == "" {
		a.Result = ValidationFailure
	}
	line, err := json.Marshal(a)
	if err != nil {
		return err
	}
	day := dayString(a.Time)
	if r.o.DB != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := r.o.DB.ExecContext(ctx, `INSERT INTO tlsrpt_attempts (day, domain, attempt) VALUES ($1, $2, $3)`, day, a.Domain, string(line))
		return err
	}
	line = append(line, '\n')
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.f
	if day != r.day || f == nil {
		if day < r.day && r.f != nil {
			// A late record for an earlier day: its own file, not kept open.
			of, err := os.OpenFile(r.dayFile(day), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
			if err != nil {
				return err
			}
			defer of.Close()
			_, err = of.Write(line)
			return err
		}
		if r.f != nil {
			r.f.Close()
			r.f = nil
		}
		nf, err := os.OpenFile(r.dayFile(day), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return err
		}
		r.f, r.day, f = nf, day, nf
	}
	_, err = f.Write(line)
	return err
}

// read calls fn for each attempt recorded on day.
func (r *Recorder) read(day time.Time, fn func(*Attempt)) error {
	if r.o.DB != nil {
		return r.readDB(day, fn)
	}
	f, err := os.Open(r.dayFile(dayString(day)))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var a Attempt
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil || a.Domain == "" {
			continue // a torn line after a crash
		}
		fn(&a)
	}
	return sc.Err()
}

// Domains returns the report domains with attempts on day (UTC), sorted.
func (r *Recorder) Domains(day time.Time) ([]string, error) {
	seen := map[string]bool{}
	err := r.read(day, func(a *Attempt) { seen[a.Domain] = true })
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	slices.Sort(out)
	return out, err
}

// Report builds the report for domain over day (the UTC day containing
// day, 00:00:00 to 23:59:59). It has no policies if nothing was recorded.
func (r *Recorder) Report(day time.Time, domain string) (*Report, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	start := day.UTC().Truncate(24 * time.Hour)
	rep := &Report{
		OrganizationName: r.o.OrganizationName,
		DateRange:        DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
		ContactInfo:      r.o.ContactInfo,
		ReportID:         start.Format("20060102") + "." + domain + "@" + r.o.Submitter,
		Policies:         []PolicyResult{},
		Domain:           domain,
		Submitter:        r.o.Submitter,
		From:             r.o.From,
	}
	type detailKey struct {
		rt                               ResultType
		sip, rmx, rhelo, rip, info, code string
	}
	type agg struct {
		res     PolicyResult
		details map[detailKey]int
	}
	byPolicy := map[string]*agg{}
	var order []string
	err := r.read(day, func(a *Attempt) {
		if a.Domain != domain {
			return
		}
		pd := PolicyDesc{PolicyType: a.PolicyType, PolicyString: a.PolicyString, PolicyDomain: a.PolicyDomain, MXHost: a.MXHost}
		if pd.PolicyDomain == "" {
			pd.PolicyDomain = a.Domain
		}
		if pd.PolicyType == PolicyNone {
			pd.PolicyString, pd.MXHost = nil, nil
		}
		kb, _ := json.Marshal(pd)
		k := string(kb)
		g := byPolicy[k]
		if g == nil {
			g = &agg{res: PolicyResult{Policy: pd}, details: map[detailKey]int{}}
			byPolicy[k] = g
			order = append(order, k)
		}
		if a.Success {
			g.res.Summary.TotalSuccessful++
			return
		}
		g.res.Summary.TotalFailure++
		dk := detailKey{a.Result, a.SendingMTAIP, a.ReceivingMXHostname, a.ReceivingMXHelo, a.ReceivingIP, a.AdditionalInfo, a.FailureReasonCode}
		i, ok := g.details[dk]
		if !ok {
			i = len(g.res.FailureDetails)
			g.details[dk] = i
			g.res.FailureDetails = append(g.res.FailureDetails, FailureDetail{ResultType: a.Result, SendingMTAIP: a.SendingMTAIP,
				ReceivingMXHostname: a.ReceivingMXHostname, ReceivingMXHelo: a.ReceivingMXHelo, ReceivingIP: a.ReceivingIP,
				AdditionalInformation: a.AdditionalInfo, FailureReasonCode: a.FailureReasonCode})
		}
		g.res.FailureDetails[i].FailedSessionCount++
	})
	if err != nil {
		return nil, err
	}
	for _, k := range order {
		rep.Policies = append(rep.Policies, byPolicy[k].res)
	}
	return rep, nil
}
