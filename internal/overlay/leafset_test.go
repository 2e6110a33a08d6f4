package overlay

import (
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/epost-mail/epost/internal/id"
)

func handle(x id.ID) NodeHandle { return NodeHandle{ID: id.NodeID{ID: x}, Addr: "n-" + x.Short()} }

// TestLeafSetMatchesSortedRing builds leaf sets by random insertion and
// checks them against the true L/2 neighbours on each side of a sorted ring.
func TestLeafSetMatchesSortedRing(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{2, 5, 13, 24, 25, 30, 200} {
		ids := make([]id.ID, n)
		for i := range ids {
			ids[i] = id.FromUint64(r.Uint64(), r.Uint64())
		}
		sorted := append([]id.ID(nil), ids...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].Cmp(sorted[j]) < 0 })
		for si, self := range sorted {
			ls := NewLeafSet(self, 24)
			for _, j := range r.Perm(n) {
				ls.Add(handle(ids[j]))
			}
			half := 12
			if n-1 < half {
				half = n - 1
			}
			for k := 1; k <= half; k++ {
				if got, want := ls.Right()[k-1].ID.ID, sorted[(si+k)%n]; got != want {
					t.Fatalf("n=%d: right[%d] = %s, want %s", n, k-1, got.Short(), want.Short())
				}
				if got, want := ls.Left()[k-1].ID.ID, sorted[((si-k)%n+n)%n]; got != want {
					t.Fatalf("n=%d: left[%d] = %s, want %s", n, k-1, got.Short(), want.Short())
				}
			}
			if len(ls.Right()) != half || len(ls.Left()) != half {
				t.Fatalf("n=%d: sides %d/%d, want %d", n, len(ls.Left()), len(ls.Right()), half)
			}
			for _, x := range ids {
				member := ls.Contains(x)
				if ls.WouldAccept(x) {
					t.Fatalf("n=%d: would accept %s, member=%v", n, x.Short(), member)
				}
			}
			if n > 25 {
				far := sorted[(si+n/2)%n]
				if ls.Contains(far) || ls.Covers(far.Add(id.FromUint64(0, 1))) {
					t.Fatalf("n=%d: far node in leaf set or covered", n)
				}
			}
		}
	}
}
