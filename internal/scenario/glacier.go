package scenario

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"math"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/sim"
	store "github.com/epost-mail/epost/internal/store/object"
)

// GlacierConfig is the glacier experiment's command line.
type GlacierConfig struct {
	Nodes   int
	Objects int
	Owners  int
	// MinKB and MaxKB bound an object's size (uniform).
	MinKB, MaxKB int
	// SpreadMinutes spreads the objects' arrival in the archive queues
	// over this long (0: all at once).
	SpreadMinutes float64
	Fail          float64
	// Correlated fails a contiguous arc of the ring instead of a uniform
	// random set of nodes.
	Correlated bool
	// RepairRounds > 0: after the first failure, let maintenance run this
	// many audit periods, then fail the same fraction of the survivors
	// again before recovering.
	RepairRounds int
	AuditMinutes float64
	// CompactHours overrides how long a partial bundle waits before its
	// owner compacts it (negative: the product's default; 0: never).
	CompactHours float64
	Seed         uint64
	Seeds        int
}

func glacierScenario() Scenario {
	return Scenario{
		Name:    "glacier",
		Summary: "the erasure-coded archive: archive objects, fail a fraction of all nodes at once, rebuild every object from the surviving fragments",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := GlacierConfig{}
			fs.IntVar(&c.Nodes, "nodes", 1000, "number of nodes")
			fs.IntVar(&c.Objects, "objects", 4000, "objects archived")
			fs.IntVar(&c.Owners, "owners", 5, "users whose objects they are, each archiving from its own node")
			fs.IntVar(&c.MinKB, "min-kb", 1, "smallest object, KiB")
			fs.IntVar(&c.MaxKB, "max-kb", 20, "largest object, KiB")
			fs.Float64Var(&c.SpreadMinutes, "spread-minutes", 0, "spread the objects' arrival over this many virtual minutes")
			fs.Float64Var(&c.Fail, "fail", 0.6, "fraction of all nodes that fail at once")
			fs.BoolVar(&c.Correlated, "correlated", false, "fail a contiguous arc of the ring rather than a uniform random set")
			fs.IntVar(&c.RepairRounds, "repair-rounds", 0, "audit periods of maintenance after the first failure, followed by a second failure of the same fraction (0: one failure)")
			fs.Float64Var(&c.AuditMinutes, "audit-minutes", float64(glacier.DefaultConfig().AuditPeriod/env.Minute), "audit period, virtual minutes (default: the product's)")
			fs.Float64Var(&c.CompactHours, "compact-hours", -1, "compact partial bundles once the oldest has waited this many virtual hours (0: never; default: the product's)")
			fs.Uint64Var(&c.Seed, "seed", 1, "first random seed")
			fs.IntVar(&c.Seeds, "seeds", 1, "number of seeds (seed, seed+1, ...); results are aggregated")
			return func() (*Result, error) { return RunGlacier(c) }
		},
	}
}

// glacierRun is one seed's outcome.
type glacierRun struct {
	objects, recovered   int
	minSurviving         int
	uniqueBytes          int64
	fragmentBytes        int64
	lossCorrelated       float64
	lossIndependent      float64
	maintMsgs, renewMsgs uint64
	maintNodeMinutes     float64
	delays               []float64
	bundles, unrecovered int
	stats                glacier.Stats
	worstLost            int // bundles the worst choice of failed nodes would lose
}

// NewGlacierCommunity builds a simulated community of n nodes, each
// running PAST with Glacier between PAST and the layer above, and returns
// it with every host's Glacier (the latest incarnation's).
func NewGlacierCommunity(seed uint64, n int, gcfg glacier.Config) (*Storage, map[sim.HostID]*glacier.Glacier, []sim.HostID, error) {
	cfg := sim.DefaultConfig(seed)
	cfg.InvariantEvery = 0
	s, err := NewStorage(cfg, overlay.SimConfig(), past.DefaultConfig())
	if err != nil {
		return nil, nil, nil, err
	}
	gls := map[sim.HostID]*glacier.Glacier{}
	s.Between = func(h sim.HostID, e env.Env, disk *past.MemStorage, upper overlay.App) (overlay.App, func(*overlay.Overlay)) {
		g, err := glacier.New(gcfg, e, disk, s.Verifier, upper)
		if err != nil {
			panic(err) // the harness's own configuration
		}
		gls[h] = g
		return g, func(o *overlay.Overlay) {
			if err := g.Attach(o); err != nil {
				panic(err)
			}
		}
	}
	hosts, err := s.BuildStorage(n, 100*env.Millisecond, 2*env.Minute, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	return s, gls, hosts, nil
}

// RunGlacier runs the glacier experiment over c.Seeds seeds.
func RunGlacier(c GlacierConfig) (*Result, error) {
	if c.Nodes < 4 || c.Objects < 1 || c.Owners < 1 || c.Fail < 0 || c.Fail >= 1 || c.MinKB < 0 || c.MaxKB < c.MinKB || c.Seeds < 1 || c.AuditMinutes <= 0 {
		return nil, fmt.Errorf("%w: need --nodes >= 4, --objects >= 1, --owners >= 1, 0 <= --fail < 1, --seeds >= 1", ErrUsage)
	}
	gcfg := glacier.ConfigFor(c.Nodes)
	gcfg.AuditPeriod = minutes(c.AuditMinutes)
	if c.CompactHours >= 0 {
		gcfg.CompactAfter = minutes(60 * c.CompactHours)
	}
	var runs []glacierRun
	for i := 0; i < c.Seeds; i++ {
		r, err := runGlacierSeed(c, gcfg, c.Seed+uint64(i))
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	var res Result
	res.Set("nodes", c.Nodes)
	res.Set("objects", c.Objects)
	res.Set("seeds", c.Seeds)
	res.Set("failed_fraction", c.Fail)
	res.Set("correlated", c.Correlated)
	objects, recovered, bundles, unrecovered := 0, 0, 0, 0
	minSurv := math.MaxInt
	var unique, frag int64
	lossC, lossI := 0.0, 0.0
	var maint, renewals uint64
	var nodeMin float64
	var delays []float64
	minFrac := 1.0
	worst := 0
	var st glacier.Stats
	for _, r := range runs {
		worst += r.worstLost
		st.Bundles += r.stats.Bundles
		st.Archived += r.stats.Archived
		st.Incomplete += r.stats.Incomplete
		st.Handed += r.stats.Handed
		st.Dropped += r.stats.Dropped
		st.BadFragments += r.stats.BadFragments
		st.Repairs += r.stats.Repairs
		st.Regenerated += r.stats.Regenerated
		objects += r.objects
		recovered += r.recovered
		bundles += r.bundles
		unrecovered += r.unrecovered
		minSurv = min(minSurv, r.minSurviving)
		unique += r.uniqueBytes
		frag += r.fragmentBytes
		lossC = max(lossC, r.lossCorrelated)
		lossI = max(lossI, r.lossIndependent)
		maint += r.maintMsgs
		renewals += r.renewMsgs
		st.Compactions += r.stats.Compactions
		st.Released += r.stats.Released
		nodeMin += r.maintNodeMinutes
		delays = append(delays, r.delays...)
		minFrac = min(minFrac, float64(r.recovered)/float64(max(r.objects, 1)))
	}
	res.Set("recovered_fraction", float64(recovered)/float64(max(objects, 1)))
	res.Set("recovered_fraction_min_seed", minFrac)
	res.Set("objects_lost", objects-recovered)
	res.Set("bundles", bundles)
	res.Set("bundles_sealed", st.Bundles)
	res.Set("bundles_fully_acknowledged", st.Archived)
	res.Set("placements_incomplete", st.Incomplete)
	res.Set("fragments_handed_on", st.Handed)
	res.Set("fragments_dropped", st.Dropped)
	res.Set("bad_fragments", st.BadFragments)
	res.Set("repairs", st.Repairs)
	res.Set("fragments_regenerated", st.Regenerated)
	res.Set("bundles_unrecovered", unrecovered)
	res.Set("min_surviving_fragments", minSurv)
	res.Set("fragments_n", gcfg.Code.N)
	res.Set("fragments_m", gcfg.Code.M)
	res.Set("fragments_per_node", gcfg.PerNode)
	so := float64(frag) / float64(max(unique, 1))
	res.Set("storage_overhead", round3(so))
	res.Set("total_overhead", round3(so+float64(past.DefaultConfig().Replicas)))
	res.Set("loss_probability_model", lossC)
	res.Set("compactions", st.Compactions)
	res.Set("bundles_released", st.Released)
	// The model is the uniform failure of exactly F*N nodes; under
	// --correlated the simulated failure is an arc, which the model does
	// not describe.
	if c.Correlated {
		res.Set("loss_model", fmt.Sprintf("model: exactly %.0f%% of %d nodes fail at once, uniformly chosen; worst bundle, actual placement. Simulated failure: a contiguous arc of %.0f%% of the ring's nodes (see min_surviving_fragments)", c.Fail*100, c.Nodes, c.Fail*100))
	} else {
		res.Set("loss_model", fmt.Sprintf("exactly %.0f%% of %d nodes fail at once, uniformly chosen; worst bundle, actual placement", c.Fail*100, c.Nodes))
	}
	res.Set("loss_probability_independent", lossI)
	res.Set("bundles_lost_to_worst_failure", worst)
	res.Set("maintenance_msgs_per_node_per_min", round3(float64(maint)/math.Max(nodeMin, 1e-9)))
	res.Set("audit_minutes", c.AuditMinutes)
	// Renewals run every RenewPeriod (30 days), outside the measured
	// window: their rate, one routed message per fragment of every live
	// bundle per period.
	res.Set("renewal_msgs_per_node_per_min", (float64(renewals) / float64(c.Nodes*c.Seeds) / (float64(gcfg.RenewPeriod) / float64(env.Minute))))
	sort.Float64s(delays)
	res.Set("archive_delay_p99_s", round3(quantile(delays, 0.99)))
	res.Set("archive_delay_max_s", round3(quantile(delays, 1)))
	return &res, nil
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// quantile of sorted xs (0 when empty).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

func runGlacierSeed(c GlacierConfig, gcfg glacier.Config, seed uint64) (glacierRun, error) {
	var out glacierRun
	s, gls, hosts, err := NewGlacierCommunity(seed, c.Nodes, gcfg)
	if err != nil {
		return out, err
	}
	rng := s.S.Rand()
	rr := randReader{rng}

	// Owners, each archiving from its own node.
	type ownerInfo struct {
		uid  id.ID
		home sim.HostID
		keys identity.UserKeys
	}
	owners := make([]ownerInfo, c.Owners)
	for i := range owners {
		address := fmt.Sprintf("user%d@sim.epost", i)
		keys, err := identity.GenerateUserKeys(rr, address)
		if err != nil {
			return out, err
		}
		cert, err := s.CA.IssueUser(rr, address, keys.Signing.Public(), keys.Sealing.Recipient())
		if err != nil {
			return out, err
		}
		home := hosts[rng.IntN(len(hosts))]
		owners[i] = ownerInfo{uid: cert.UserID.ID, home: home, keys: keys}
		if err := gls[home].AddOwner(address, keys.Signing, cert.Bytes(), 0, glacier.Hash{}, true); err != nil {
			return out, err
		}
	}
	// Objects: random ciphertext-like bytes, content-addressed.
	want := map[store.Key]bool{}
	spread := minutes(c.SpreadMinutes)
	start := s.S.Now()
	for i := 0; i < c.Objects; i++ {
		o := owners[i%len(owners)]
		size := (c.MinKB + rng.IntN(c.MaxKB-c.MinKB+1)) << 10
		data := make([]byte, max(size, 1))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		key := store.Key(sha256.Sum256(data))
		want[key] = true
		out.uniqueBytes += int64(len(data))
		at := env.Duration(0)
		if spread > 0 {
			at = env.Duration(int64(spread) * int64(i) / int64(c.Objects))
		}
		s.S.At(start.Add(at), func() {
			if err := gls[o.home].Archive(o.uid, glacier.Object{Key: [32]byte(key), Kind: uint8(store.KindImmutable), Data: data}); err != nil {
				panic(err)
			}
		})
	}
	out.objects = len(want)
	archived := map[string]bool{}
	for _, o := range owners {
		o := o
		gls[o.home].OnArchived = func(_ id.ID, seq uint64, waited []env.Duration) {
			archived[fmt.Sprintf("%s/%d", o.uid, seq)] = true
			for _, d := range waited {
				out.delays = append(out.delays, float64(d)/float64(env.Second))
			}
		}
	}
	// Let every queue seal (ArchiveDelay) and every placement finish.
	if err := s.S.RunFor(spread + gcfg.ArchiveDelay + 2*env.Minute); err != nil {
		return out, err
	}
	// Objects spread over time leave partial bundles: let their owners
	// compact them.
	if spread > 0 && gcfg.CompactAfter > 0 {
		if err := s.S.RunFor(gcfg.CompactAfter + 30*env.Minute); err != nil {
			return out, err
		}
	}
	// Maintenance settles over two audit periods; its traffic is measured
	// there, with nothing failed.
	before := uint64(0)
	for _, g := range gls {
		before += g.Stats().MaintenanceMsgs
	}
	settle := 2 * gcfg.AuditPeriod
	if err := s.S.RunFor(settle); err != nil {
		return out, err
	}
	after := uint64(0)
	for _, g := range gls {
		after += g.Stats().MaintenanceMsgs
	}
	out.maintMsgs = after - before

	out.maintNodeMinutes = float64(c.Nodes) * float64(settle) / float64(env.Minute)

	// The placement, from the disks (the oracle's view): fragments per
	// holder for every bundle.
	place := func() map[id.ID]map[sim.HostID]int {
		m := map[id.ID]map[sim.HostID]int{}
		for _, h := range hosts {
			if !s.S.Up(h) {
				continue
			}
			keys, _, _ := s.Disk(h).Keys(store.KindFragment, store.Range{}, nil, 1<<30)
			for _, k := range keys {
				if k[16] == 0xFF && k[17] >= 0xFD {
					continue // an owner's certificate or queue journal, not a fragment
				}
				if b, err := s.Disk(h).Get(store.KindFragment, k); err != nil || len(b) < 16 {
					continue // freed after a compaction, until its lease ends
				}
				var bk id.ID
				copy(bk[:], k[:16])
				if m[bk] == nil {
					m[bk] = map[sim.HostID]int{}
				}
				m[bk][h]++
			}
		}
		return m
	}
	for _, h := range hosts {
		keys, _, _ := s.Disk(h).Keys(store.KindFragment, store.Range{}, nil, 1<<30)
		for _, k := range keys {
			if k[16] == 0xFF && (k[17] == 0xFD || k[17] == 0xFE) {
				continue // the owners' queue journals: short-lived, not archive storage
			}
			b, err := s.Disk(h).Get(store.KindFragment, k)
			if err == nil {
				out.fragmentBytes += int64(len(b))
			}
		}
	}
	failed := int(math.Round(c.Fail * float64(c.Nodes)))
	pre := place()
	out.bundles = len(pre)
	out.renewMsgs = uint64(len(pre) * gcfg.Code.N)
	for _, holders := range pre {
		per := make([]int, 0, len(holders))
		for _, n := range holders {
			per = append(per, n)
		}
		sort.Ints(per)
		out.lossCorrelated = max(out.lossCorrelated, glacier.LossCorrelated(gcfg.Code, per, c.Nodes, failed))
		out.lossIndependent = max(out.lossIndependent, glacier.LossIndependent(gcfg.Code, per, c.Fail))
		if !glacier.SurvivesWorst(gcfg.Code, per, failed) {
			out.worstLost++
		}
	}

	failSome := func(frac float64) {
		var live []sim.HostID
		for _, h := range s.order {
			if s.S.Up(h) {
				live = append(live, h)
			}
		}
		k := int(math.Round(frac * float64(len(live))))
		var victims []sim.HostID
		if c.Correlated {
			first := rng.IntN(len(live))
			for i := 0; i < k; i++ {
				victims = append(victims, live[(first+i)%len(live)])
			}
		} else {
			perm := rng.Perm(len(live))
			for _, i := range perm[:k] {
				victims = append(victims, live[i])
			}
		}
		for _, h := range victims {
			s.Crash(h)
		}
	}
	failSome(c.Fail)
	if c.RepairRounds > 0 {
		if err := s.S.RunFor(env.Duration(c.RepairRounds) * gcfg.AuditPeriod); err != nil {
			return out, err
		}
		failSome(c.Fail)
	}
	// The overlay repairs its leaf sets before recovery starts.
	if err := s.S.RunFor(5 * env.Minute); err != nil {
		return out, err
	}
	out.minSurviving = math.MaxInt
	post := place()
	for bk := range pre {
		n := 0
		for _, c := range post[bk] {
			n += c
		}
		out.minSurviving = min(out.minSurviving, n)
	}

	// Recovery: every owner's chain, from one surviving node, through the
	// real fetch path.
	got := map[store.Key]bool{}
	pending := len(owners)
	for _, o := range owners {
		h, ok := s.randomLive()
		if !ok {
			return out, fmt.Errorf("glacier: no live node left")
		}
		gls[h].Recover(o.uid, 0, glacier.Hash{}, func(b *glacier.Bundle, _ *glacier.Manifest) {
			for _, ob := range b.Objects {
				k := store.Key(ob.Key)
				if store.Key(sha256.Sum256(ob.Data)) == k && want[k] {
					got[k] = true
				}
			}
		}, func(next uint64, _ glacier.Hash, err error) {
			pending--
			if err != nil {
				out.unrecovered++
			}
		})
	}
	if _, err := s.S.RunWhile(func() bool { return pending > 0 }, s.S.Now().Add(4*env.Hour)); err != nil {
		return out, err
	}
	out.recovered = len(got)
	for _, g := range gls {
		st := g.Stats()
		out.stats.Archived += st.Archived
		out.stats.Incomplete += st.Incomplete
		out.stats.Handed += st.Handed
		out.stats.Dropped += st.Dropped
		out.stats.BadFragments += st.BadFragments
		out.stats.Bundles += st.Bundles
		out.stats.Repairs += st.Repairs
		out.stats.Regenerated += st.Regenerated
		out.stats.Compactions += st.Compactions
		out.stats.Released += st.Released
	}
	return out, nil
}
