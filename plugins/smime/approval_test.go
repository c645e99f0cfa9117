package smime

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"
)

// A store made before approval existed gains the columns, its records
// approved; Approve and TakeActivated work once each.
func TestStoreApprovalUpgrade(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE smime_certs (fingerprint TEXT NOT NULL, address TEXT NOT NULL, subject TEXT NOT NULL,
		issuer TEXT NOT NULL, not_before BIGINT NOT NULL, not_after BIGINT NOT NULL, der BLOB NOT NULL,
		gcm INTEGER NOT NULL DEFAULT 0, oaep INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL, added BIGINT NOT NULL,
		PRIMARY KEY (fingerprint, address))`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO smime_certs VALUES ('aaaaaaaa11', 'old@ext.test', 's', 'i', 0, 9999999999, x'00', 0, 0, 'harvest', 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	recs, err := s.List(ctx)
	if err != nil || len(recs) != 1 || recs[0].Pending {
		t.Fatalf("%v %+v", err, recs)
	}
	p := newPKI(t)
	bob := p.leaf(t, "bob@ext.test")
	for _, r := range NewRecords(bob.Cert, Capabilities{}, "harvest", time.Now()) {
		r.Pending = true
		s.Put(ctx, r)
	}
	recs, _ = s.ForAddress(ctx, "bob@ext.test")
	if len(recs) != 1 || !recs[0].Pending || Usable(recs, time.Now()) != nil {
		t.Fatalf("pending record: %+v", recs)
	}
	if n, err := s.Approve(ctx, "bob@ext.test"); n != 1 || err != nil {
		t.Fatalf("approve: %d %v", n, err)
	}
	if n, _ := s.Approve(ctx, "bob@ext.test"); n != 0 {
		t.Fatal("approved twice")
	}
	act, err := s.TakeActivated(ctx)
	if err != nil || len(act) != 1 || act[0].Address != "bob@ext.test" {
		t.Fatalf("%v %+v", err, act)
	}
	if act, _ := s.TakeActivated(ctx); len(act) != 0 {
		t.Fatal("activated twice")
	}
	// Harvested again as pending: stays approved.
	for _, r := range NewRecords(bob.Cert, Capabilities{}, "harvest", time.Now()) {
		r.Pending = true
		s.Put(ctx, r)
	}
	recs, _ = s.ForAddress(ctx, "bob@ext.test")
	if recs[0].Pending {
		t.Fatal("an approved certificate became pending again")
	}
}
