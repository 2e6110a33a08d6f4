package scenario

import (
	"errors"
	"flag"
	"fmt"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/sim"
	"github.com/epost-mail/epost/internal/store"
)

// LeasesConfig sets the lease experiment.
type LeasesConfig struct {
	Nodes           int
	Seed            uint64
	Objects         int
	GarbageFraction float64
	ClockSkewDays   float64
	LeaseHours      float64
}

func leasesScenario() Scenario {
	return Scenario{
		Name:    "leases",
		Summary: "counter-based leases: referenced objects are renewed and kept, abandoned ones reclaimed, whatever the nodes' wall clocks say",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := LeasesConfig{}
			fs.IntVar(&c.Nodes, "nodes", 100, "number of nodes")
			fs.Uint64Var(&c.Seed, "seed", 1, "random seed; the same seed gives the same run")
			fs.IntVar(&c.Objects, "objects", 2000, "objects inserted")
			fs.Float64Var(&c.GarbageFraction, "garbage-fraction", 0.75, "fraction of objects abandoned (never renewed)")
			fs.Float64Var(&c.ClockSkewDays, "clock-skew-days", 0, "wall-clock error of a third of the nodes, in days (negative: behind)")
			fs.Float64Var(&c.LeaseHours, "lease-hours", 24, "lease granted on insert and renewal")
			return func() (*Result, error) { return RunLeases(c) }
		},
	}
}

// RunLeases runs the lease experiment: insert, renew the live quarter
// every quarter lease, abandon the rest, run two lease periods, count.
func RunLeases(c LeasesConfig) (*Result, error) {
	if c.Nodes < 4 || c.Objects < 1 || c.GarbageFraction < 0 || c.GarbageFraction > 1 || c.LeaseHours <= 0 {
		return nil, fmt.Errorf("%w: need --nodes >= 4, --objects >= 1, --garbage-fraction in [0,1], positive --lease-hours", ErrUsage)
	}
	cfg := sim.DefaultConfig(c.Seed)
	cfg.InvariantEvery = 0
	s, err := NewStorage(cfg, overlay.SimConfig(), past.DefaultConfig())
	if err != nil {
		return nil, err
	}
	m := StartMeter(s.S, env.Minute)
	// A third of the nodes run with their wall clock off from the start.
	skew := env.Duration(c.ClockSkewDays * float64(past.Day))
	_, err = s.BuildStorage(c.Nodes, 100*env.Millisecond, env.Minute, func(i int, h sim.HostID) {
		if i%3 == 0 {
			s.S.SetClock(h, skew, 0)
		}
	})
	if err != nil {
		return nil, err
	}
	lease := env.Duration(c.LeaseHours * float64(env.Hour))
	rng := s.S.Rand()

	type object struct {
		key  store.Key
		data []byte
		live bool
	}
	var objs []*object
	failed := 0
	insert := func(o *object, done func(error)) {
		h, ok := s.randomLive()
		if !ok {
			done(errors.New("no live node"))
			return
		}
		s.Past(h).Insert(o.data, lease, func(_ past.InsertResult, err error) { done(err) })
	}
	// Inserts over the first minutes.
	for i := 0; i < c.Objects; i++ {
		o := &object{data: randomObject(rng, 512, 2048), live: rng.Float64() >= c.GarbageFraction}
		o.key = store.ImmutableKey(o.data)
		s.S.After(env.Duration(i)*50*env.Millisecond, func() {
			insert(o, func(err error) {
				if err != nil {
					failed++
					return
				}
				objs = append(objs, o)
			})
		})
	}
	inserted := s.S.Now().Add(env.Duration(c.Objects)*50*env.Millisecond + env.Minute)
	if err := s.S.RunUntil(inserted); err != nil {
		return nil, err
	}
	bytesBefore := s.StoredBytes()
	// Owners renew what they still reference every quarter lease; a
	// renewal that fails (a majority lost it) re-inserts the bytes.
	renewals, reinserts, renewFailures := 0, 0, 0
	var renew func()
	renew = func() {
		for _, o := range objs {
			if !o.live {
				continue
			}
			h, ok := s.randomLive()
			if !ok {
				renewFailures++
				continue
			}
			renewals++
			s.Past(h).Renew(store.KindImmutable, o.key, lease, func(_ past.InsertResult, err error) {
				if err == nil {
					return
				}
				reinserts++
				insert(o, func(err error) {
					if err != nil {
						renewFailures++
					}
				})
			})
		}
		s.S.After(lease/4, renew)
	}
	s.S.After(lease/4, renew)
	if err := s.S.RunFor(2*lease + 10*env.Minute); err != nil {
		return nil, err
	}
	liveN, liveLost, garbageN, reclaimed := 0, 0, 0, 0
	for _, o := range objs {
		n := s.Copies(store.KindImmutable, o.key)
		if o.live {
			liveN++
			if n == 0 {
				liveLost++
			}
		} else {
			garbageN++
			if n == 0 {
				reclaimed++
			}
		}
	}
	st := s.TotalPastStats()
	res := &Result{}
	res.Set("nodes", c.Nodes)
	res.Set("seed", c.Seed)
	res.Set("clock_skew_days", c.ClockSkewDays)
	res.Set("lease_hours", c.LeaseHours)
	res.Set("objects", len(objs))
	res.Set("failed_inserts", failed)
	res.Set("live_objects", liveN)
	res.Set("live_lost", liveLost)
	res.Set("garbage_objects", garbageN)
	res.Set("garbage_reclaimed_fraction", round(ratio(float64(reclaimed), float64(garbageN)), 4))
	res.Set("storage_bytes_before", bytesBefore)
	res.Set("storage_bytes_after", s.StoredBytes())
	res.Set("renewals", renewals)
	res.Set("reinserts", reinserts)
	res.Set("renew_failures", renewFailures)
	res.Set("swept", st.Swept)
	m.Report(res)
	return res, nil
}
