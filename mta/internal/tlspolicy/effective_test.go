package tlspolicy

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/conf"
)

var allLevels = []Level{None, May, Dane, Encrypt, DaneOnly, Fingerprint, Verify, Secure}

// randomInputs draws one combination of every input.
func randomInputs(r *rand.Rand) Inputs {
	in := Inputs{Nexthop: "dest.example", Host: "mx.dest.example", STSDomain: "dest.example", TransportName: "dest.example"}
	in.Map = Policy{Level: allLevels[r.IntN(len(allLevels))], Source: "policy map entry dest.example"}
	if r.IntN(2) == 0 {
		in.Map.Fingerprints = [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
	}
	if r.IntN(3) == 0 {
		in.Map.Match = []string{"nexthop", ".dest.example"}
	}
	if r.IntN(3) == 0 {
		in.Transport = allLevels[r.IntN(len(allLevels))]
	}
	in.DANE = DANEState(r.IntN(4))
	in.STS = STSState(r.IntN(5))
	if r.IntN(2) == 0 {
		in.Alias = []Level{Encrypt, DaneOnly, Verify}[r.IntN(3)]
		in.AliasSender = "alice@secure.example.org"
	}
	in.RequireTLS = r.IntN(3) == 0
	return in
}

// subset keeps the destination's own inputs (DANE, MTA-STS) and those of
// the local demands (bit 0 policy map, 1 transport, 2 secure alias, 3
// REQUIRETLS) that mask selects; the others are neutral.
func subset(in Inputs, mask int) Inputs {
	out := in
	if mask&1 == 0 {
		out.Map = Policy{Level: None, Fingerprints: in.Map.Fingerprints, Source: "neutral"}
	}
	if mask&2 == 0 {
		out.Transport = conf.TLSUnset
	}
	if mask&4 == 0 {
		out.Alias, out.AliasSender = conf.TLSUnset, ""
	}
	if mask&8 == 0 {
		out.RequireTLS = false
	}
	return out
}

// TestComputeNeverWeakerThanAnyInput: for random combinations of all
// inputs, the effective policy demands at least what any subset of them
// demands: the destination's DANE and MTA-STS alone, each local demand
// (policy map, transport, secure alias, REQUIRETLS) with them, and every
// combination. So no input ever lowers what another raised.
func TestComputeNeverWeakerThanAnyInput(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		in := randomInputs(r)
		all := Compute(in)
		for mask := 0; mask < 16; mask++ {
			part := Compute(subset(in, mask))
			if !AtLeastAsStrict(all, part) {
				t.Fatalf("inputs %04b alone demand more than all together:\ninputs %+v\nall  %+v\npart %+v", mask, in, all, part)
			}
		}
		// Invariants of the result.
		if all.RequireTLS && !all.TryTLS {
			t.Fatalf("TLS required but not tried: %+v", all)
		}
		if in.DANE == DANEUsable && all.Refuse == nil && (!all.DANE || !all.RequireTLS) {
			t.Fatalf("usable TLSA records did not make TLS mandatory and authenticated: %+v", all)
		}
		if in.DANE == DANEIndeterminate && all.Refuse == nil {
			t.Fatalf("indeterminate DANE did not forbid the host: %+v", all)
		}
		if in.STS == STSEnforceNotListed && all.Refuse == nil {
			t.Fatalf("MX not listed, not refused: %+v", all)
		}
		if (in.Alias != 0 || in.RequireTLS) && !all.RequireTLS {
			t.Fatalf("alias/REQUIRETLS without mandatory TLS: %+v", all)
		}
		if !all.Level.Valid() {
			t.Fatalf("invalid level %v", all.Level)
		}
	}
}

// TestComputeCases pins the decisions the issue names.
func TestComputeCases(t *testing.T) {
	fp := [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
	base := func() Inputs {
		return Inputs{Map: Policy{Level: May, Source: "default"}, Nexthop: "dest.example", Host: "mx.dest.example", STSDomain: "dest.example"}
	}
	for _, c := range []struct {
		name   string
		mod    func(*Inputs)
		refuse string // status, "" for no refusal
		dane   bool
		pkix   int
		tls    bool
	}{
		{"may, nothing else", func(*Inputs) {}, "", false, 0, false},
		{"alias encrypt + usable TLSA keeps DANE", func(in *Inputs) { in.Alias, in.AliasSender, in.DANE = Encrypt, "a@s.x", DANEUsable }, "", true, 0, true},
		{"map encrypt + usable TLSA keeps DANE", func(in *Inputs) { in.Map.Level, in.DANE = Encrypt, DANEUsable }, "", true, 0, true},
		{"map verify + usable TLSA: both", func(in *Inputs) { in.Map.Level, in.DANE = Verify, DANEUsable }, "", true, 1, true},
		{"map none + usable TLSA: DANE wins", func(in *Inputs) { in.Map.Level, in.DANE = None, DANEUsable }, "", true, 0, true},
		{"map encrypt + bogus TLSA", func(in *Inputs) { in.Map.Level, in.DANE = Encrypt, DANEIndeterminate }, "4.7.5", false, 0, true},
		{"map none + bogus TLSA", func(in *Inputs) { in.Map.Level, in.DANE = None, DANEIndeterminate }, "4.7.5", false, 0, true},
		{"alias dane-only without TLSA", func(in *Inputs) { in.Alias, in.AliasSender = DaneOnly, "a@s.x" }, "5.7.10", false, 0, true},
		{"alias verify without pin", func(in *Inputs) { in.Alias, in.AliasSender = Verify, "a@s.x" }, "5.7.10", false, 0, true},
		{"alias verify with pin", func(in *Inputs) { in.Alias, in.AliasSender, in.Map.Fingerprints = Verify, "a@s.x", fp }, "", false, 0, true},
		{"alias without level", func(in *Inputs) { in.AliasSender = "a@s.x" }, "5.7.10", false, 0, true},
		{"STS enforce + DANE: both", func(in *Inputs) { in.STS, in.DANE = STSEnforce, DANEUsable }, "", true, 1, true},
		{"STS not listed", func(in *Inputs) { in.STS = STSEnforceNotListed }, "4.7.5", false, 0, true},
		{"STS testing observes", func(in *Inputs) { in.STS = STSTesting }, "", false, 0, false},
		{"STS testing + REQUIRETLS enforces", func(in *Inputs) { in.STS, in.RequireTLS = STSTesting, true }, "", false, 1, true},
		{"REQUIRETLS alone bounces", func(in *Inputs) { in.RequireTLS = true }, "5.7.30", false, 0, true},
		{"REQUIRETLS + fetch failure defers", func(in *Inputs) { in.RequireTLS, in.STS = true, STSFetchFailed }, "4.7.5", false, 0, true},
		{"fetch failure alone: as without, reported", func(in *Inputs) { in.STS = STSFetchFailed }, "", false, 0, false},
		{"unset map level", func(in *Inputs) { in.Map.Level = conf.TLSUnset }, "4.7.5", false, 0, true},
		{"dane-only map, unusable TLSA", func(in *Inputs) { in.Map.Level, in.DANE = DaneOnly, DANEUnusable }, "4.7.5", false, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := base()
			c.mod(&in)
			e := Compute(in)
			got := ""
			if e.Refuse != nil {
				got = e.Refuse.Status
			}
			if got != c.refuse || e.Refuse == nil && (e.DANE != c.dane || len(e.PKIX) != c.pkix || e.RequireTLS != c.tls) {
				t.Fatalf("refuse %q dane %v pkix %d tls %v; want %q %v %d %v\n%s", got, e.DANE, len(e.PKIX), e.RequireTLS,
					c.refuse, c.dane, c.pkix, c.tls, strings.Join(e.Sources, "\n"))
			}
		})
	}
}
