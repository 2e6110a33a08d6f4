package glacier

import (
	"errors"
	"fmt"
	"math"

	"github.com/klauspost/reedsolomon"
)

// Hash is a SHA-256 digest.
type Hash = [32]byte

// MaxShards is the largest N: Reed-Solomon over GF(2^8) has at most 256
// distinct evaluation points.
const MaxShards = 256

// Errors returned by the coding functions; callers match them with
// errors.Is.
var (
	ErrCode      = errors.New("glacier: invalid code")
	ErrShards    = errors.New("glacier: bad shards")
	ErrTooFew    = errors.New("glacier: too few shards")
	ErrMalformed = errors.New("glacier: malformed")
)

// Code is an erasure code: N fragments, any M of which rebuild the data.
type Code struct {
	_    struct{} `cbor:",toarray"`
	N, M int
}

// Validate checks 1 <= M < N <= 256. M == N (no parity) is refused: a
// code that tolerates no loss is never what the archive wants.
func (c Code) Validate() error {
	if c.M < 1 || c.M >= c.N || c.N > MaxShards {
		return fmt.Errorf("%w: N=%d M=%d (want 1 <= M < N <= %d)", ErrCode, c.N, c.M, MaxShards)
	}
	return nil
}

// Overhead is the nominal storage factor N/M, metadata not counted.
func (c Code) Overhead() float64 {
	if c.M <= 0 {
		return math.Inf(1)
	}
	return float64(c.N) / float64(c.M)
}

// String is "N/M", for logs.
func (c Code) String() string { return fmt.Sprintf("%d/%d", c.N, c.M) }

// ShardLen is the length of each shard for size bytes of data:
// ceil(size/M), at least 1 so that every fragment has content to prove.
func (c Code) ShardLen(size int) int {
	if c.M <= 0 || size <= 0 {
		return 1
	}
	return (size + c.M - 1) / c.M
}

// CodeFor chooses the code for a community of nodes nodes whose storage
// per archived byte, metadata included, is to stay within maxOverhead for
// a full bundle (MaxBundleBytes). See the package documentation for the
// reasoning and the numbers.
//
// With 256 or more nodes N = 256, one fragment per node, and M is the
// smallest whose full-bundle fragments (shard, manifest and Merkle proof)
// fit in maxOverhead times the bundle: 66 for maxOverhead 4, where the
// nominal ceil(256/4) = 64 would store 4.12 times the bundle.
//
// With fewer nodes placement is balanced: every node holds j =
// floor(256/nodes) fragments and N = nodes*j. A bundle then survives
// exactly when k = ceil(M/j) holders do, so M is taken as a multiple k*j
// (any smaller M with the same k costs more and protects no better), with
// the smallest k that fits the budget.
func CodeFor(nodes int, maxOverhead float64) Code {
	nodes = max(nodes, 1)
	n, j := MaxShards, 1
	if nodes < MaxShards {
		j = MaxShards / nodes
		n = nodes * j
	}
	fits := func(m int) bool {
		c := Code{N: n, M: m}
		return float64(n*(FragmentBytes(c, MaxBundleBytes)+RecordExtra)) <= maxOverhead*MaxBundleBytes
	}
	if !(maxOverhead > 1) { // also catches NaN
		return Code{N: n, M: n - 1}
	}
	if j > 1 {
		for k := max(1, int(math.Ceil(float64(nodes)/maxOverhead))); k < nodes; k++ {
			if fits(k * j) {
				return Code{N: n, M: k * j}
			}
		}
	}
	// One fragment per node, or no multiple of j fits (a single node):
	// the smallest M that fits.
	m := max(1, min(int(math.Ceil(float64(n)/maxOverhead)), n-1))
	for m < n-1 && !fits(m) {
		m++
	}
	return Code{N: n, M: m}
}

// RecordExtra is what a holder stores beside each fragment, budgeted
// generously: the owner's address and user certificate (about 290 bytes),
// which let anyone check the manifest's signature, and the record's
// framing.
const RecordExtra = 320

// newEncoder builds the Reed-Solomon codec for c.
//
// The Cauchy matrix is part of the archive's format: parity bytes depend
// on it, so it can never change for stored bundles. It is chosen because
// building it is cheap (about 30 us for 256/64, against about 2 ms for
// the default Vandermonde-derived matrix, which must be inverted), which
// matters because encoders are not cached: a cache shared between calls
// would need a lock, which this package may not take.
//
// reedsolomon's default options are otherwise kept, including its worker
// goroutines: they split the byte range of the shards between them, so
// the output is the same whatever the scheduling, and limiting them to
// one halves encoding throughput on a two-core machine (about 190 MB/s
// against 470 MB/s for a 1 MiB bundle under 256/64).
func newEncoder(c Code) (reedsolomon.Encoder, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	enc, err := reedsolomon.New(c.M, c.N-c.M, reedsolomon.WithCauchyMatrix())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCode, err)
	}
	return enc, nil
}

// Encode pads data with zeros to a multiple of M and returns N shards of
// equal length ceil(len(data)/M) (at least 1 byte each): the first M are
// the data, the rest parity. The shards share one backing array.
func Encode(c Code, data []byte) ([][]byte, error) {
	enc, err := newEncoder(c)
	if err != nil {
		return nil, err
	}
	l := c.ShardLen(len(data))
	buf := make([]byte, c.N*l)
	copy(buf, data)
	shards := make([][]byte, c.N)
	for i := range shards {
		shards[i] = buf[i*l : (i+1)*l : (i+1)*l]
	}
	if err := enc.Encode(shards); err != nil {
		return nil, fmt.Errorf("glacier: encode: %w", err)
	}
	return shards, nil
}

// checkShards checks len(shards) == N, that all present shards have one
// non-zero length, and that at least M are present. It returns the
// length.
func checkShards(c Code, shards [][]byte) (int, error) {
	if err := c.Validate(); err != nil {
		return 0, err
	}
	if len(shards) != c.N {
		return 0, fmt.Errorf("%w: %d shards for code %s", ErrShards, len(shards), c)
	}
	l, present := -1, 0
	for i, s := range shards {
		if s == nil {
			continue
		}
		if len(s) == 0 || (l >= 0 && len(s) != l) {
			return 0, fmt.Errorf("%w: shard %d has %d bytes", ErrShards, i, len(s))
		}
		l = len(s)
		present++
	}
	if present < c.M {
		return 0, fmt.Errorf("%w: %d of %d needed", ErrTooFew, present, c.M)
	}
	return l, nil
}

// Reconstruct fills every nil shard of shards in place from any M present
// ones. Repair uses it: decode once, regenerate every missing fragment.
func Reconstruct(c Code, shards [][]byte) error {
	if _, err := checkShards(c, shards); err != nil {
		return err
	}
	enc, err := newEncoder(c)
	if err != nil {
		return err
	}
	if err := enc.Reconstruct(shards); err != nil {
		return fmt.Errorf("glacier: reconstruct: %w", err)
	}
	return nil
}

// Decode returns the first size bytes of the data from any M of the N
// shards (nil = missing). The caller's slice is left as it was.
func Decode(c Code, size int, shards [][]byte) ([]byte, error) {
	l, err := checkShards(c, shards)
	if err != nil {
		return nil, err
	}
	if size < 0 || size > l*c.M || c.ShardLen(size) != l {
		return nil, fmt.Errorf("%w: size %d does not match shards of %d bytes", ErrShards, size, l)
	}
	work := append([][]byte(nil), shards...)
	missing := false
	for _, s := range work[:c.M] {
		missing = missing || s == nil
	}
	if missing {
		enc, err := newEncoder(c)
		if err != nil {
			return nil, err
		}
		if err := enc.ReconstructData(work); err != nil {
			return nil, fmt.Errorf("glacier: decode: %w", err)
		}
	}
	out := make([]byte, 0, c.M*l)
	for _, s := range work[:c.M] {
		out = append(out, s...)
	}
	return out[:size], nil
}
