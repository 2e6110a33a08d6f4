package scenario

import (
	"flag"
	"fmt"
	"runtime"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/sim"
)

// RoutingConfig sets the routing experiment.
type RoutingConfig struct {
	Nodes         int
	Seed          uint64
	Lookups       int
	JoinInterval  env.Duration
	SettleMinutes int
}

func routingScenario() Scenario {
	return Scenario{
		Name:    "routing",
		Summary: "N nodes join, settle, then random lookups: hops, correctness, stretch",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := RoutingConfig{}
			var joinMs int
			fs.IntVar(&c.Nodes, "nodes", 1000, "number of nodes")
			fs.Uint64Var(&c.Seed, "seed", 1, "random seed; the same seed gives the same run")
			fs.IntVar(&c.Lookups, "lookups", 10000, "lookups of random keys from random nodes")
			fs.IntVar(&joinMs, "join-interval-ms", 100, "virtual time between two nodes' joins")
			fs.IntVar(&c.SettleMinutes, "settle-minutes", 20, "virtual minutes between the last join and the lookups")
			return func() (*Result, error) {
				c.JoinInterval = env.Duration(joinMs) * env.Millisecond
				return RunRouting(c)
			}
		},
	}
}

// RunRouting runs the routing experiment.
func RunRouting(c RoutingConfig) (*Result, error) {
	if c.Nodes < 1 || c.Lookups < 0 {
		return nil, fmt.Errorf("%w: --nodes must be at least 1 and --lookups not negative", ErrUsage)
	}
	cfg := sim.DefaultConfig(c.Seed)
	cfg.InvariantEvery = 0
	r := NewRing(cfg, overlay.SimConfig())
	m := StartMeter(r.S, env.Minute)
	for i := 0; i < c.Nodes; i++ {
		r.S.At(env.Time(i)*env.Time(c.JoinInterval), func() { r.AddNode() })
	}
	joined := env.Time(c.Nodes) * env.Time(c.JoinInterval)
	// Steady-state control traffic: over the settle period, minus its
	// first five minutes, which still carry the last joins' aftermath.
	settled := joined.Add(env.Duration(c.SettleMinutes) * env.Minute)
	quiet := joined
	if c.SettleMinutes > 5 {
		quiet = joined.Add(5 * env.Minute)
	}
	var quietStats overlay.Stats
	r.S.At(quiet, func() { quietStats = r.TotalStats() })
	if err := r.S.RunUntil(settled); err != nil {
		return nil, err
	}
	settledStats := r.TotalStats()
	control := controlSent(settledStats) - controlSent(quietStats)
	byID := make(map[id.ID]*overlay.Overlay, len(r.nodes))
	for _, o := range r.nodes {
		if o != nil {
			byID[o.Self().ID.ID] = o
		}
	}
	var tableSum, leafSum, outsideSum, mutualSum, up int
	for _, o := range r.nodes {
		if o != nil {
			tableSum += o.Table().Len()
			leafSum += o.Leaf().Len()
			for _, h := range o.Table().All() {
				if o.Leaf().Contains(h.ID.ID) {
					continue
				}
				outsideSum++
				// A probe's answer refreshes both ends: an entry whose
				// node also lists us costs one probe for two.
				if y := byID[h.ID.ID]; y != nil {
					if back, ok := y.Table().Lookup(o.Self().ID.ID); ok && back.ID == o.Self().ID {
						mutualSum++
					}
				}
			}
			up++
		}
	}
	// Lookups at 100 per virtual second, then time for the last to land.
	for i := 0; i < c.Lookups; i++ {
		r.S.After(env.Duration(i)*10*env.Millisecond, func() { r.RandomLookup(true) })
	}
	if err := r.S.RunFor(env.Duration(c.Lookups)*10*env.Millisecond + 2*LookupDeadline); err != nil {
		return nil, err
	}
	res := &Result{}
	res.Set("nodes", c.Nodes)
	res.Set("seed", c.Seed)
	res.Set("active_nodes", r.ActiveCount())
	st := r.Lookups
	fillLookupResult(res, st)
	res.Set("dual_root_events", st.DualRoots)
	tot := r.TotalStats()
	res.Set("rerouted_hops", tot.Rerouted)
	// Per-node state and maintenance cost, for how they grow with N.
	res.Set("mean_table_entries", round(ratio(float64(tableSum), float64(up)), 2))
	res.Set("mean_leaf_set", round(ratio(float64(leafSum), float64(up)), 2))
	// Entries outside the leaf set are the ones only table probes keep
	// fresh: heartbeats and leaf-set traffic cover the others.
	res.Set("mean_table_entries_outside_leaf", round(ratio(float64(outsideSum), float64(up)), 2))
	res.Set("table_outside_leaf_mutual_fraction", round(ratio(float64(mutualSum), float64(outsideSum)), 3))
	nodeSeconds := float64(up) * float64(settled.Sub(quiet)) / float64(env.Second)
	res.Set("control_msgs_per_node_s", round(ratio(float64(control), nodeSeconds), 4))
	setTrafficBreakdown(res, quietStats, settledStats, nodeSeconds)
	m.Report(res)
	runtime.KeepAlive(r)
	return res, nil
}

func fillLookupResult(res *Result, st LookupStats) {
	res.Set("lookups", st.Issued)
	res.Set("avg_hops", round(ratio(float64(st.HopsSum), float64(st.Delivered)), 3))
	res.Set("max_hops", st.MaxHops)
	res.Set("correct_fraction", round(ratio(float64(st.Correct), float64(st.Issued)), 6))
	res.Set("lost_fraction", round(ratio(float64(st.Issued-st.Delivered), float64(st.Issued)), 6))
	res.Set("avg_stretch", round(ratio(st.StretchSum, float64(st.Stretches)), 3))
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// controlSent counts maintenance messages: probes, heartbeats, joins,
// rows, announcements and their acks.
func controlSent(s overlay.Stats) uint64 { return s.SentControl + s.SentControlAcks }
