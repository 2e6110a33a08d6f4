package glacier

import (
	"math"
	"sort"
)

// LossIndependent is the probability that a bundle is lost when every
// node fails independently with probability p: that fewer than M of its
// fragments survive. perHolder gives the fragments on each distinct
// holder (see Holders). Exact: a dynamic programme over holders for the
// distribution of surviving fragments; the loss is a sum of small terms,
// never a difference, so it stays accurate far below 1e-16.
func LossIndependent(c Code, perHolder []int, p float64) float64 {
	p = clamp01(p)
	total := sum(perHolder)
	if total < c.M {
		return 1
	}
	// dist[s] = P(exactly s fragments survive among the holders so far).
	dist := make([]float64, total+1)
	dist[0] = 1
	top := 0
	for _, f := range perHolder {
		if f <= 0 {
			continue
		}
		for s := top; s >= 0; s-- {
			v := dist[s]
			dist[s+f] += v * (1 - p)
			dist[s] = v * p
		}
		top += f
	}
	return lossBelow(dist, c.M)
}

// LossCorrelated is the probability that a bundle is lost when exactly
// failed of nodes nodes fail at once, every such set equally likely.
// Exact: for each number j of failing holders, a dynamic programme gives
// the distribution of surviving fragments when the j failing holders are
// a uniform j-subset of the holders; the hypergeometric weight of j
// (computed with math.Lgamma, finite for any community size) combines it
// with the nodes that hold nothing.
func LossCorrelated(c Code, perHolder []int, nodes, failed int) float64 {
	var hs []int
	for _, f := range perHolder {
		if f > 0 {
			hs = append(hs, f)
		}
	}
	h, total := len(hs), sum(hs)
	if total < c.M {
		return 1
	}
	nodes = max(nodes, h)
	failed = max(0, min(failed, nodes))
	// cond[j][s] = P(s fragments survive | exactly j of the holders so far
	// fail, as a uniform j-subset). Adding holder t (1-based), it is among
	// the j failing ones with probability j/t.
	cond := make([][]float64, h+1)
	for j := range cond {
		cond[j] = make([]float64, total+1)
	}
	cond[0][0] = 1
	top := 0
	for t := 1; t <= h; t++ {
		f := hs[t-1]
		for j := t; j >= 0; j-- {
			row := cond[j]
			for s := top + f; s >= 0; s-- {
				var v float64
				if j > 0 && s <= top {
					v += cond[j-1][s] * float64(j) / float64(t)
				}
				if j < t && s >= f && s-f <= top {
					v += row[s-f] * float64(t-j) / float64(t)
				}
				row[s] = v
			}
		}
		top += f
	}
	others := nodes - h
	var loss float64
	for j := max(0, failed-others); j <= min(h, failed); j++ {
		w := math.Exp(lchoose(h, j) + lchoose(others, failed-j) - lchoose(nodes, failed))
		loss += w * lossBelow(cond[j], c.M)
	}
	return math.Min(loss, 1)
}

// SurvivesWorst reports whether the bundle survives the worst choice of
// failed failing nodes: the largest holders fail first.
func SurvivesWorst(c Code, perHolder []int, failed int) bool {
	hs := append([]int(nil), perHolder...)
	sort.Sort(sort.Reverse(sort.IntSlice(hs)))
	left := 0
	for i, f := range hs {
		if i >= failed && f > 0 {
			left += f
		}
	}
	return left >= c.M
}

// lossBelow sums dist[s] for s < m.
func lossBelow(dist []float64, m int) float64 {
	var l float64
	for s := 0; s < m && s < len(dist); s++ {
		l += dist[s]
	}
	return math.Min(l, 1)
}

// lchoose is log C(n, k).
func lchoose(n, k int) float64 {
	if k < 0 || k > n {
		return math.Inf(-1)
	}
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	d, _ := math.Lgamma(float64(n - k + 1))
	return a - b - d
}

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		if x > 0 {
			t += x
		}
	}
	return t
}

func clamp01(p float64) float64 {
	if !(p > 0) { // NaN counts as 0
		return 0
	}
	return math.Min(p, 1)
}
