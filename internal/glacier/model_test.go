package glacier

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/epost-mail/epost/internal/id"
)

// bruteIndependent enumerates every failure pattern of the holders.
func bruteIndependent(c Code, per []int, p float64) float64 {
	var loss float64
	for mask := 0; mask < 1<<len(per); mask++ {
		prob, left := 1.0, 0
		for i, f := range per {
			if mask&(1<<i) != 0 {
				prob *= p
			} else {
				prob *= 1 - p
				left += f
			}
		}
		if left < c.M {
			loss += prob
		}
	}
	return loss
}

// bruteCorrelated enumerates every failed subset of the nodes; holders
// are the first len(per) nodes.
func bruteCorrelated(c Code, per []int, nodes, failed int) float64 {
	lost, all := 0, 0
	for mask := 0; mask < 1<<nodes; mask++ {
		if bits.OnesCount(uint(mask)) != failed {
			continue
		}
		all++
		left := 0
		for i, f := range per {
			if mask&(1<<i) == 0 {
				left += f
			}
		}
		if left < c.M {
			lost++
		}
	}
	return float64(lost) / float64(all)
}

func close(a, b float64) bool { return math.Abs(a-b) <= 1e-12+1e-9*math.Abs(b) }

func TestLossModelsAgainstBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for trial := 0; trial < 200; trial++ {
		h := 1 + r.IntN(8)
		per := make([]int, h)
		total := 0
		for i := range per {
			per[i] = 1 + r.IntN(4)
			total += per[i]
		}
		c := Code{N: total + 1, M: 1 + r.IntN(total)}
		p := r.Float64()
		if got, want := LossIndependent(c, per, p), bruteIndependent(c, per, p); !close(got, want) {
			t.Fatalf("LossIndependent(%s, %v, %.3f) = %g, brute force %g", c, per, p, got, want)
		}
		nodes := h + r.IntN(11-h)
		failed := r.IntN(nodes + 1)
		if got, want := LossCorrelated(c, per, nodes, failed), bruteCorrelated(c, per, nodes, failed); !close(got, want) {
			t.Fatalf("LossCorrelated(%s, %v, %d, %d) = %g, brute force %g", c, per, nodes, failed, got, want)
		}
	}
}

func TestLossEdges(t *testing.T) {
	c := Code{N: 4, M: 2}
	per := []int{1, 1, 1, 1}
	if LossIndependent(c, per, 0) != 0 || LossIndependent(c, per, 1) != 1 {
		t.Fatal("LossIndependent at p = 0 or 1")
	}
	if LossIndependent(c, []int{1}, 0) != 1 || LossCorrelated(c, []int{1}, 5, 0) != 1 {
		t.Fatal("too few fragments placed is certain loss")
	}
	if LossCorrelated(c, per, 4, 2) != 0 || LossCorrelated(c, per, 4, 3) != 1 {
		t.Fatal("LossCorrelated on all-holder ring")
	}
	if LossCorrelated(c, per, 10, 0) != 0 || LossCorrelated(c, per, 10, 99) != 1 {
		t.Fatal("LossCorrelated with no or all failures")
	}
	if !SurvivesWorst(c, per, 2) || SurvivesWorst(c, per, 3) {
		t.Fatal("SurvivesWorst")
	}
	if SurvivesWorst(c, []int{1, 3}, 1) {
		t.Fatal("SurvivesWorst: the larger holder fails first")
	}
}

// TestLoss256of64: the ePOST figure, 256 fragments on distinct holders,
// any 64 rebuild, each node failing with probability 0.6.
func TestLoss256of64(t *testing.T) {
	per := make([]int, 256)
	for i := range per {
		per[i] = 1
	}
	got := LossIndependent(Code{N: 256, M: 64}, per, 0.6)
	if got < 1.4e-7 || got > 1.8e-7 {
		t.Fatalf("loss = %g, want about 1.6e-7", got)
	}
	// Exactly 60% of a large community failing is close to it.
	corr := LossCorrelated(Code{N: 256, M: 64}, per, 50000, 30000)
	if corr < 1e-8 || corr > got {
		t.Fatalf("correlated loss = %g, independent %g", corr, got)
	}
}

func balancedHolders(t *testing.T, nodes int, c Code) []int {
	r := rand.New(rand.NewPCG(uint64(nodes), 9))
	ring := randomRing(r, nodes)
	return Holders(Assign(FragmentKeys(id.FromUint64(r.Uint64(), r.Uint64()), c.N), ring))
}

func TestSurvivesWorstSmallRings(t *testing.T) {
	for _, nodes := range []int{16, 50} {
		c := CodeFor(nodes, 4)
		per := balancedHolders(t, nodes, c)
		failed := int(math.Ceil(0.6 * float64(nodes)))
		if !SurvivesWorst(c, per, failed) {
			t.Errorf("N=%d %s %v: lost to %d failures", nodes, c, per, failed)
		}
		if l := LossCorrelated(c, per, nodes, failed); l != 0 {
			t.Errorf("N=%d: correlated loss %g at %d failures, want 0", nodes, l, failed)
		}
	}
}

// TestLossTable prints the figures quoted in doc.go (go test -v -run
// TestLossTable).
func TestLossTable(t *testing.T) {
	const f = 0.6
	for _, nodes := range []int{2, 4, 16, 50, 100, 200, 256, 1000, 10000, 50000} {
		c := CodeFor(nodes, 4)
		per := balancedHolders(t, nodes, c)
		failed := int(math.Ceil(f * float64(nodes)))
		meta := float64(c.N*(FragmentBytes(c, MaxBundleBytes)+RecordExtra)) / MaxBundleBytes
		maxHeld := 0
		for _, h := range per {
			maxHeld = max(maxHeld, h)
		}
		t.Logf("N=%5d code %3d/%2d nominal %.3f full-bundle %.3f holders %3d (max %2d) survivesWorst(%d)=%v correlated=%.3g independent=%.3g",
			nodes, c.N, c.M, c.Overhead(), meta, len(per), maxHeld, failed, SurvivesWorst(c, per, failed),
			LossCorrelated(c, per, nodes, failed), LossIndependent(c, per, f))
	}
	per := make([]int, 256)
	for i := range per {
		per[i] = 1
	}
	for _, m := range []int{64, 65, 66} {
		c := Code{N: 256, M: m}
		t.Logf("code 256/%d: full-bundle %.3f independent(0.6)=%.3g correlated(1000, 600)=%.3g correlated(50000, 30000)=%.3g",
			m, float64(c.N*(FragmentBytes(c, MaxBundleBytes)+RecordExtra))/MaxBundleBytes,
			LossIndependent(c, per, f), LossCorrelated(c, per, 1000, 600), LossCorrelated(c, per, 50000, 30000))
	}
}
