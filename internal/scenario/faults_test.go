package scenario

import (
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/sim"
)

// Seeded tests of the real-world fault scenarios (DESIGN.md section 4):
// each mechanism does its job, and with it off the failure shows.

// TestNoIndirectProbesStayBounded: with indirect routes off, live nodes
// behind broken links are declared dead, and those deaths ride on probes.
// A report of a death must not make every receiver re-probe the node on
// every probe that mentions it: verifying probes carry reports too, so the
// probes would multiply until the simulator drowns (it once did at 100
// nodes within five minutes).
func TestNoIndirectProbesStayBounded(t *testing.T) {
	const n = 100
	cfg := sim.DefaultConfig(1)
	cfg.InvariantEvery = 0
	ocfg := overlay.SimConfig()
	ocfg.IndirectHelpers = 0
	r := NewRing(cfg, ocfg)
	hosts, err := r.Build(n, 100*env.Millisecond, 2*env.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for want := n * (n - 1) / 2 / 10; r.S.BrokenLinks() < want; {
		a, b := r.S.Rand().IntN(n), r.S.Rand().IntN(n)
		if a != b {
			r.S.BreakLink(hosts[a], hosts[b])
		}
	}
	probes := func() uint64 {
		var sum uint64
		for _, p := range r.TotalStats().Probes {
			sum += p
		}
		return sum
	}
	before := probes()
	r.FalseDead = 0
	const step, steps = 10 * env.Second, 60
	for i := 0; i < steps; i++ {
		if err := r.S.RunFor(step); err != nil {
			t.Fatal(err)
		}
		// A settled ring keeps about 5 events per node queued (timers,
		// messages in flight); the storm had thousands.
		if q := r.S.Pending(); q > 50*n {
			t.Fatalf("after %d s: %d events queued, %d probes sent", (i+1)*10, q, probes()-before)
		}
	}
	// Heartbeats, table upkeep and the repairs after each false death
	// need a few probes per node and minute; a storm needs millions.
	perNodeMinute := float64(probes()-before) / n / (float64(steps*step) / float64(env.Minute))
	if perNodeMinute > 30 {
		t.Fatalf("%.1f probes per node and minute", perNodeMinute)
	}
	if r.FalseDead == 0 {
		t.Fatalf("no false deaths: the broken links never mattered, so the test shows nothing")
	}
	t.Logf("%.1f probes per node and minute, %d false deaths", perNodeMinute, r.FalseDead)
}
