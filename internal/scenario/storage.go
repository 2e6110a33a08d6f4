package scenario

import (
	"flag"
	"fmt"
	mrand "math/rand/v2"

	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/sim"
	"github.com/epost-mail/epost/internal/store"
)

// Storage runs PAST on every node of a simulated ring, each with a disk
// (a past.MemStorage) that survives its crashes, and a community CA that
// issued every node's certificate.
type Storage struct {
	*Ring
	PastCfg past.Config
	// Sets, if set, is every node's set policy (POST's, for mail).
	Sets past.SetPolicy
	// OnStart, if set, runs for every new incarnation's PAST instance, to
	// attach the layer above.
	OnStart func(h sim.HostID, p *past.Past)
	// Between, if set, builds a layer that runs between PAST and the layer
	// above it (Glacier) on each incarnation, over the node's disk.
	Between  func(h sim.HostID, e env.Env, disk *past.MemStorage, upper overlay.App) (overlay.App, func(*overlay.Overlay))
	CA       *identity.CA
	Verifier *identity.Verifier
	keys     []identity.NodeKey
	certs    []*identity.NodeCert
	disks    []*past.MemStorage
	pasts    []*past.Past // by host; nil while down
	retired  []past.Stats // summed stats of crashed incarnations
}

// randReader reads from the simulator's generator, so that keys and
// certificates are reproducible from the seed.
type randReader struct{ r *mrand.Rand }

func (r randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.r.Uint32())
	}
	return len(p), nil
}

// NewStorage makes an empty ring running PAST with cfg.
func NewStorage(simCfg sim.Config, ovCfg overlay.Config, cfg past.Config) (*Storage, error) {
	s := &Storage{Ring: NewRing(simCfg, ovCfg), PastCfg: cfg}
	ca, err := identity.NewCA(randReader{s.S.Rand()})
	if err != nil {
		return nil, err
	}
	s.CA, s.Verifier = ca, identity.NewVerifier(ca.Public())
	s.MakeApp = s.makeApp
	return s, nil
}

// AddNode issues a certificate for a new node and adds it to the ring;
// before, if given, runs before the node's process starts.
func (s *Storage) AddNode(before ...func(sim.HostID)) (sim.HostID, error) {
	rr := randReader{s.S.Rand()}
	key, err := identity.GenerateNodeKey(rr)
	if err != nil {
		return 0, err
	}
	cert, err := s.CA.IssueNode(rr, key.Public())
	if err != nil {
		return 0, err
	}
	s.keys = append(s.keys, key)
	s.certs = append(s.certs, cert)
	s.disks = append(s.disks, past.NewMemStorage())
	s.pasts = append(s.pasts, nil)
	s.retired = append(s.retired, past.Stats{})
	return s.AddNodeWithID(cert.NodeID, before...), nil
}

func (s *Storage) makeApp(h sim.HostID, e env.Env, upper overlay.App) (overlay.App, func(*overlay.Overlay)) {
	disk := s.disks[h]
	disk.SetClock(e.Clock)
	if old := s.pasts[h]; old != nil {
		s.retired[h] = addPastStats(s.retired[h], old.Stats())
	}
	var attachBetween func(*overlay.Overlay)
	if s.Between != nil {
		upper, attachBetween = s.Between(h, e, disk, upper)
	}
	p, err := past.New(s.PastCfg, e, disk, past.Identity{Key: s.keys[h], Cert: s.certs[h], Verifier: s.Verifier}, upper)
	if err != nil {
		panic(err) // the harness's own configuration: a programming error
	}
	s.pasts[h] = p
	if s.Sets != nil {
		p.SetPolicy(s.Sets)
	}
	if s.OnStart != nil {
		s.OnStart(h, p)
	}
	return p, func(o *overlay.Overlay) {
		p.Attach(o)
		if attachBetween != nil {
			attachBetween(o)
		}
	}
}

// Past returns host h's PAST instance, nil while it is down.
func (s *Storage) Past(h sim.HostID) *past.Past {
	if !s.S.Up(h) {
		return nil
	}
	return s.pasts[h]
}

// Disk returns host h's disk.
func (s *Storage) Disk(h sim.HostID) *past.MemStorage { return s.disks[h] }

// Copies counts the disks holding (kind, key), up or not.
func (s *Storage) Copies(kind store.Kind, key store.Key) int {
	n := 0
	for _, d := range s.disks {
		if ok, _ := d.Has(kind, key); ok {
			n++
		}
	}
	return n
}

// StoredBytes is the total size of every disk's objects.
func (s *Storage) StoredBytes() int64 {
	var n int64
	for _, d := range s.disks {
		n += d.Bytes()
	}
	return n
}

// TotalPastStats sums every incarnation's PAST counters.
func (s *Storage) TotalPastStats() past.Stats {
	var t past.Stats
	for h, p := range s.pasts {
		t = addPastStats(t, s.retired[h])
		if p != nil {
			t = addPastStats(t, p.Stats()) // the current or last incarnation
		}
	}
	return t
}

func addPastStats(a, b past.Stats) past.Stats {
	a.Inserts += b.Inserts
	a.InsertsOK += b.InsertsOK
	a.InsertsFailed += b.InsertsFailed
	a.Lookups += b.Lookups
	a.LookupsOK += b.LookupsOK
	a.LookupsFailed += b.LookupsFailed
	a.Stored += b.Stored
	a.Receipts += b.Receipts
	for i := range a.Refused {
		a.Refused[i] += b.Refused[i]
	}
	a.BadReceipts += b.BadReceipts
	a.BadObjects += b.BadObjects
	a.Forks += b.Forks
	a.Malformed += b.Malformed
	a.Offers += b.Offers
	a.Wants += b.Wants
	a.Pushes += b.Pushes
	a.MaintenanceBytes += b.MaintenanceBytes
	a.Swept += b.Swept
	a.SweptBytes += b.SweptBytes
	a.StoreErrors += b.StoreErrors
	a.Scrubbed += b.Scrubbed
	a.ScrubDropped += b.ScrubDropped
	a.ScrubPasses += b.ScrubPasses
	return a
}

// BuildStorage adds n nodes, one every interval, and runs settle more.
// setup, if not nil, runs for each new host before it first runs.
func (s *Storage) BuildStorage(n int, interval, settle env.Duration, setup func(i int, h sim.HostID)) ([]sim.HostID, error) {
	hosts := make([]sim.HostID, 0, n)
	var err error
	for i := 0; i < n; i++ {
		s.S.At(s.S.Now().Add(env.Duration(i)*interval), func() {
			h, e := s.AddNode(func(h sim.HostID) {
				if setup != nil {
					setup(i, h)
				}
			})
			if e != nil && err == nil {
				err = e
			}
			hosts = append(hosts, h)
		})
	}
	if e := s.S.RunFor(env.Duration(n)*interval + settle); e != nil {
		return nil, e
	}
	return hosts, err
}

// randomLive returns a random host that is up and active.
func (s *Storage) randomLive() (sim.HostID, bool) {
	return s.randomActive(-1)
}

// object makes reproducible random bytes of a size in [min, max].
func randomObject(r *mrand.Rand, minSize, maxSize int) []byte {
	b := make([]byte, minSize+r.IntN(maxSize-minSize+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// StorageConfig sets the storage experiment.
type StorageConfig struct {
	Nodes           int
	Seed            uint64
	Objects         int
	SessionMinutes  float64
	DowntimeMinutes float64
	Minutes         float64
	SettleMinutes   float64
	ReadRate        float64 // reads per second, whole system
}

func storageScenario() Scenario {
	return Scenario{
		Name:    "storage",
		Summary: "PAST under churn: objects inserted and read while nodes come and go; lost objects, availability, maintenance traffic",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := StorageConfig{}
			fs.IntVar(&c.Nodes, "nodes", 500, "number of nodes")
			fs.Uint64Var(&c.Seed, "seed", 1, "random seed; the same seed gives the same run")
			fs.IntVar(&c.Objects, "objects", 2000, "objects inserted during the churn")
			fs.Float64Var(&c.SessionMinutes, "session-minutes", 30, "mean session length (exponential)")
			fs.Float64Var(&c.DowntimeMinutes, "downtime-minutes", 10, "mean downtime (exponential)")
			fs.Float64Var(&c.Minutes, "minutes", 360, "virtual minutes of churn")
			fs.Float64Var(&c.SettleMinutes, "settle-minutes", 60, "virtual minutes after every node is back, before counting")
			fs.Float64Var(&c.ReadRate, "read-rate", 2, "reads of random stored objects per virtual second")
			return func() (*Result, error) { return RunStorage(c) }
		},
	}
}

// RunStorage runs the storage experiment.
func RunStorage(c StorageConfig) (*Result, error) {
	if c.Nodes < 4 || c.Objects < 1 || c.SessionMinutes <= 0 || c.DowntimeMinutes <= 0 || c.Minutes <= 0 || c.SettleMinutes < 0 || c.ReadRate < 0 {
		return nil, fmt.Errorf("%w: need --nodes >= 4, --objects >= 1 and positive durations", ErrUsage)
	}
	cfg := sim.DefaultConfig(c.Seed)
	cfg.InvariantEvery = 0
	s, err := NewStorage(cfg, overlay.SimConfig(), past.DefaultConfig())
	if err != nil {
		return nil, err
	}
	m := StartMeter(s.S, env.Minute)
	hosts, err := s.BuildStorage(c.Nodes, 100*env.Millisecond, env.Minute, nil)
	if err != nil {
		return nil, err
	}
	start := s.S.Now()
	end := start.Add(minutes(c.Minutes))
	s.S.StartChurn(sim.Churn{
		MeanSession:  minutes(c.SessionMinutes),
		MeanDowntime: minutes(c.DowntimeMinutes),
		Until:        end,
		OnCrash:      func(h sim.HostID) { s.crashed(h) },
	}, hosts)

	// Inserts spread over the first half of the churn, from random live
	// nodes; only acknowledged ones are held to account.
	rng := s.S.Rand()
	var acked []store.Key
	failedInserts := 0
	spread := minutes(c.Minutes) / 2
	for i := 0; i < c.Objects; i++ {
		at := env.Duration(int64(spread) * int64(i) / int64(c.Objects))
		s.S.At(start.Add(at), func() {
			h, ok := s.randomLive()
			if !ok {
				failedInserts++
				return
			}
			data := randomObject(rng, 256, 4096)
			s.Past(h).Insert(data, past.LeaseMailbox, func(res past.InsertResult, err error) {
				if err != nil {
					failedInserts++
					return
				}
				acked = append(acked, res.Key)
			})
		})
	}
	// Reads of random acknowledged objects from random live nodes.
	reads, unavailable := 0, 0
	var readTick func()
	readTick = func() {
		if s.S.Now() >= end {
			return
		}
		s.S.After(env.Duration(float64(env.Second)/max(c.ReadRate, 1e-9)), readTick)
		if len(acked) == 0 {
			return
		}
		h, ok := s.randomLive()
		if !ok {
			return
		}
		key := acked[rng.IntN(len(acked))]
		reads++
		s.Past(h).Lookup(key, func(_ []byte, err error) {
			if err != nil {
				unavailable++
			}
		})
	}
	if c.ReadRate > 0 {
		s.S.After(env.Second, readTick)
	}
	before := s.TotalPastStats()
	var liveSum, liveSamples float64
	var sample func()
	sample = func() {
		if s.S.Now() >= end {
			return
		}
		liveSum += float64(s.ActiveCount())
		liveSamples++
		s.S.After(env.Minute, sample)
	}
	s.S.After(0, sample)
	if err := s.S.RunUntil(end); err != nil {
		return nil, err
	}
	during := s.TotalPastStats()
	// Every departed node returns with its disk; then the system settles.
	for _, h := range hosts {
		if !s.S.Up(h) {
			s.S.Restart(h)
		}
	}
	if err := s.S.RunFor(minutes(c.SettleMinutes)); err != nil {
		return nil, err
	}
	k := s.PastCfg.Replicas
	lost, under, copies := 0, 0, 0
	for _, key := range acked {
		n := s.Copies(store.KindImmutable, key)
		copies += n
		if n == 0 {
			lost++
		}
		if n < k {
			under++
		}
	}
	avgLive := ratio(liveSum, liveSamples)
	secs := minutes(c.Minutes).Seconds()
	res := &Result{}
	res.Set("nodes", c.Nodes)
	res.Set("seed", c.Seed)
	res.Set("session_minutes", c.SessionMinutes)
	res.Set("downtime_minutes", c.DowntimeMinutes)
	res.Set("churn_minutes", c.Minutes)
	res.Set("avg_live_nodes", round(avgLive, 1))
	res.Set("crashes", s.S.Stats().Crashes)
	res.Set("objects", c.Objects)
	res.Set("acknowledged", len(acked))
	res.Set("failed_inserts", failedInserts)
	res.Set("lost_objects", lost)
	res.Set("under_replicated", under)
	res.Set("avg_replicas", round(ratio(float64(copies), float64(len(acked))), 3))
	res.Set("reads", reads)
	res.Set("unavailable_reads", unavailable)
	res.Set("maintenance_bytes_per_node_per_s", round(ratio(float64(during.MaintenanceBytes-before.MaintenanceBytes), avgLive*secs), 2))
	res.Set("pushes", during.Pushes-before.Pushes)
	res.Set("bad_receipts", during.BadReceipts)
	m.Report(res)
	return res, nil
}

// ReplicaHosts is the oracle's replica set: the n live, active hosts
// whose ids are closest to key.
func (s *Storage) ReplicaHosts(key store.Key, n int) []sim.HostID {
	var live []sim.HostID
	for h := range s.ids {
		if o := s.nodes[h]; o != nil && o.Active() {
			live = append(live, sim.HostID(h))
		}
	}
	k := key.Ring()
	sort.Slice(live, func(i, j int) bool { return id.Closer(k, s.ids[live[i]].ID, s.ids[live[j]].ID) })
	if len(live) > n {
		live = live[:n]
	}
	return live
}
