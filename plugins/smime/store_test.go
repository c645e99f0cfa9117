package smime

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/posthorn/posthorn/testbed/pgtest"
)

// TestStoreContract runs the certificate store's contract against the
// embedded SQLite file and a real PostgreSQL.
func TestStoreContract(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "certs.db")
		storeContract(t, func() (Store, error) { return OpenSQLite(path) })
	})
	t.Run("postgres", func(t *testing.T) {
		db := pgtest.Start(t).NewShared(t)
		storeContract(t, func() (Store, error) { return OpenShared(context.Background(), db) })
	})
}

func storeContract(t *testing.T, open func() (Store, error)) {
	ctx := context.Background()
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0).UTC()
	rec := func(fpr, addr string, notAfter time.Time, gcm bool) CertRecord {
		return CertRecord{Fingerprint: fpr, Address: addr, Subject: "CN=" + addr, Issuer: "CN=CA",
			NotBefore: now.Add(-time.Hour), NotAfter: notAfter, DER: []byte{0x30, 0x82, 0, 1, 0xff}, GCM: gcm, Source: "harvest", Added: now}
	}
	a1 := rec("aaaaaaaa11", "Bob@Partner.test", now.Add(24*time.Hour), false)
	a2 := rec("bbbbbbbb22", "bob@partner.test", now.Add(48*time.Hour), true)
	c := rec("cccccccc33", "carol@partner.test", now.Add(24*time.Hour), false)
	for _, r := range []CertRecord{a1, a2, c} {
		if err := s.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ForAddress(ctx, "BOB@partner.test")
	if err != nil || len(got) != 2 || got[0].Fingerprint != "bbbbbbbb22" || !got[0].GCM || got[1].GCM {
		t.Fatalf("ForAddress: %+v %v", got, err)
	}
	// ForAddress's statement is prepared once: concurrent look-ups, and
	// one seeing a record put after the statement was prepared.
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 20 {
				if got, err := s.ForAddress(ctx, "carol@partner.test"); err != nil || len(got) != 1 {
					errs <- fmt.Errorf("concurrent ForAddress: %d records, %v", len(got), err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	late := rec("dddddddd44", "dave@partner.test", now.Add(24*time.Hour), false)
	if err := s.Put(ctx, late); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ForAddress(ctx, "dave@partner.test"); err != nil || len(got) != 1 {
		t.Fatalf("ForAddress after Put: %+v %v", got, err)
	}
	if n, err := s.Remove(ctx, "dave@partner.test"); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	if r := got[1]; r.Address != "bob@partner.test" || !r.NotAfter.Equal(a1.NotAfter) || !r.Added.Equal(now) || string(r.DER) != string(a1.DER) || r.Subject != a1.Subject {
		t.Errorf("record came back as %+v", r)
	}
	// Capabilities are only ever added.
	a1.GCM, a1.OAEP = true, true
	if err := s.Put(ctx, a1); err != nil {
		t.Fatal(err)
	}
	a1.GCM, a1.OAEP = false, false
	if err := s.Put(ctx, a1); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Reopened: everything is still there.
	s, err = open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, _ = s.ForAddress(ctx, "bob@partner.test")
	if len(got) != 2 || !got[1].GCM || !got[1].OAEP {
		t.Fatalf("after the upserts: %+v", got)
	}
	all, err := s.List(ctx)
	if err != nil || len(all) != 3 || all[0].Fingerprint != "aaaaaaaa11" || all[2].Address != "carol@partner.test" {
		t.Fatalf("List: %+v %v", all, err)
	}
	if _, err := s.Remove(ctx, "abc"); err == nil {
		t.Error("a short prefix was accepted")
	}
	if n, err := s.Remove(ctx, "BBBBBBBB"); err != nil || n != 1 {
		t.Errorf("Remove by prefix: %d %v", n, err)
	}
	if n, err := s.Remove(ctx, "carol@partner.test"); err != nil || n != 1 {
		t.Errorf("Remove by address: %d %v", n, err)
	}
	if all, _ := s.List(ctx); len(all) != 1 || all[0].Fingerprint != "aaaaaaaa11" {
		t.Errorf("left: %+v", all)
	}
}
