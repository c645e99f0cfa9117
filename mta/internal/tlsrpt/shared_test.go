package tlsrpt

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/mta/internal/database"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	"github.com/posthorn/posthorn/testbed/pgtest"
)

// TestSharedNodes: two nodes record into one real PostgreSQL; the daily
// report of a domain covers both, equals what one node with every
// attempt would report, and goes out once although both nodes try to
// send it at the same time, twice.
func TestSharedNodes(t *testing.T) {
	pg := pgtest.Start(t)
	cfg := pg.NewDatabase(t)
	dns, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	var mu sync.Mutex
	posts, mails := 0, 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		posts++
		mu.Unlock()
	}))
	defer srv.Close()
	dns.Zone("example.org", dnsserver.Insecure).TXT("_smtp._tls", "v=TLSRPTv1; rua=mailto:tlsrpt@example.org")
	dns.Zone("other.example", dnsserver.Insecure).TXT("_smtp._tls.other.example", "v=TLSRPTv1; rua="+srv.URL+"/r")
	res, _ := resolver.New(resolver.Options{Server: dns.Addr(), Timeout: time.Second})

	node := func(name string) *Recorder {
		db, _, err := database.OpenPostgres(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return newRecorder(t, "", func(o *Options) {
			o.DB, o.Submitter = db, name
			o.Resolver, o.HTTPClient = res, srv.Client()
			o.Submit = func(to string, msg []byte) error {
				time.Sleep(20 * time.Millisecond) // keep the lock a while
				mu.Lock()
				mails++
				mu.Unlock()
				return nil
			}
		})
	}
	a, b := node("mx-a.sender.example"), node("mx-b.sender.example")
	recordDay(t, a)
	recordDay(t, b)
	one := newRecorder(t, t.TempDir())
	recordDay(t, one)
	recordDay(t, one)
	for _, d := range []string{"example.org", "other.example"} {
		ra, err := a.Report(day0, d)
		if err != nil {
			t.Fatal(err)
		}
		rb, _ := b.Report(day0, d)
		ro, _ := one.Report(day0, d)
		ja, jb, jo := canonical(ra), canonical(rb), canonical(ro)
		if string(ja) != string(jo) || string(jb) != string(jo) {
			t.Fatalf("%s: node a reports\n%s\nnode b\n%s\none node with every attempt\n%s", d, ja, jb, jo)
		}
	}
	var wg sync.WaitGroup
	for range 2 {
		for _, r := range []*Recorder{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := r.SendDay(ctx, day0); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	if mails != 1 || posts != 1 {
		t.Fatalf("sent %d mails and %d posts, want one report per domain", mails, posts)
	}
	// Pruning (KeepDays after day0) empties the tables for every node.
	a.o.Now = func() time.Time { return day0.AddDate(0, 0, 30) }
	a.prune()
	if ds, err := b.Domains(day0); err != nil || len(ds) != 0 {
		t.Fatalf("after pruning: %v %v", ds, err)
	}
}

// canonical is a report's policies in JSON, in an order that does not
// depend on the order attempts were recorded in.
func canonical(r *Report) string {
	var ps []string
	for _, p := range r.Policies {
		var ds []string
		for _, d := range p.FailureDetails {
			b, _ := json.Marshal(d)
			ds = append(ds, string(b))
		}
		slices.Sort(ds)
		p.FailureDetails = nil
		b, _ := json.Marshal(p)
		ps = append(ps, string(b)+strings.Join(ds, ","))
	}
	slices.Sort(ps)
	return strings.Join(ps, "\n")
}
