package scenario

import (
	"flag"
	"fmt"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/sim"
)

// ChurnConfig sets the churn experiment.
type ChurnConfig struct {
	Nodes           int
	Seed            uint64
	SessionMinutes  float64
	DowntimeMinutes float64
	WarmupMinutes   float64
	Minutes         float64
	LookupRate      float64 // per live node per second
}

func churnScenario() Scenario {
	return Scenario{
		Name:    "churn",
		Summary: "nodes crash and rejoin (exponential sessions) while lookups run: correctness, loss, control traffic",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := ChurnConfig{}
			fs.IntVar(&c.Nodes, "nodes", 1000, "number of nodes (each alternates between up and down)")
			fs.Uint64Var(&c.Seed, "seed", 1, "random seed; the same seed gives the same run")
			fs.Float64Var(&c.SessionMinutes, "session-minutes", 30, "mean session length (exponential)")
			fs.Float64Var(&c.DowntimeMinutes, "downtime-minutes", 10, "mean time a crashed node stays down (exponential)")
			fs.Float64Var(&c.WarmupMinutes, "warmup-minutes", 30, "virtual minutes of churn before measuring")
			fs.Float64Var(&c.Minutes, "minutes", 60, "virtual minutes measured")
			fs.Float64Var(&c.LookupRate, "lookup-rate", 0.01, "lookups per live node per second")
			return func() (*Result, error) { return RunChurn(c) }
		},
	}
}

func minutes(m float64) env.Duration { return env.Duration(m * float64(env.Minute)) }

// RunChurn runs the churn experiment.
func RunChurn(c ChurnConfig) (*Result, error) {
	if c.Nodes < 2 || c.SessionMinutes <= 0 || c.DowntimeMinutes <= 0 || c.Minutes <= 0 || c.LookupRate < 0 {
		return nil, fmt.Errorf("%w: need --nodes >= 2 and positive durations", ErrUsage)
	}
	cfg := sim.DefaultConfig(c.Seed)
	cfg.InvariantEvery = 0
	r := NewRing(cfg, overlay.SimConfig())
	m := StartMeter(r.S, env.Minute)
	const joinInterval = 100 * env.Millisecond
	hosts := make([]sim.HostID, 0, c.Nodes)
	for i := 0; i < c.Nodes; i++ {
		r.S.At(env.Time(i)*env.Time(joinInterval), func() { hosts = append(hosts, r.AddNode()) })
	}
	joined := env.Time(c.Nodes) * env.Time(joinInterval)
	if err := r.S.RunUntil(joined.Add(env.Minute)); err != nil {
		return nil, err
	}
	start := r.S.Now().Add(minutes(c.WarmupMinutes))
	end := start.Add(minutes(c.Minutes))
	r.S.StartChurn(sim.Churn{
		MeanSession:  minutes(c.SessionMinutes),
		MeanDowntime: minutes(c.DowntimeMinutes),
		Until:        end,
		OnCrash:      func(h sim.HostID) { r.crashed(h) },
	}, hosts)

	// Lookups: each virtual second, rate x live nodes of them, spread over
	// the second; fractions carry over.
	var carry float64
	var liveSamples, liveSum float64
	var tick func()
	tick = func() {
		now := r.S.Now()
		if now >= end {
			return
		}
		measured := now >= start
		live := 0
		for _, h := range hosts {
			if r.S.Up(h) {
				live++
			}
		}
		if measured {
			liveSamples++
			liveSum += float64(live)
		}
		carry += c.LookupRate * float64(live)
		for ; carry >= 1; carry-- {
			at := env.Duration(r.S.Rand().Int64N(int64(env.Second)))
			r.S.After(at, func() { r.RandomLookup(measured) })
		}
		r.S.After(env.Second, tick)
	}
	r.S.After(0, tick)
	if err := r.S.RunUntil(start); err != nil {
		return nil, err
	}
	before := r.TotalStats()
	if err := r.S.RunUntil(end); err != nil {
		return nil, err
	}
	after := r.TotalStats()
	// Let the last lookups land or time out.
	if err := r.S.RunFor(2 * LookupDeadline); err != nil {
		return nil, err
	}
	st := r.Lookups
	res := &Result{}
	res.Set("nodes", c.Nodes)
	res.Set("seed", c.Seed)
	res.Set("session_minutes", c.SessionMinutes)
	res.Set("downtime_minutes", c.DowntimeMinutes)
	res.Set("measured_minutes", c.Minutes)
	avgLive := ratio(liveSum, liveSamples)
	res.Set("avg_live_nodes", round(avgLive, 1))
	fillLookupResult(res, st)
	res.Set("dual_root_events", st.DualRoots)
	res.Set("lost_source_crashed", st.LostSourceCrashed)
	secs := minutes(c.Minutes).Seconds()
	ctl := float64(after.SentControl - before.SentControl)
	acks := float64(after.SentControlAcks-before.SentControlAcks) + float64(after.SentLookupAcks-before.SentLookupAcks)
	res.Set("control_msgs_per_node_per_s", round(ratio(ctl, avgLive*secs), 4))
	res.Set("control_msgs_with_acks_per_node_per_s", round(ratio(ctl+acks, avgLive*secs), 4))
	res.Set("crashes", r.S.Stats().Crashes)
	res.Set("rerouted_hops", after.Rerouted-before.Rerouted)
	res.Set("resent", after.Resent-before.Resent)
	res.Set("declared_dead", after.DeclaredDead-before.DeclaredDead)
	res.Set("stalls", after.Stalls-before.Stalls)
	res.Set("searches", after.Searches-before.Searches)
	res.Set("indirect_found", after.IndirectFound-before.IndirectFound)
	res.Set("reintegrations", after.Reintegrations-before.Reintegrations)
	setTrafficBreakdown(res, before, after, avgLive*secs)
	m.Report(res)
	return res, nil
}

// crashed records a crash the churn generator made.
func (r *Ring) crashed(h sim.HostID) {
	if o := r.nodes[h]; o != nil {
		r.retire[h] = addStats(r.retire[h], o.Stats())
		r.nodes[h] = nil
	}
}

// setTrafficBreakdown reports the overlay's messages between two
// snapshots by type and its probes by reason, per node-second.
func setTrafficBreakdown(res *Result, before, after overlay.Stats, nodeSeconds float64) {
	for i := range after.Probes {
		n := overlay.ProbeReason(i).String()
		res.Set("probes_"+n+"_per_node_per_s", round(ratio(float64(after.Probes[i]-before.Probes[i]), nodeSeconds), 4))
	}
	names := []string{"route", "route_ack", "join_reply", "probe", "probe_reply", "heartbeat", "row_request", "row_reply", "direct", "probe_via", "via_reply", "relay", "delivered"}
	for i, n := range names {
		res.Set("sent_"+n+"_per_node_per_s", round(ratio(float64(after.ByType[i]-before.ByType[i]), nodeSeconds), 4))
	}
}
