package glacier

import (
	"crypto/sha256"
	"testing"
)

func testLeaves(n int) []Hash {
	leaves := make([]Hash, n)
	for i := range leaves {
		leaves[i] = LeafHash(i, []byte{byte(i), byte(i >> 8), 7})
	}
	return leaves
}

func TestMerkleProofs(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5, 7, 16, 100, 255, 256} {
		leaves := testLeaves(n)
		root := MerkleRoot(leaves)
		allRoot, all := merkleAll(leaves)
		if allRoot != root {
			t.Fatalf("n=%d: merkleAll root differs", n)
		}
		for i := 0; i < n; i++ {
			p := MerkleProof(leaves, i)
			if len(p) != len(all[i]) {
				t.Fatalf("n=%d i=%d: proof lengths %d and %d", n, i, len(p), len(all[i]))
			}
			for k := range p {
				if p[k] != all[i][k] {
					t.Fatalf("n=%d i=%d: merkleAll proof differs", n, i)
				}
			}
			if !VerifyProof(root, n, i, leaves[i], p) {
				t.Fatalf("n=%d i=%d: proof does not verify", n, i)
			}
			if VerifyProof(root, n, i, LeafHash(i, []byte("forged")), p) {
				t.Fatalf("n=%d i=%d: tampered leaf verifies", n, i)
			}
			if n > 1 && VerifyProof(root, n, (i+1)%n, leaves[i], p) {
				t.Fatalf("n=%d i=%d: proof verifies at another index", n, i)
			}
			if len(p) > 0 {
				bad := append([]Hash(nil), p...)
				bad[len(bad)/2][0] ^= 1
				if VerifyProof(root, n, i, leaves[i], bad) {
					t.Fatalf("n=%d i=%d: tampered proof verifies", n, i)
				}
				if VerifyProof(root, n, i, leaves[i], p[:len(p)-1]) {
					t.Fatalf("n=%d i=%d: short proof verifies", n, i)
				}
			}
			if VerifyProof(root, n, i, leaves[i], append(append([]Hash(nil), p...), root)) {
				t.Fatalf("n=%d i=%d: long proof verifies", n, i)
			}
		}
		for _, i := range []int{-1, n, n + 5} {
			if MerkleProof(leaves, i) != nil || VerifyProof(root, n, i, leaves[0], nil) {
				t.Fatalf("n=%d: index %d accepted", n, i)
			}
		}
	}
	if VerifyProof(MerkleRoot(nil), 0, 0, Hash{}, nil) {
		t.Fatal("empty tree verified a leaf")
	}
}

// TestMerkleDomainSeparation: an inner node's children cannot be passed
// off as a leaf's shard, because leaf and inner hashes use distinct
// prefixes.
func TestMerkleDomainSeparation(t *testing.T) {
	leaves := testLeaves(4)
	root := MerkleRoot(leaves)
	l, r := MerkleRoot(leaves[:2]), MerkleRoot(leaves[2:])
	// Claim a one-leaf tree whose leaf is the concatenation of the children.
	fake := sha256.Sum256(append(append([]byte{leafPrefix}, l[:]...), r[:]...))
	if fake == root {
		t.Fatal("leaf hash of the children equals the root")
	}
	// With n fixed (it is in the signed manifest), an inner node cannot
	// stand in for a leaf: its proof is too short for the tree's shape.
	if VerifyProof(root, 4, 0, l, []Hash{r}) {
		t.Fatal("an inner node verified as a leaf")
	}
	// Nor can a shard be crafted whose leaf hash is an inner node.
	shard := append(append([]byte(nil), l[:]...), r[:]...)
	if LeafHash(0, shard) == root {
		t.Fatal("a leaf hash collides with an inner hash")
	}
	if LeafHash(0, []byte("x")) == LeafHash(1, []byte("x")) {
		t.Fatal("leaf hash ignores the index")
	}
}

func FuzzVerifyProof(f *testing.F) {
	leaves := testLeaves(5)
	root := MerkleRoot(leaves)
	p := MerkleProof(leaves, 3)
	var flat []byte
	for _, h := range p {
		flat = append(flat, h[:]...)
	}
	f.Add(5, 3, flat, uint8(0))
	f.Fuzz(func(t *testing.T, n, i int, flat []byte, flip uint8) {
		var proof []Hash
		for len(flat) >= 32 {
			proof = append(proof, Hash(flat[:32]))
			flat = flat[32:]
		}
		leaf := LeafHash(i, []byte{byte(i), byte(i >> 8), 7})
		ok := VerifyProof(root, n, i, leaf, proof)
		// Only a leaf of the tree passes, at its own index. (n is not bound
		// by the proof, see VerifyProof, so it is not checked here.)
		if ok && (i < 0 || i >= 5) {
			t.Fatalf("n=%d i=%d: forged proof verified", n, i)
		}
	})
}
