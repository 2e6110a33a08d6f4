package glacier

import (
	"math/big"
	"sort"

	"github.com/epost-mail/epost/internal/id"
)

// FragmentKeys returns the ring positions of a bundle's n fragments:
// k_i = bundle + i*floor(2^128/n) mod 2^128. Evenly spaced keys land on
// nodes far apart on the ring, so fragments fail independently of the
// bundle's neighbourhood, and any node can recompute them.
func FragmentKeys(bundle id.ID, n int) []id.ID {
	if n <= 0 {
		return nil
	}
	keys := make([]id.ID, n)
	keys[0] = bundle
	if n == 1 {
		return keys
	}
	s := new(big.Int).Lsh(big.NewInt(1), 128)
	s.Quo(s, big.NewInt(int64(n)))
	var step id.ID
	s.FillBytes(step[:]) // fits: n >= 2 makes the step at most 2^127
	for i := 1; i < n; i++ {
		keys[i] = keys[i-1].Add(step)
	}
	return keys
}

// Assign places len(keys) fragments on ring, which must be sorted
// ascending and free of duplicates, and returns each fragment's ring
// index (nil for an empty ring).
//
// Fragment i starts at the node closest to keys[i] (id.Closer, so its
// tie rule) and walks clockwise to the first node with room. Every node
// has room for floor(n/R) fragments and the first n mod R nodes to
// reach that may take one more, R = len(ring). Total room is exactly n,
// so every fragment lands; with n <= R no node gets two, and otherwise
// every node gets floor(n/R) or ceil(n/R).
//
// The cost is O(n log R) for the searches plus the walks, which are
// short while the ring has room near every key.
func Assign(keys []id.ID, ring []id.NodeID) []int {
	if len(ring) == 0 {
		return nil
	}
	n, r := len(keys), len(ring)
	base, extra := n/r, n%r
	held := make(map[int]int, min(n, r)) // sparse: n may be far below R
	out := make([]int, n)
	for f, k := range keys {
		j := closestIndex(k, ring)
		for {
			h := held[j]
			if h < base {
				break
			}
			if h == base && extra > 0 {
				extra--
				break
			}
			j = (j + 1) % r
		}
		held[j]++
		out[f] = j
	}
	return out
}

// closestIndex is the index of the ring node numerically closest to k:
// the successor or predecessor of k, whichever id.Closer prefers.
func closestIndex(k id.ID, ring []id.NodeID) int {
	r := len(ring)
	s := sort.Search(r, func(i int) bool { return ring[i].ID.Cmp(k) >= 0 })
	succ := s % r
	pred := (s - 1 + r) % r
	if id.Closer(k, ring[pred].ID, ring[succ].ID) {
		return pred
	}
	return succ
}

// Holders turns an assignment into the number of fragments each distinct
// holder has, ordered by ring index.
func Holders(assign []int) []int {
	count := map[int]int{}
	for _, j := range assign {
		count[j]++
	}
	idx := make([]int, 0, len(count))
	for j := range count {
		idx = append(idx, j)
	}
	sort.Ints(idx)
	out := make([]int, len(idx))
	for i, j := range idx {
		out[i] = count[j]
	}
	return out
}
