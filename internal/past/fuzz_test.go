package past

import (
	"bytes"
	"testing"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/wire"
	"github.com/epost-mail/epost/internal/wire/wiretest"
)

// Codec-level fuzz targets for what holders store and exchange. FuzzDirect
// drives the same bytes through a node's handlers; these check each
// decoder on its own, with properties the handlers cannot show.

// FuzzMutable decodes the input as one mutable object and as a slot:
// both must round-trip, and only the one genuinely signed object may
// verify.
func FuzzMutable(f *testing.F) {
	r := newRand(1)
	ca, err := identity.NewCA(r)
	if err != nil {
		f.Fatal(err)
	}
	keys, err := identity.GenerateUserKeys(r, "alice@demo.epost")
	if err != nil {
		f.Fatal(err)
	}
	cert, err := ca.IssueUser(r, keys.Address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		f.Fatal(err)
	}
	m, err := SignMutable(keys, cert, "head/INBOX", 7, []byte("log head"))
	if err != nil {
		f.Fatal(err)
	}
	v := identity.NewVerifier(ca.Public())
	f.Add(m.Encode())
	f.Add(encodeSlot(slot{m, m}))
	f.Add(wire.MustMarshal(mutableBody{Address: m.Address, Name: m.Name, Version: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := DecodeMutable(b); err == nil {
			wiretest.RoundTrip[Mutable](t, b)
			if k, err := d.Verify(v); err == nil && (!d.Equal(m) || k != m.Key()) {
				t.Fatalf("verified an object alice never signed: %+v", d)
			}
		}
		s, err := decodeSlot(b)
		if err != nil {
			return
		}
		wiretest.RoundTrip[[]*Mutable](t, b)
		for _, x := range s {
			if x.Version != s.version() {
				t.Fatalf("slot mixes versions %d and %d", x.Version, s.version())
			}
			if _, _, err := s.merge(x, 4); err != nil {
				t.Fatalf("merging a slot's own object: %v", err)
			}
		}
	})
}

// FuzzSetRecord decodes the input as a set record and as a set op. A
// merge normalizes a record: members sorted, unique and not released,
// and merging the result with itself changes nothing.
func FuzzSetRecord(f *testing.F) {
	f.Add((&setRecord{Members: [][]byte{[]byte("a"), []byte("b")}, Tombs: []tomb{{Member: MemberKey([]byte("c")), Proof: []byte("p")}}}).encode())
	f.Add((&setRecord{Members: [][]byte{[]byte("a"), []byte("a")}, Tombs: []tomb{{Member: MemberKey([]byte("a"))}}}).encode())
	f.Add(wire.MustMarshal(SetOp{Add: []byte("m")}))
	f.Add(wire.MustMarshal(SetOp{Release: MemberKey([]byte("m")), Proof: []byte("proof")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		wiretest.RoundTrip[SetOp](t, b)
		r, err := decodeSetRecord(b)
		if err != nil {
			return
		}
		wiretest.RoundTrip[setRecord](t, b)
		const max = 3
		n, _, _ := r.merge(nil, max)
		dead := map[[32]byte]bool{}
		for _, tb := range n.Tombs {
			dead[tb.Member] = true
		}
		for i, m := range n.Members {
			k := MemberKey(m)
			if dead[k] {
				t.Fatal("a released member survived the merge")
			}
			if i > 0 {
				if prev := MemberKey(n.Members[i-1]); bytes.Compare(prev[:], k[:]) >= 0 {
					t.Fatal("merged members not sorted and unique")
				}
			}
		}
		if len(n.Tombs) > 2*max {
			t.Fatalf("%d tombstones kept, cap %d", len(n.Tombs), 2*max)
		}
		again, changed, err := n.merge(n, max)
		if changed || err != nil || !bytes.Equal(again.encode(), n.encode()) {
			t.Fatalf("merging a normalized record with itself changed it: %v", err)
		}
	})
}
