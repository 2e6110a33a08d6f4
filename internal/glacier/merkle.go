package glacier

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
)

// Domain-separation prefixes: a leaf hash and an inner hash never hash
// the same bytes, so a leaf cannot be passed off as an inner node (or an
// inner node as a leaf) to forge a proof. The layout follows RFC 6962's
// Merkle tree, which handles any n, not only powers of two.
const (
	leafPrefix  = 0x00
	innerPrefix = 0x01
	emptyPrefix = 0x02
)

// LeafHash is the Merkle leaf for shard index: H(0x00 || index || shard).
// The index is bound in as well as the position in the tree, so a shard
// can never be presented under another index.
func LeafHash(index int, shard []byte) Hash {
	h := sha256.New()
	var pre [5]byte
	pre[0] = leafPrefix
	binary.BigEndian.PutUint32(pre[1:], uint32(index))
	h.Write(pre[:])
	h.Write(shard)
	var out Hash
	h.Sum(out[:0])
	return out
}

func innerHash(l, r Hash) Hash {
	var b [1 + 2*32]byte
	b[0] = innerPrefix
	copy(b[1:], l[:])
	copy(b[33:], r[:])
	return sha256.Sum256(b[:])
}

// split is the size of the left subtree of a tree of n > 1 leaves: the
// largest power of two smaller than n.
func split(n int) int { return 1 << (bits.Len(uint(n-1)) - 1) }

// MerkleRoot is the root over leaves. The empty tree has a root of its
// own, H(0x02), which no non-empty tree can have.
func MerkleRoot(leaves []Hash) Hash {
	switch len(leaves) {
	case 0:
		return sha256.Sum256([]byte{emptyPrefix})
	case 1:
		return leaves[0]
	}
	k := split(len(leaves))
	return innerHash(MerkleRoot(leaves[:k]), MerkleRoot(leaves[k:]))
}

// MerkleProof is the audit path of leaf i, siblings from the bottom up.
// It returns nil when i is out of range.
func MerkleProof(leaves []Hash, i int) []Hash {
	if i < 0 || i >= len(leaves) {
		return nil
	}
	var path []Hash
	for len(leaves) > 1 {
		// Walk down, collecting siblings top-down, then reverse.
		k := split(len(leaves))
		if i < k {
			path = append(path, MerkleRoot(leaves[k:]))
			leaves = leaves[:k]
		} else {
			path = append(path, MerkleRoot(leaves[:k]))
			leaves, i = leaves[k:], i-k
		}
	}
	for a, b := 0, len(path)-1; a < b; a, b = a+1, b-1 {
		path[a], path[b] = path[b], path[a]
	}
	return path
}

// merkleAll returns the root and every leaf's proof in O(n log n) hashes,
// for making all fragments of a bundle at once.
func merkleAll(leaves []Hash) (Hash, [][]Hash) {
	proofs := make([][]Hash, len(leaves))
	var build func(lo, hi int) Hash
	build = func(lo, hi int) Hash {
		if hi-lo == 1 {
			return leaves[lo]
		}
		k := lo + split(hi-lo)
		l, r := build(lo, k), build(k, hi)
		for i := lo; i < k; i++ {
			proofs[i] = append(proofs[i], r)
		}
		for i := k; i < hi; i++ {
			proofs[i] = append(proofs[i], l)
		}
		return innerHash(l, r)
	}
	if len(leaves) == 0 {
		return MerkleRoot(nil), nil
	}
	return build(0, len(leaves)), proofs
}

// VerifyProof reports whether proof shows that leaf is leaf i of a tree
// of n leaves with the given root. The proof must have exactly the length
// the tree's shape gives leaf i. As in RFC 6962, a proof does not by
// itself fix n (a proof in a tree of 3 also passes in one of 4 whose
// first leaves agree), so n must come from a trusted source: for a
// fragment, the owner's signed manifest.
func VerifyProof(root Hash, n, i int, leaf Hash, proof []Hash) bool {
	if n < 1 || i < 0 || i >= n || len(proof) > 64 {
		return false
	}
	got, ok := rootFromPath(n, i, leaf, proof)
	return ok && got == root
}

// rootFromPath consumes proof from its end (the sibling nearest the root)
// while descending the tree's shape towards leaf i.
func rootFromPath(n, i int, leaf Hash, proof []Hash) (Hash, bool) {
	if n == 1 {
		return leaf, len(proof) == 0
	}
	if len(proof) == 0 {
		return Hash{}, false
	}
	k := split(n)
	last, rest := proof[len(proof)-1], proof[:len(proof)-1]
	if i < k {
		sub, ok := rootFromPath(k, i, leaf, rest)
		return innerHash(sub, last), ok
	}
	sub, ok := rootFromPath(n-k, i-k, leaf, rest)
	return innerHash(last, sub), ok
}
