package scenario

import (
	"flag"
	"fmt"
	"math/bits"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/sim"
)

// PartitionConfig sets the partition experiment.
type PartitionConfig struct {
	Nodes            int
	Seed             uint64
	Split            float64
	PartitionMinutes float64
	NoReintegrate    bool
}

func partitionScenario() Scenario {
	return Scenario{
		Name:    "partition",
		Summary: "split the ring in two, heal the network, measure how the rings merge",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := PartitionConfig{}
			fs.IntVar(&c.Nodes, "nodes", 100, "number of nodes")
			fs.Uint64Var(&c.Seed, "seed", 1, "random seed; the same seed gives the same run")
			fs.Float64Var(&c.Split, "split", 0.5, "fraction of nodes on one side")
			fs.Float64Var(&c.PartitionMinutes, "partition-minutes", 30, "virtual minutes the network stays split")
			fs.BoolVar(&c.NoReintegrate, "no-reintegrate", false, "turn partition reintegration off (shows the failure)")
			return func() (*Result, error) { return RunPartition(c) }
		},
	}
}

// RunPartition runs the partition experiment.
func RunPartition(c PartitionConfig) (*Result, error) {
	if c.Nodes < 4 || c.Split <= 0 || c.Split >= 1 || c.PartitionMinutes <= 0 {
		return nil, fmt.Errorf("%w: need --nodes >= 4, 0 < --split < 1, --partition-minutes > 0", ErrUsage)
	}
	cfg := sim.DefaultConfig(c.Seed)
	cfg.InvariantEvery = 0
	ocfg := overlay.SimConfig()
	if c.NoReintegrate {
		ocfg.ReintegratePeriod = 1000 * 24 * env.Hour
	}
	r := NewRing(cfg, ocfg)
	m := StartMeter(r.S, env.Minute)
	// The first three nodes are the community's configured bootstraps.
	for i := 0; i < 3 && i < c.Nodes; i++ {
		r.Bootstraps = append(r.Bootstraps, sim.AddrOf(sim.HostID(i)))
	}
	hosts, err := r.Build(c.Nodes, 100*env.Millisecond, 2*env.Minute)
	if err != nil {
		return nil, err
	}
	perm := r.S.Rand().Perm(len(hosts))
	var side []sim.HostID
	for _, i := range perm[:int(float64(len(hosts))*c.Split)] {
		side = append(side, hosts[i])
	}
	r.S.Partition(side)
	if err := r.S.RunFor(minutes(c.PartitionMinutes)); err != nil {
		return nil, err
	}
	ringsDuring := r.Rings()
	r.S.Heal()
	healedAt := env.Time(-1)
	healStart := r.S.Now()
	limit := healStart.Add(3 * overlay.SimConfig().ReintegratePeriod)
	for r.S.Now() < limit {
		if err := r.S.RunFor(env.Second); err != nil {
			return nil, err
		}
		if wrong, _ := r.WrongLeafSets(); wrong == 0 && r.Rings() == 1 {
			healedAt = r.S.Now()
			break
		}
	}
	res := &Result{}
	res.Set("nodes", c.Nodes)
	res.Set("seed", c.Seed)
	res.Set("split", c.Split)
	res.Set("partition_minutes", c.PartitionMinutes)
	res.Set("rings_during", ringsDuring)
	res.Set("healed", healedAt >= 0)
	if healedAt >= 0 {
		res.Set("heal_seconds", round(healedAt.Sub(healStart).Seconds(), 1))
	} else {
		wrong, first := r.WrongLeafSets()
		res.Set("heal_seconds", nil)
		res.Set("rings_after", r.Rings())
		res.Set("wrong_leaf_sets_after", wrong)
		res.Set("first_wrong", first)
	}
	st, err := r.RunLookups(1000)
	if err != nil {
		return nil, err
	}
	res.Set("correct_fraction_after", round(ratio(float64(st.Correct), float64(st.Issued)), 6))
	res.Set("reintegrations", r.TotalStats().Reintegrations)
	m.Report(res)
	return res, nil
}

// AnomalyConfig sets the routing-anomaly experiment.
type AnomalyConfig struct {
	Nodes       int
	Seed        uint64
	BrokenLinks float64
	Lookups     int
	NoIndirect  bool
}

func anomalyScenario() Scenario {
	return Scenario{
		Name:    "anomaly",
		Summary: "break a fraction of links (A-C down while A-B, B-C work): lookups and false deaths",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := AnomalyConfig{}
			fs.IntVar(&c.Nodes, "nodes", 500, "number of nodes")
			fs.Uint64Var(&c.Seed, "seed", 1, "random seed; the same seed gives the same run")
			fs.Float64Var(&c.BrokenLinks, "broken-links", 0.1, "fraction of node pairs whose direct link is broken")
			fs.IntVar(&c.Lookups, "lookups", 10000, "lookups of random keys from random nodes")
			fs.BoolVar(&c.NoIndirect, "no-indirect", false, "turn indirect routes off (shows the failure)")
			return func() (*Result, error) { return RunAnomaly(c) }
		},
	}
}

// RunAnomaly runs the routing-anomaly experiment.
func RunAnomaly(c AnomalyConfig) (*Result, error) {
	if c.Nodes < 4 || c.BrokenLinks < 0 || c.BrokenLinks >= 1 {
		return nil, fmt.Errorf("%w: need --nodes >= 4 and 0 <= --broken-links < 1", ErrUsage)
	}
	cfg := sim.DefaultConfig(c.Seed)
	cfg.InvariantEvery = 0
	ocfg := overlay.SimConfig()
	if c.NoIndirect {
		ocfg.IndirectHelpers = 0
	}
	r := NewRing(cfg, ocfg)
	m := StartMeter(r.S, env.Minute)
	hosts, err := r.Build(c.Nodes, 100*env.Millisecond, 2*env.Minute)
	if err != nil {
		return nil, err
	}
	pairs := c.Nodes * (c.Nodes - 1) / 2
	want := int(float64(pairs) * c.BrokenLinks)
	for r.S.BrokenLinks() < want {
		a, b := r.S.Rand().IntN(len(hosts)), r.S.Rand().IntN(len(hosts))
		if a != b {
			r.S.BreakLink(hosts[a], hosts[b])
		}
	}
	r.FalseDead = 0
	// Time for heartbeats, probes and repairs to meet the broken links.
	if err := r.S.RunFor(10 * env.Minute); err != nil {
		return nil, err
	}
	st, err := r.RunLookups(c.Lookups)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	res.Set("nodes", c.Nodes)
	res.Set("seed", c.Seed)
	res.Set("broken_link_fraction", round(float64(r.S.BrokenLinks())/float64(pairs), 4))
	res.Set("indirect", !c.NoIndirect)
	res.Set("lookups", st.Issued)
	res.Set("correct_fraction", round(ratio(float64(st.Correct), float64(st.Issued)), 6))
	res.Set("lost_fraction", round(ratio(float64(st.Issued-st.Delivered), float64(st.Issued)), 6))
	res.Set("dual_root_events", st.DualRoots)
	res.Set("indirect_links", r.IndirectLinks())
	res.Set("false_dead", r.FalseDead)
	tot := r.TotalStats()
	res.Set("searches", tot.Searches)
	res.Set("relayed", tot.Relayed)
	m.Report(res)
	return res, nil
}

// ComatoseConfig sets the comatose / sleeping node experiment.
type ComatoseConfig struct {
	Nodes        int
	Seed         uint64
	PauseSeconds float64
	Sleep        bool
	// NoStallDetect turns off the node's check of its own loop and clock
	// (shows the failure).
	NoStallDetect bool
}

func comatoseScenario() Scenario {
	return Scenario{
		Name:    "comatose",
		Summary: "one node stops answering (stalled loop, or a sleeping laptop with --sleep), a node joins next to it, then it wakes",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := ComatoseConfig{}
			fs.IntVar(&c.Nodes, "nodes", 100, "number of nodes")
			fs.Uint64Var(&c.Seed, "seed", 1, "random seed; the same seed gives the same run")
			fs.Float64Var(&c.PauseSeconds, "pause-seconds", 300, "how long the node is unresponsive")
			fs.BoolVar(&c.Sleep, "sleep", false, "the machine sleeps (its monotonic clock stops, its wall clock jumps) instead of its loop stalling")
			fs.BoolVar(&c.NoStallDetect, "no-stall-detect", false, "turn the stall and clock-jump check off (shows the failure)")
			return func() (*Result, error) { return RunComatose(c) }
		},
	}
}

// wakeLookups is how many lookups of keys near the victim are issued
// after it wakes: first a burst of wakeBurst from the victim itself, 1 ms
// apart (its users catching up), then the rest 100 ms apart, alternately
// from the victim and from random nodes.
const wakeLookups, wakeBurst = 600, 100

// wakeAt is when the i-th lookup after waking is issued, relative to the
// wake, and whether the victim issues it.
func wakeAt(i int) (env.Duration, bool) {
	if i < wakeBurst {
		return env.Duration(i) * env.Millisecond, true
	}
	return wakeBurst*env.Millisecond + env.Duration(i-wakeBurst)*100*env.Millisecond, i%2 == 0
}

// RunComatose runs the comatose-node experiment. While the victim is out,
// the others declare it dead and a new node joins between it and its right
// neighbour, taking over part of its key range. When it wakes, its state is
// stale: lookups of keys near it, most of them its own, show whether it
// serves that state (delivering keys that now belong to the newcomer) or
// rejoins first.
func RunComatose(c ComatoseConfig) (*Result, error) {
	if c.Nodes < 4 || c.PauseSeconds <= 0 {
		return nil, fmt.Errorf("%w: need --nodes >= 4 and --pause-seconds > 0", ErrUsage)
	}
	cfg := sim.DefaultConfig(c.Seed)
	cfg.InvariantEvery = 0
	ocfg := overlay.SimConfig()
	if c.NoStallDetect {
		ocfg.StallLimit = 1000 * 24 * env.Hour
		ocfg.WallJumpLimit = 1000 * 24 * env.Hour
	}
	r := NewRing(cfg, ocfg)
	hosts, err := r.Build(c.Nodes, 100*env.Millisecond, 2*env.Minute)
	if err != nil {
		return nil, err
	}
	victim := hosts[r.S.Rand().IntN(len(hosts))]
	vid := r.ids[victim].ID
	// The newcomer takes the middle of the arc from the victim to its
	// right neighbour: the keys in the arc's second half become its own.
	var right id.ID
	for i, h := range r.order {
		if h == victim {
			right = r.ids[r.order[(i+1)%len(r.order)]].ID
		}
	}
	hi, lo := vid.CW(right).Uint64s()
	newID := vid.Add(id.FromUint64(hi>>1, lo>>1|hi<<63))
	holders := func() int {
		n := 0
		for _, h := range hosts {
			if o := r.Node(h); o != nil && h != victim && o.Leaf().Contains(vid) {
				n++
			}
		}
		return n
	}
	pause := env.Duration(c.PauseSeconds * float64(env.Second))
	stalls0 := r.Node(victim).Stats().Stalls
	if c.Sleep {
		r.S.Suspend(victim, pause)
	} else {
		r.S.Pause(victim, pause)
	}
	start := r.S.Now()
	r.S.After(pause/2, func() { r.AddNodeWithID(id.NodeID{ID: newID}) })
	detectedAt := env.Time(-1)
	for r.S.Now() < start.Add(pause) {
		if err := r.S.RunFor(env.Second); err != nil {
			return nil, err
		}
		if detectedAt < 0 && holders() == 0 {
			detectedAt = r.S.Now()
		}
	}
	wake := r.S.Now()
	before := r.Lookups
	for i := 0; i < wakeLookups; i++ {
		at, own := wakeAt(i)
		r.S.After(at, func() {
			src := victim
			if !own {
				var ok bool
				if src, ok = r.randomActive(victim); !ok {
					return
				}
			}
			// Keys spread over the arc from the victim to its old right
			// neighbour.
			f := r.S.Rand().Uint64()
			h, _ := bits.Mul64(hi, f)
			r.Lookup(src, vid.Add(id.FromUint64(h, 0)), true)
		})
	}
	rejoinedAt := env.Time(-1)
	for r.S.Now() < wake.Add(10*env.Minute) {
		if err := r.S.RunFor(env.Second); err != nil {
			return nil, err
		}
		o := r.Node(victim)
		if wrong, _ := r.WrongLeafSets(); o.Stats().Stalls > stalls0 && o.Active() && wrong == 0 && holders() > 0 {
			rejoinedAt = r.S.Now()
			break
		}
	}
	last, _ := wakeAt(wakeLookups - 1)
	if end := wake.Add(last + 2*LookupDeadline); r.S.Now() < end {
		if err := r.S.RunUntil(end); err != nil {
			return nil, err
		}
	}
	woke := r.Lookups
	wokeIssued := woke.Issued - before.Issued
	wokeWrong := wokeIssued - (woke.Correct - before.Correct)
	st, err := r.RunLookups(1000)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	res.Set("nodes", c.Nodes)
	res.Set("seed", c.Seed)
	mode := "stalled"
	if c.Sleep {
		mode = "slept"
	}
	res.Set("mode", mode)
	res.Set("stall_detect", !c.NoStallDetect)
	res.Set("pause_seconds", c.PauseSeconds)
	res.Set("detected", detectedAt >= 0)
	if detectedAt >= 0 {
		res.Set("detect_seconds", round(detectedAt.Sub(start).Seconds(), 1))
	}
	res.Set("rejoined", rejoinedAt >= 0)
	if rejoinedAt >= 0 {
		res.Set("rejoin_seconds", round(rejoinedAt.Sub(wake).Seconds(), 1))
	}
	res.Set("stalls_noticed", r.Node(victim).Stats().Stalls)
	res.Set("lookups_after_wake", wokeIssued)
	res.Set("wrong_after_wake", wokeWrong)
	res.Set("correct_fraction_after", round(ratio(float64(st.Correct), float64(st.Issued)), 6))
	return res, nil
}

// SlowConfig sets the slow-node experiment.
type SlowConfig struct {
	Nodes        int
	Seed         uint64
	SlowFraction float64
	ExtraMs      int
	// FixedTimeoutMs, if positive, replaces the timeouts derived from
	// measured round-trip times with this one value (shows the failure).
	FixedTimeoutMs int
}

func slowScenario() Scenario {
	return Scenario{
		Name:    "slow",
		Summary: "some nodes sit behind slow, congested links: they must not be declared dead, while a crashed node is found quickly",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := SlowConfig{}
			fs.IntVar(&c.Nodes, "nodes", 200, "number of nodes")
			fs.Uint64Var(&c.Seed, "seed", 1, "random seed; the same seed gives the same run")
			fs.Float64Var(&c.SlowFraction, "slow-fraction", 0.1, "fraction of nodes behind a slow link")
			fs.IntVar(&c.ExtraMs, "extra-ms", 800, "one-way latency added to and from a slow node")
			fs.IntVar(&c.FixedTimeoutMs, "fixed-timeout", 0, "use this fixed timeout in ms instead of adapting to round-trip times (shows the failure)")
			return func() (*Result, error) { return RunSlow(c) }
		},
	}
}

// RunSlow runs the slow-node experiment.
func RunSlow(c SlowConfig) (*Result, error) {
	if c.Nodes < 4 || c.SlowFraction < 0 || c.SlowFraction >= 1 || c.ExtraMs < 0 || c.FixedTimeoutMs < 0 {
		return nil, fmt.Errorf("%w: need --nodes >= 4, 0 <= --slow-fraction < 1, --extra-ms >= 0, --fixed-timeout >= 0", ErrUsage)
	}
	cfg := sim.DefaultConfig(c.Seed)
	cfg.InvariantEvery = 0
	ocfg := overlay.SimConfig()
	if c.FixedTimeoutMs > 0 {
		// A clamp of zero width: every timeout is this one, measured
		// round-trip times or not.
		fixed := env.Duration(c.FixedTimeoutMs) * env.Millisecond
		ocfg.DefaultTimeout, ocfg.MinTimeout, ocfg.MaxTimeout = fixed, fixed, fixed
	}
	r := NewRing(cfg, ocfg)
	hosts, err := r.Build(c.Nodes, 100*env.Millisecond, 2*env.Minute)
	if err != nil {
		return nil, err
	}
	perm := r.S.Rand().Perm(len(hosts))
	nslow := int(float64(len(hosts)) * c.SlowFraction)
	for _, i := range perm[:nslow] {
		r.S.SetExtraLatency(hosts[i], env.Duration(c.ExtraMs)*env.Millisecond)
	}
	r.FalseDead = 0
	if err := r.S.RunFor(20 * env.Minute); err != nil {
		return nil, err
	}
	st, err := r.RunLookups(2000)
	if err != nil {
		return nil, err
	}
	falseDead := r.FalseDead
	// A fast node crashes: how long until no leaf set holds it?
	victim := hosts[perm[len(perm)-1]]
	vid := r.ids[victim].ID
	r.Crash(victim)
	start := r.S.Now()
	foundAt := env.Time(-1)
	for r.S.Now() < start.Add(10*env.Minute) {
		if err := r.S.RunFor(env.Second); err != nil {
			return nil, err
		}
		held := false
		for _, h := range hosts {
			if o := r.Node(h); o != nil && o.Leaf().Contains(vid) {
				held = true
				break
			}
		}
		if !held {
			foundAt = r.S.Now()
			break
		}
	}
	res := &Result{}
	res.Set("nodes", c.Nodes)
	res.Set("seed", c.Seed)
	res.Set("slow_nodes", nslow)
	res.Set("extra_ms", c.ExtraMs)
	if c.FixedTimeoutMs > 0 {
		res.Set("fixed_timeout_ms", c.FixedTimeoutMs)
	}
	res.Set("false_dead", falseDead)
	res.Set("correct_fraction", round(ratio(float64(st.Correct), float64(st.Issued)), 6))
	res.Set("lost_fraction", round(ratio(float64(st.Issued-st.Delivered), float64(st.Issued)), 6))
	if foundAt >= 0 {
		res.Set("crash_detected_seconds", round(foundAt.Sub(start).Seconds(), 1))
	} else {
		res.Set("crash_detected_seconds", nil)
	}
	return res, nil
}
