package keystore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/posthorn/posthorn/testbed/pgtest"
)

func TestStore(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		contract(t, func() (Store, error) { return Open(dir) })
	})
	t.Run("postgres", func(t *testing.T) {
		db := pgtest.Start(t).NewShared(t)
		contract(t, func() (Store, error) { return OpenShared(context.Background(), db) })
	})
}

// contract is what every Store does; open opens the same store again.
func contract(t *testing.T, open func() (Store, error)) {
	ctx := context.Background()
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0).UTC()
	a := Key{Fingerprint: "aa11", Addresses: []string{"Alice@Example.org", "example.org"}, Own: true, Source: SourceGenerated, Verified: true, Armored: []byte("A"), Created: now, Updated: now}
	b := Key{Fingerprint: "BB22", Addresses: []string{"alice@example.org"}, Source: SourceAutocrypt, Armored: []byte("B"), Updated: now.Add(time.Hour)}
	for _, k := range []Key{a, b} {
		if err := s.Put(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := s.ByAddress(ctx, "<ALICE@example.org>")
	if err != nil || len(ks) != 2 || ks[0].Fingerprint != "AA11" || !ks[0].Own || ks[1].Verified {
		t.Fatalf("ByAddress: %+v %v", ks, err)
	}
	if ks, _ := s.ByAddress(ctx, "example.org"); len(ks) != 1 || ks[0].Fingerprint != "AA11" {
		t.Errorf("domain key: %+v", ks)
	}
	s.Close()

	// Reopened: still there; replaced in place; removed.
	s, err = open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b.Addresses = []string{"bob@partner.test"}
	b.Verified = true
	if err := s.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	k, err := s.Get(ctx, "bb22")
	if err != nil || !k.Verified || len(k.Addresses) != 1 || k.Addresses[0] != "bob@partner.test" || string(k.Armored) != "B" {
		t.Fatalf("Get: %+v %v", k, err)
	}
	if k, _ := s.Get(ctx, "AA11"); !k.Created.Equal(now) || !k.Expires.IsZero() {
		t.Errorf("times %+v", k)
	}
	all, _ := s.List(ctx)
	if len(all) != 2 || all[0].Fingerprint != "AA11" {
		t.Errorf("List %+v", all)
	}
	if err := s.Remove(ctx, "AA11"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "AA11"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	if _, err := s.Get(ctx, "AA11"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get removed: %v", err)
	}
	if ks, _ := s.ByAddress(ctx, "example.org"); len(ks) != 0 {
		t.Errorf("addresses left: %+v", ks)
	}
}
