package glacier

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/epost-mail/epost/internal/id"
)

func randomRing(r *rand.Rand, n int) []id.NodeID {
	seen := map[id.ID]bool{}
	ring := make([]id.NodeID, 0, n)
	for len(ring) < n {
		x := id.FromUint64(r.Uint64(), r.Uint64())
		if !seen[x] {
			seen[x] = true
			ring = append(ring, id.NodeID{ID: x})
		}
	}
	slices.SortFunc(ring, func(a, b id.NodeID) int { return a.ID.Cmp(b.ID) })
	return ring
}

func TestFragmentKeysEvenlySpaced(t *testing.T) {
	b := id.FromUint64(0xffffffffffffffff, 0xfffffffffffffff0) // wraps at once
	for _, n := range []int{1, 2, 3, 7, 250, 256} {
		keys := FragmentKeys(b, n)
		if len(keys) != n || keys[0] != b {
			t.Fatalf("n=%d: %d keys", n, len(keys))
		}
		for i := 1; i < n; i++ {
			step := keys[i-1].CW(keys[i])
			if step != keys[0].CW(keys[1]) {
				t.Fatalf("n=%d: uneven step at %d", n, i)
			}
		}
		if n > 1 {
			// The last gap, back to the first key, is the step plus the
			// remainder 2^128 mod n < n.
			step := keys[0].CW(keys[1])
			last := keys[n-1].CW(keys[0])
			d := last.Sub(step)
			if hi, lo := d.Uint64s(); hi != 0 || lo >= uint64(n) {
				t.Fatalf("n=%d: closing gap off by %s", n, d)
			}
		}
	}
	if FragmentKeys(b, 0) != nil {
		t.Fatal("FragmentKeys(0) not empty")
	}
	if k := FragmentKeys(id.ID{}, 4); k[1] != id.FromUint64(1<<62, 0) {
		t.Fatalf("FragmentKeys(0, 4)[1] = %s", k[1])
	}
}

func counts(assign []int, nodes int) []int {
	c := make([]int, nodes)
	for _, j := range assign {
		c[j]++
	}
	return c
}

func TestAssignBalance(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ nodes, frags int }{
		{1, 1}, {1, 256}, {2, 3}, {16, 256}, {50, 250}, {50, 256}, {100, 256}, {255, 256},
		{256, 256}, {257, 256}, {1000, 256}, {50000, 256}, {7, 5},
	} {
		ring := randomRing(r, tc.nodes)
		for trial := 0; trial < 5; trial++ {
			bundle := id.FromUint64(r.Uint64(), r.Uint64())
			keys := FragmentKeys(bundle, tc.frags)
			a := Assign(keys, ring)
			if len(a) != tc.frags {
				t.Fatalf("%+v: %d assignments", tc, len(a))
			}
			lo, hi := tc.frags/tc.nodes, (tc.frags+tc.nodes-1)/tc.nodes
			for j, c := range counts(a, tc.nodes) {
				if c > hi || (c < lo) {
					t.Fatalf("%+v: node %d holds %d, want %d..%d", tc, j, c, lo, hi)
				}
			}
			if tc.frags <= tc.nodes && len(Holders(a)) != tc.frags {
				t.Fatalf("%+v: %d distinct holders for %d fragments", tc, len(Holders(a)), tc.frags)
			}
			if !slices.Equal(a, Assign(keys, ring)) {
				t.Fatalf("%+v: Assign not deterministic", tc)
			}
		}
	}
	if Assign([]id.ID{{}}, nil) != nil {
		t.Fatal("empty ring")
	}
}

// TestAssignStartsAtClosest: on a roomy ring each fragment goes to the
// node closest to its key, with id.Closer's tie rule.
func TestAssignStartsAtClosest(t *testing.T) {
	ring := []id.NodeID{{ID: id.FromUint64(0, 10)}, {ID: id.FromUint64(0, 20)}, {ID: id.FromUint64(1<<63, 0)}}
	cases := []struct {
		key  id.ID
		want int
	}{
		{id.FromUint64(0, 14), 0},
		{id.FromUint64(0, 15), 0}, // tie: the smaller id
		{id.FromUint64(0, 16), 1},
		{id.FromUint64(0, 5), 0},
		{id.FromUint64(^uint64(0), ^uint64(0)), 0}, // wraps past zero
		{id.FromUint64(1<<63, 1), 2},
	}
	for _, c := range cases {
		if got := Assign([]id.ID{c.key}, ring); got[0] != c.want {
			t.Errorf("key %s: node %d, want %d", c.key, got[0], c.want)
		}
	}
	// Two fragments closest to node 0: the second walks clockwise.
	if got := Assign([]id.ID{id.FromUint64(0, 9), id.FromUint64(0, 11)}, ring); !slices.Equal(got, []int{0, 1}) {
		t.Errorf("walk: %v", got)
	}
}

func TestHolders(t *testing.T) {
	if got := Holders([]int{5, 2, 5, 0, 2, 5}); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("Holders = %v", got)
	}
	if len(Holders(nil)) != 0 {
		t.Fatal("Holders(nil)")
	}
}

func BenchmarkAssign50000(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	ring := randomRing(r, 50000)
	keys := FragmentKeys(id.FromUint64(r.Uint64(), r.Uint64()), 256)
	for b.Loop() {
		Assign(keys, ring)
	}
}
