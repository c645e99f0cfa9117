package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/database"
	"github.com/posthorn/posthorn/mta/internal/resolver"
	"github.com/posthorn/posthorn/testbed/ca"
	"github.com/posthorn/posthorn/testbed/dnsserver"
	tbsts "github.com/posthorn/posthorn/testbed/mtasts"
	"github.com/posthorn/posthorn/testbed/pgtest"
)

// TestTLSExplainReadsSharedSTSCache: `posthorn tls explain` on a node of
// a cluster shows the MTA-STS policy another node fetched and cached in
// the shared database, also when the policy host is out of reach now.
func TestTLSExplainReadsSharedSTSCache(t *testing.T) {
	db := pgtest.Start(t).NewDatabase(t)
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
	srv.SetPolicy("shared.test", tbsts.Policy("enforce", 86400, "mx.shared.test"))
	z := d.Zone("shared.test", dnsserver.Insecure)
	z.TXT("_mta-sts.shared.test.", "v=STSv1; id=42")
	z.A("mta-sts.shared.test.", "127.0.0.1")
	z.MX("shared.test.", 10, "mx.shared.test.").A("mx.shared.test.", "127.0.0.1")
	caFile, err := root.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := conf.Parse("t.toml", []byte(fmt.Sprintf(`
[dns]
resolver = %q
[outbound]
ca_file = %q
[mta_sts]
enabled = true
[database]
dsn = %q
[testing]
port_map = { "mta-sts.shared.test" = %d }
`, d.Addr(), caFile, db.DSN, srv.Port())))
	if err != nil {
		t.Fatal(err)
	}
	// Node A fetches the policy (into the shared cache).
	sdb, _, err := database.OpenPostgres(context.Background(), cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	res, err := resolver.New(resolver.Options{Server: d.Addr(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a, err := newMTASTS(cfg, res, nil, sdb)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if p, _, err := a.Lookup(ctx, "shared.test"); err != nil || p == nil {
		t.Fatalf("node A: %v %v", p, err)
	}
	// The policy host goes away; explain on another node still shows it.
	srv.RemovePolicy("shared.test")
	ex, err := Explain(cfg, "shared.test", "", false, false)
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(ex.Extra, "\n"); !strings.Contains(s, "MTA-STS: mode enforce, mx mx.shared.test, id 42 (cached") {
		t.Fatalf("explain on node B: %s", s)
	}
}
