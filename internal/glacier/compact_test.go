package glacier

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/epost-mail/epost/internal/wire"
)

func TestSeqRanges(t *testing.T) {
	got := fmt.Sprint(seqRanges([]uint64{7, 3, 4, 5, 9, 10}))
	if want := "[{{} 3 6} {{} 7 8} {{} 9 11}]"; got != want {
		t.Errorf("seqRanges = %s, want %s", got, want)
	}
}

// TestManifestSupersedes: the positions a compacted bundle supersedes
// are signed with the rest of its manifest, must lie before it, and are
// bounded in number.
func TestManifestSupersedes(t *testing.T) {
	k := testKey(t, 9)
	b := testBundle(rand.New(rand.NewPCG(5, 6)), 3, 100)
	b.Seq = 20
	m, frags, err := makeFragments(Code{N: 8, M: 2}, b, Hash{}, []SeqRange{{From: 2, To: 5}, {From: 9, To: 10}}, k)
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[uint64]bool{1: false, 2: true, 4: true, 5: false, 9: true, 10: false, 20: false} {
		if m.Covers(s) != want {
			t.Errorf("Covers(%d) = %v", s, !want)
		}
	}
	if err := frags[3].Check(); err != nil {
		t.Fatal(err)
	}
	forged := *m
	forged.Supersedes = []SeqRange{{From: 0, To: 20}}
	if forged.Verify(k.Public()) == nil {
		t.Error("a manifest whose superseded positions were changed still verifies")
	}
	for _, bad := range [][]SeqRange{{{From: 3, To: 3}}, {{From: 5, To: 21}}, make([]SeqRange, maxSupersedes+1)} {
		if _, _, err := makeFragments(Code{N: 8, M: 2}, b, Hash{}, bad, k); !errors.Is(err, ErrMalformed) {
			t.Errorf("supersedes %v: err %v, want ErrMalformed", bad[:1], err)
		}
	}
}

// TestManifestFormatUnchangedWithoutSupersedes: a manifest that
// supersedes nothing is encoded and signed exactly as before the field
// existed, so archives written then still verify and link; one that
// supersedes something round-trips in the longer format.
func TestManifestFormatUnchangedWithoutSupersedes(t *testing.T) {
	k := testKey(t, 10)
	b := testBundle(rand.New(rand.NewPCG(7, 8)), 2, 50)
	b.Seq = 4
	m, _, err := MakeFragments(Code{N: 8, M: 2}, b, Hash{3}, k)
	if err != nil {
		t.Fatal(err)
	}
	legacy := wire.MustMarshal(manifestV1{Owner: m.Owner, Seq: m.Seq, Prev: m.Prev, Code: m.Code, Size: m.Size, Bundle: m.Bundle, Root: m.Root, Sig: m.Sig})
	if got := wire.MustMarshal(m); !bytes.Equal(got, legacy) {
		t.Errorf("manifest without Supersedes encodes as %x, the original format is %x", got, legacy)
	}
	if !bytes.Equal(m.body(), wire.MustMarshal(manifestBodyV1{Owner: m.Owner, Seq: m.Seq, Prev: m.Prev, Code: m.Code, Size: m.Size, Bundle: m.Bundle, Root: m.Root})) {
		t.Error("the signed body of a manifest without Supersedes changed")
	}
	c, _, err := makeFragments(Code{N: 8, M: 2}, b, Hash{3}, []SeqRange{{From: 1, To: 3}}, k)
	if err != nil {
		t.Fatal(err)
	}
	var back Manifest
	if err := wire.Unmarshal(wire.MustMarshal(c), &back); err != nil || back.Hash() != c.Hash() || !back.Covers(2) || back.Verify(k.Public()) != nil {
		t.Errorf("a compacted manifest does not round-trip: %v", err)
	}
	// The longer format with nothing in it would be a second encoding.
	empty := wire.MustMarshal(manifestV2{Owner: m.Owner, Seq: m.Seq, Prev: m.Prev, Code: m.Code, Size: m.Size, Bundle: m.Bundle, Root: m.Root, Sig: m.Sig})
	if err := wire.Unmarshal(empty, &back); err == nil {
		t.Error("a manifest in the longer format superseding nothing was accepted")
	}
}
