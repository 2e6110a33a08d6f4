package scenario

import (
	"flag"
	"fmt"
	"runtime"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/sim"
)

// PingConfig sets the ping calibration run.
type PingConfig struct {
	Nodes    int
	Seed     uint64
	Seconds  int
	Loss     float64
	Reliable bool
}

func pingScenario() Scenario {
	return Scenario{
		Name:    "ping",
		Summary: "engine calibration: N nodes ping random peers once a second; events/s and memory per node",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := PingConfig{}
			fs.IntVar(&c.Nodes, "nodes", 10000, "number of simulated nodes")
			fs.Uint64Var(&c.Seed, "seed", 1, "random seed; the same seed gives the same run")
			fs.IntVar(&c.Seconds, "seconds", 30, "virtual seconds to simulate")
			fs.Float64Var(&c.Loss, "loss", 0, "probability that a message is lost")
			fs.BoolVar(&c.Reliable, "reliable", false, "send pings with reliable delivery")
			return func() (*Result, error) { return RunPing(c) }
		},
	}
}

// RunPing runs the ping calibration.
func RunPing(c PingConfig) (*Result, error) {
	if c.Nodes < 2 {
		return nil, fmt.Errorf("%w: --nodes must be at least 2", ErrUsage)
	}
	if c.Seconds < 1 {
		return nil, fmt.Errorf("%w: --seconds must be at least 1", ErrUsage)
	}
	heap0 := HeapInUse()
	cfg := sim.DefaultConfig(c.Seed)
	cfg.Loss = c.Loss
	s := sim.New(cfg)
	peers := make([]env.Addr, c.Nodes)
	for i := range peers {
		peers[i] = sim.AddrOf(sim.HostID(i))
	}
	var ps []*Pinger
	start := StartPinger(peers, env.Second, c.Reliable, func(p *Pinger) { ps = append(ps, p) })
	for i := 0; i < c.Nodes; i++ {
		s.Add(start)
	}
	m := StartMeter(s, env.Second)
	if err := s.RunFor(env.Duration(c.Seconds) * env.Second); err != nil {
		return nil, err
	}
	m.Stop()
	perNode := float64(HeapInUse()-heap0) / float64(c.Nodes)
	var pongs int
	var rtt env.Duration
	for _, p := range ps {
		pongs += p.Pongs
		rtt += p.RTTSum
	}
	st := s.Stats()
	r := &Result{}
	r.Set("nodes", c.Nodes)
	r.Set("seed", c.Seed)
	r.Set("virtual_seconds", c.Seconds)
	r.Set("messages", st.Sent)
	r.Set("pongs", pongs)
	if pongs > 0 {
		r.Set("avg_rtt_ms", round(float64(rtt)/float64(pongs)/float64(env.Millisecond), 3))
	}
	m.Report(r)
	r.Set("heap_bytes_per_node", round(perNode, 0))
	runtime.KeepAlive(s)
	return r, nil
}
