package env

import (
	"bytes"
	"testing"
)

// A seeded Rand must replay exactly: the simulator's reproducibility
// rests on it.
func TestSeededRandReplays(t *testing.T) {
	draw := func(a, b uint64) []byte {
		r := NewRand(a, b)
		var out []byte
		for i := 0; i < 50; i++ {
			out = append(out, byte(r.IntN(251)), byte(r.Uint64()), byte(r.Float64()*256))
		}
		buf := make([]byte, 13) // not a multiple of 8: Read must fill the tail
		if n, err := r.Read(buf); n != len(buf) || err != nil {
			t.Fatalf("Read = %d, %v", n, err)
		}
		return append(out, buf...)
	}
	if !bytes.Equal(draw(1, 2), draw(1, 2)) {
		t.Fatal("same seed, different draws")
	}
	if bytes.Equal(draw(1, 2), draw(1, 3)) {
		t.Fatal("different seeds, same draws")
	}
}

func TestRandRanges(t *testing.T) {
	for name, r := range map[string]Rand{"seeded": NewRand(7, 7), "crypto": CryptoRand()} {
		for _, n := range []int{1, 2, 3, 10, 1 << 20} {
			seen := map[int]bool{}
			for i := 0; i < 2000; i++ {
				v := r.IntN(n)
				if v < 0 || v >= n {
					t.Fatalf("%s: IntN(%d) = %d", name, n, v)
				}
				seen[v] = true
			}
			if n <= 10 && len(seen) != n {
				t.Errorf("%s: IntN(%d) gave only %d distinct values in 2000 draws", name, n, len(seen))
			}
		}
		for i := 0; i < 1000; i++ {
			if f := r.Float64(); f < 0 || f >= 1 {
				t.Fatalf("%s: Float64 = %v", name, f)
			}
		}
	}
}

func TestCryptoRandIntNRefusesNonPositive(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("IntN(0) did not panic")
		}
	}()
	CryptoRand().IntN(0)
}
