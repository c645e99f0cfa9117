package tlsrpt

import (
	"strings"
	"testing"
	"time"
)

func TestValidateReport(t *testing.T) {
	dir := t.TempDir()
	r, err := New(Options{Dir: dir, Submitter: "mx.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	r.Record(Attempt{Time: now, Domain: "dest.test", PolicyType: PolicyTLSA, PolicyDomain: "mx.dest.test", PolicyString: []string{"3 1 1 ab"},
		Result: DNSSECInvalid, SendingMTAIP: "192.0.2.1", ReceivingIP: "192.0.2.9", ReceivingMXHostname: "mx.dest.test"})
	r.Record(Attempt{Time: now, Domain: "dest.test", PolicyType: PolicyNone, Success: true})
	rep, err := r.Report(now, "dest.test")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := rep.JSON()
	if err := ValidateReport(js); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	for _, c := range []struct{ from, to, want string }{
		{`"dnssec-invalid"`, `"dnssec-broken"`, "not a result type"},
		{`"192.0.2.1"`, `"192.0.2"`, "not an IP address"},
		{`"failed-session-count": 1`, `"failed-session-count": 2`, "summary 1"},
		{`"report-id"`, `"report_id"`, "unknown field"},
		{`"policy-type": "tlsa"`, `"policy-type": "dane"`, "not tlsa, sts"},
	} {
		bad := strings.Replace(string(js), c.from, c.to, 1)
		if err := ValidateReport([]byte(bad)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s -> %s: %v", c.from, c.to, err)
		}
	}
}
