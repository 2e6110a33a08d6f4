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
	// The storm used to break out within two minutes of the cut.
	const step, steps = 10 * env.Second, 30
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

func numField(t *testing.T, res *Result, name string) float64 {
	t.Helper()
	switch v := res.Get(name).(type) {
	case int:
		return float64(v)
	case uint64:
		return float64(v)
	case float64:
		return v
	}
	t.Fatalf("field %s: %v (%T)", name, res.Get(name), res.Get(name))
	return 0
}

func boolField(t *testing.T, res *Result, name string) bool {
	t.Helper()
	v, ok := res.Get(name).(bool)
	if !ok {
		t.Fatalf("field %s: %v (%T)", name, res.Get(name), res.Get(name))
	}
	return v
}

// TestPartitionHeals: a 50/50 split for 30 minutes becomes one ring with
// correct leaf sets within two reintegration periods of the network
// healing, and routes every lookup right. (60 nodes keep the test quick;
// docs/architecture.md gives the figures for 100.)
func TestPartitionHeals(t *testing.T) {
	res, err := RunPartition(PartitionConfig{Nodes: 60, Seed: 1, Split: 0.5, PartitionMinutes: 30})
	if err != nil {
		t.Fatal(err)
	}
	requireHealed(t, res)
}

// TestPartitionLongerThanDeadMemoryHeals: after 100 minutes apart nobody
// remembers the other side (DeadMemory is 90 minutes); joins through
// routing-table entries and bootstraps still find it.
func TestPartitionLongerThanDeadMemoryHeals(t *testing.T) {
	if mem := overlay.SimConfig().DeadMemory; mem >= 100*env.Minute {
		t.Fatalf("DeadMemory %v: the split below no longer outlasts it", mem)
	}
	res, err := RunPartition(PartitionConfig{Nodes: 60, Seed: 1, Split: 0.5, PartitionMinutes: 100})
	if err != nil {
		t.Fatal(err)
	}
	requireHealed(t, res)
}

func requireHealed(t *testing.T, res *Result) {
	t.Helper()
	if rings := numField(t, res, "rings_during"); rings != 2 {
		t.Fatalf("%v rings during the split, want 2", rings)
	}
	if !boolField(t, res, "healed") {
		t.Fatalf("not healed: %d rings after, %d wrong leaf sets, first: %v", res.Get("rings_after"), res.Get("wrong_leaf_sets_after"), res.Get("first_wrong"))
	}
	if s := numField(t, res, "heal_seconds"); s > 2*overlay.SimConfig().ReintegratePeriod.Seconds() {
		t.Fatalf("healed after %v s, want within two reintegration periods", s)
	}
	if c := numField(t, res, "correct_fraction_after"); c != 1 {
		t.Fatalf("correct fraction after healing %v, want 1", c)
	}
}

// TestPartitionWithoutReintegrationStaysSplit: the failure the mechanism
// exists for. Each side has declared the other dead; without anyone
// trying the dead again, the two rings never merge.
func TestPartitionWithoutReintegrationStaysSplit(t *testing.T) {
	res, err := RunPartition(PartitionConfig{Nodes: 60, Seed: 1, Split: 0.5, PartitionMinutes: 30, NoReintegrate: true})
	if err != nil {
		t.Fatal(err)
	}
	if boolField(t, res, "healed") || numField(t, res, "rings_after") != 2 {
		t.Fatalf("healed without reintegration: %v", res.vals)
	}
	if c := numField(t, res, "correct_fraction_after"); c > 0.9 {
		t.Fatalf("correct fraction %v with two rings, want about half", c)
	}
}

// TestAnomalyRoutedAround: with 10% of links broken, lookups stay correct
// and no live node is removed from a leaf set: silent members are reached
// through helpers instead.
func TestAnomalyRoutedAround(t *testing.T) {
	res, err := RunAnomaly(AnomalyConfig{Nodes: 100, Seed: 1, BrokenLinks: 0.1, Lookups: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if c := numField(t, res, "correct_fraction"); c < 0.999 {
		t.Fatalf("correct fraction %v, want >= 0.999", c)
	}
	if d := numField(t, res, "false_dead"); d != 0 {
		t.Fatalf("%v live nodes removed from leaf sets", d)
	}
	if n := numField(t, res, "indirect_links"); n == 0 {
		t.Fatalf("no indirect links: the broken links never mattered")
	}
}

// TestAnomalyWithoutIndirectRoutes: the same run with the mechanism off
// removes live nodes from leaf sets and misroutes lookups.
func TestAnomalyWithoutIndirectRoutes(t *testing.T) {
	res, err := RunAnomaly(AnomalyConfig{Nodes: 100, Seed: 1, BrokenLinks: 0.1, Lookups: 1000, NoIndirect: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := numField(t, res, "false_dead"); d == 0 {
		t.Fatalf("no false deaths without indirect routes: %v", res.vals)
	}
	if c := numField(t, res, "correct_fraction"); c >= 0.999 {
		t.Fatalf("correct fraction %v without indirect routes, want below 0.999", c)
	}
}

// TestComatoseNodeRejoins: a node whose loop stalls, or whose machine
// sleeps, for five minutes is dropped by the others, notices on waking,
// and rejoins before serving its stale state: no lookup near it goes
// wrong, though a node joined next to it meanwhile.
func TestComatoseNodeRejoins(t *testing.T) {
	for _, tc := range []struct {
		nodes int
		sleep bool
	}{{60, false}, {60, true}} {
		res, err := RunComatose(ComatoseConfig{Nodes: tc.nodes, Seed: 1, PauseSeconds: 300, Sleep: tc.sleep})
		if err != nil {
			t.Fatal(err)
		}
		if !boolField(t, res, "detected") || !boolField(t, res, "rejoined") {
			t.Fatalf("sleep %v: %v", tc.sleep, res.vals)
		}
		if w := numField(t, res, "wrong_after_wake"); w != 0 {
			t.Fatalf("sleep %v: %v lookups wrong after waking", tc.sleep, w)
		}
		if c := numField(t, res, "correct_fraction_after"); c != 1 {
			t.Fatalf("sleep %v: correct fraction %v after rejoining", tc.sleep, c)
		}
	}
}

// TestComatoseWithoutStallDetection: with the check off, the node wakes
// believing its old leaf set and delivers keys that now belong to the node
// that joined next to it, until gossip repairs its view: the burst of its
// own lookups at waking goes partly wrong.
func TestComatoseWithoutStallDetection(t *testing.T) {
	for _, sleep := range []bool{false, true} {
		res, err := RunComatose(ComatoseConfig{Nodes: 60, Seed: 1, PauseSeconds: 300, Sleep: sleep, NoStallDetect: true})
		if err != nil {
			t.Fatal(err)
		}
		if numField(t, res, "stalls_noticed") != 0 || boolField(t, res, "rejoined") {
			t.Fatalf("sleep %v: rejoined with the check off: %v", sleep, res.vals)
		}
		if w := numField(t, res, "wrong_after_wake"); w == 0 {
			t.Fatalf("sleep %v: no lookup went wrong after waking: %v", sleep, res.vals)
		}
	}
}

// TestSlowNodesNotDeclaredDead: with 10% of nodes behind 800 ms links,
// timeouts adapted to the measured round trips declare nobody live dead,
// while a crashed node is still dropped from every leaf set within a
// couple of heartbeat periods.
func TestSlowNodesNotDeclaredDead(t *testing.T) {
	res, err := RunSlow(SlowConfig{Nodes: 60, Seed: 1, SlowFraction: 0.1, ExtraMs: 800})
	if err != nil {
		t.Fatal(err)
	}
	if d := numField(t, res, "false_dead"); d != 0 {
		t.Fatalf("%v live nodes declared dead", d)
	}
	if c := numField(t, res, "correct_fraction"); c != 1 {
		t.Fatalf("correct fraction %v", c)
	}
	// Silence is noticed after SuspectAfter (40 s) plus up to one
	// heartbeat period; probes and the helpers' search take seconds.
	if res.Get("crash_detected_seconds") == nil || numField(t, res, "crash_detected_seconds") > 120 {
		t.Fatalf("crash found after %v s", res.Get("crash_detected_seconds"))
	}
}

// TestSlowNodesWithFixedTimeout: one short timeout for every link fires
// before slow nodes can answer: hops to them are re-routed and lookups
// they own land elsewhere.
func TestSlowNodesWithFixedTimeout(t *testing.T) {
	res, err := RunSlow(SlowConfig{Nodes: 60, Seed: 1, SlowFraction: 0.1, ExtraMs: 800, FixedTimeoutMs: 300})
	if err != nil {
		t.Fatal(err)
	}
	if c, d := numField(t, res, "correct_fraction"), numField(t, res, "false_dead"); c == 1 && d == 0 {
		t.Fatalf("a fixed 300 ms timeout did no harm: %v", res.vals)
	}
}
