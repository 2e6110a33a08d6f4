package glacier

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/reedsolomon"
)

func TestCodeValidate(t *testing.T) {
	cases := []struct {
		c  Code
		ok bool
	}{
		{Code{N: 2, M: 1}, true},
		{Code{N: 256, M: 64}, true},
		{Code{N: 256, M: 255}, true},
		{Code{N: 257, M: 64}, false},
		{Code{N: 4, M: 4}, false},
		{Code{N: 4, M: 0}, false},
		{Code{N: 0, M: 0}, false},
		{Code{N: 3, M: 5}, false},
	}
	for _, tc := range cases {
		if err := tc.c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate = %v", tc.c, err)
		}
	}
	if o := (Code{N: 256, M: 64}).Overhead(); o != 4 {
		t.Errorf("Overhead = %v", o)
	}
}

func TestCodeFor(t *testing.T) {
	for _, nodes := range []int{-3, 0, 1, 2, 3, 7, 16, 50, 100, 128, 129, 200, 255, 256, 257, 1000, 50000} {
		c := CodeFor(nodes, 4)
		if err := c.Validate(); err != nil {
			t.Fatalf("CodeFor(%d): %v", nodes, err)
		}
		if nodes >= 256 && c.N != 256 {
			t.Errorf("CodeFor(%d) = %s, want N = 256", nodes, c)
		}
		if nodes >= 1 && nodes < 256 && c.N != nodes*(256/nodes) {
			t.Errorf("CodeFor(%d) = %s, want N = %d", nodes, c, nodes*(256/nodes))
		}
		// Metadata included, a full bundle stays within the budget.
		if got := float64(c.N*(FragmentBytes(c, MaxBundleBytes)+RecordExtra)) / MaxBundleBytes; got > 4 {
			t.Errorf("CodeFor(%d) = %s: full-bundle overhead %.4f > 4", nodes, c, got)
		}
		// And M is the smallest that does (in steps of the fragments per
		// node, when nodes hold several): one step less would not fit.
		step := 1
		if nodes >= 2 && nodes < 256 {
			step = 256 / nodes
		}
		if c.M > step {
			d := Code{N: c.N, M: c.M - step}
			if float64(d.N*(FragmentBytes(d, MaxBundleBytes)+RecordExtra))/MaxBundleBytes <= 4 {
				t.Errorf("CodeFor(%d) = %s, but M = %d also fits", nodes, c, d.M)
			}
		}
		if c.M%step != 0 {
			t.Errorf("CodeFor(%d) = %s: M not a multiple of %d", nodes, c, step)
		}
	}
	// A budget with room for the metadata gives the nominal code.
	if c := CodeFor(16, 4.12); c.M != 64 {
		t.Errorf("CodeFor(16, 4.12) = %s, want 256/64", c)
	}
	if c := CodeFor(1000, 4.12); c.M != 64 {
		t.Errorf("CodeFor(1000, 4.12) = %s, want 256/64", c)
	}
	if c := CodeFor(16, 1); c.Validate() != nil {
		t.Errorf("CodeFor(16, 1) = %s", c)
	}
}

func randomData(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// keepOnly returns a copy of shards with only those listed in keep.
func keepOnly(shards [][]byte, keep []int) [][]byte {
	out := make([][]byte, len(shards))
	for _, i := range keep {
		out[i] = append([]byte(nil), shards[i]...)
	}
	return out
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	codes := []Code{{N: 2, M: 1}, {N: 3, M: 2}, {N: 5, M: 2}, {N: 16, M: 4}, {N: 17, M: 16}, {N: 100, M: 25}, {N: 250, M: 63}, {N: 256, M: 64}, {N: 256, M: 255}}
	sizes := []int{0, 1, 2, 63, 64, 65, 1000, 4099}
	for _, c := range codes {
		for _, size := range sizes {
			data := randomData(r, size)
			shards, err := Encode(c, data)
			if err != nil {
				t.Fatal(err)
			}
			l := c.ShardLen(size)
			if len(shards) != c.N {
				t.Fatalf("%s: %d shards", c, len(shards))
			}
			for _, s := range shards {
				if len(s) != l || l < 1 {
					t.Fatalf("%s size %d: shard of %d bytes, want %d", c, size, len(s), l)
				}
			}
			for trial := 0; trial < 3; trial++ {
				keep := r.Perm(c.N)[:c.M]
				got, err := Decode(c, size, keepOnly(shards, keep))
				if err != nil {
					t.Fatalf("%s size %d: Decode: %v", c, size, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%s size %d: Decode differs", c, size)
				}
				part := keepOnly(shards, keep)
				if err := Reconstruct(c, part); err != nil {
					t.Fatalf("%s size %d: Reconstruct: %v", c, size, err)
				}
				for i := range shards {
					if !bytes.Equal(part[i], shards[i]) {
						t.Fatalf("%s size %d: Reconstruct shard %d differs", c, size, i)
					}
				}
				if _, err := Decode(c, size, keepOnly(shards, keep[:c.M-1])); !errors.Is(err, ErrTooFew) {
					t.Fatalf("%s: M-1 shards: %v", c, err)
				}
				if err := Reconstruct(c, keepOnly(shards, keep[:c.M-1])); !errors.Is(err, ErrTooFew) {
					t.Fatalf("%s: Reconstruct with M-1 shards: %v", c, err)
				}
			}
		}
	}
}

func TestDecodeLeavesInputAlone(t *testing.T) {
	c := Code{N: 6, M: 3}
	shards, _ := Encode(c, []byte("hello, archive"))
	part := keepOnly(shards, []int{3, 4, 5})
	if _, err := Decode(c, 14, part); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if part[i] != nil {
			t.Fatal("Decode filled the caller's slice")
		}
	}
}

func TestDecodeRejectsBadInput(t *testing.T) {
	c := Code{N: 6, M: 3}
	shards, _ := Encode(c, []byte("hello, archive"))
	short := keepOnly(shards, []int{0, 1, 2})
	short[1] = short[1][:2]
	cases := []struct {
		name   string
		c      Code
		size   int
		shards [][]byte
	}{
		{"bad code", Code{N: 3, M: 3}, 14, shards[:3]},
		{"wrong count", c, 14, shards[:5]},
		{"unequal lengths", c, 14, short},
		{"empty shard", c, 14, [][]byte{{}, {}, {}, nil, nil, nil}},
		{"size too large", c, 16, shards},
		{"size too small for shards", c, 3, shards},
		{"negative size", c, -1, shards},
		{"none present", c, 14, make([][]byte, 6)},
	}
	for _, tc := range cases {
		if _, err := Decode(tc.c, tc.size, tc.shards); err == nil {
			t.Errorf("%s: Decode accepted", tc.name)
		}
	}
	if _, err := Encode(Code{N: 300, M: 10}, nil); !errors.Is(err, ErrCode) {
		t.Errorf("Encode with N=300: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(6, 3, 14, []byte("hello, archive"), uint64(0b111000))
	f.Fuzz(func(t *testing.T, n, m, size int, data []byte, mask uint64) {
		c := Code{N: n%20 + 2, M: m%20 + 1}
		if c.Validate() != nil || len(data) > 4096 {
			return
		}
		shards, err := Encode(c, data)
		if err != nil {
			t.Fatal(err)
		}
		for i := range shards {
			if mask&(1<<(i%64)) != 0 {
				shards[i] = nil
			}
		}
		got, err := Decode(c, len(data), shards)
		if err == nil && !bytes.Equal(got, data) {
			t.Fatal("Decode returned wrong data")
		}
		Decode(c, size, shards) // any size: an error, never a panic
	})
}

func BenchmarkEncodeFullBundle(b *testing.B) {
	c := DefaultConfig().Code
	data := randomData(rand.New(rand.NewPCG(1, 1)), MaxBundleBytes)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Encode(c, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeFullBundleParityOnly(b *testing.B) {
	c := DefaultConfig().Code
	data := randomData(rand.New(rand.NewPCG(1, 1)), MaxBundleBytes)
	shards, _ := Encode(c, data)
	keep := make([]int, 0, c.M)
	for i := c.N - c.M; i < c.N; i++ {
		keep = append(keep, i)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Decode(c, len(data), keepOnly(shards, keep)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode1MiBNarrow is the same library on a narrow code (10
// data, 4 parity shards), the kind of code its own published figures
// use: per input byte it computes 4 parity bytes where 256/66 computes
// 190, which is most of the difference in throughput.
func BenchmarkEncode1MiBNarrow(b *testing.B) {
	enc, err := reedsolomon.New(10, 4)
	if err != nil {
		b.Fatal(err)
	}
	data := randomData(rand.New(rand.NewPCG(1, 1)), 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		shards, err := enc.Split(data)
		if err != nil {
			b.Fatal(err)
		}
		if err := enc.Encode(shards); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode1MiB: the product's code (256/66) on 1 MiB.
func BenchmarkEncode1MiB(b *testing.B) {
	c := DefaultConfig().Code
	data := randomData(rand.New(rand.NewPCG(1, 1)), 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Encode(c, data); err != nil {
			b.Fatal(err)
		}
	}
}
