package glacier

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
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
