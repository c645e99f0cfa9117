package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/mtasts"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	tbsts "github.com/posthorn/posthorn/testbed/mtasts"
)

// TestMTASTSFetchUsesConfiguredResolver: the HTTPS fetch of
// mta-sts.DOMAIN resolves the policy host through [dns] resolver (here
// the testbed DNS, which alone knows the name), not the system's.
func TestMTASTSFetchUsesConfiguredResolver(t *testing.T) {
	d, err := dnsserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	root, err := ca.New("STS CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := tbsts.Start(root)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.SetPolicy("hidden.test", tbsts.Policy("enforce", 86400, "mx.hidden.test"))
	z := d.Zone("hidden.test", dnsserver.Insecure)
	z.TXT("_mta-sts.hidden.test.", "v=STSv1; id=7")
	z.A("mta-sts.hidden.test.", "127.0.0.1")
	caFile, err := root.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := conf.Parse("t.toml", []byte(fmt.Sprintf(`
[dns]
resolver = %q
trust_ad = "yes"
[outbound]
ca_file = %q
[mta_sts]
enabled = true
cache_dir = %q
[testing]
port_map = { "mta-sts.hidden.test" = %d }
`, d.Addr(), caFile, filepath.Join(t.TempDir(), "sts"), srv.Port())))
	if err != nil {
		t.Fatal(err)
	}
	res, err := resolver.New(resolver.Options{Server: d.Addr(), Timeout: 2 * time.Second, TrustAD: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := newMTASTS(cfg, res, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, state, err := f.Lookup(ctx, "hidden.test")
	if err != nil || p == nil || state != mtasts.Fetched || p.Mode != mtasts.Enforce {
		t.Fatalf("policy %+v, state %s, err %v", p, state, err)
	}
	asked := false
	for _, q := range d.Queries() {
		if q.Name == "mta-sts.hidden.test." {
			asked = true
		}
	}
	if !asked {
		t.Error("the policy host was not looked up through the configured resolver")
	}
}
