package scenario

import (
	"flag"
	"fmt"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/sim"
	"github.com/epost-mail/epost/internal/store/object"
)

// Mail runs POST over a storage ring: users live on nodes, keep their
// keys across their node's crashes, and reload their mailboxes from the
// network on every restart.
type Mail struct {
	*Storage
	PostCfg post.Config
	Users   []MailUser
	posts   []*post.Post // by host, the current incarnation's
	metas   []memMeta    // by host: the node's local state, kept across crashes
	caches  []memCache   // by host: the node's folder cache, kept across crashes
	byHost  map[sim.HostID][]int
	// OnDelivered hears every delivery, with the virtual time.
	OnDelivered func(user string, id [16]byte)
}

// MailUser is one simulated user.
type MailUser struct {
	Address string
	Keys    identity.UserKeys
	Cert    *identity.UserCert
	Host    sim.HostID
}

// NewMail makes an empty mail ring.
func NewMail(simCfg sim.Config, ovCfg overlay.Config, pcfg past.Config, mcfg post.Config) (*Mail, error) {
	s, err := NewStorage(simCfg, ovCfg, pcfg)
	if err != nil {
		return nil, err
	}
	m := &Mail{Storage: s, PostCfg: mcfg, byHost: map[sim.HostID][]int{}}
	s.OnStart = m.start
	return m, nil
}

// AddUser creates a user served by host h (which must already exist).
func (m *Mail) AddUser(address string, h sim.HostID) (int, error) {
	rr := randReader{m.S.Rand()}
	keys, err := identity.GenerateUserKeys(rr, address)
	if err != nil {
		return 0, err
	}
	cert, err := m.CA.IssueUser(rr, address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		return 0, err
	}
	i := len(m.Users)
	m.Users = append(m.Users, MailUser{Address: keys.Address, Keys: keys, Cert: cert, Host: h})
	m.byHost[h] = append(m.byHost[h], i)
	if x := m.Post(h); x != nil {
		if _, err := x.AddUser(keys, cert, nil); err != nil {
			return 0, err
		}
	}
	return i, nil
}

// start attaches POST to a new incarnation of host h and serves its users.
func (m *Mail) start(h sim.HostID, p *past.Past) {
	for len(m.posts) <= int(h) {
		m.posts = append(m.posts, nil)
		m.metas = append(m.metas, memMeta{})
		m.caches = append(m.caches, memCache{})
	}
	e := p.Env()
	x := post.New(m.PostCfg, e, p, post.Node{Key: m.keys[h], Cert: m.certs[h], Verifier: m.Verifier}, m.metas[h])
	x.Cache = m.caches[h]
	x.OnDelivered = func(user string, id [16]byte) {
		if m.OnDelivered != nil {
			m.OnDelivered(user, id)
		}
	}
	m.posts[h] = x
	// Users attach once the node is in the ring (a turn later).
	e.Clock.AfterFunc(0, func() {
		for _, i := range m.byHost[h] {
			u := m.Users[i]
			if _, err := x.AddUser(u.Keys, u.Cert, nil); err != nil {
				panic(err) // the harness's own keys: a programming error
			}
		}
	})
}

// Post returns host h's POST instance, nil while it is down.
func (m *Mail) Post(h sim.HostID) *post.Post {
	if int(h) >= len(m.posts) || !m.S.Up(h) {
		return nil
	}
	return m.posts[h]
}

// Account returns user i's account on its node, nil while the node is
// down.
func (m *Mail) Account(i int) *post.Account {
	x := m.Post(m.Users[i].Host)
	if x == nil {
		return nil
	}
	return x.User(m.Users[i].Address)
}

// MailConfig sets the mail experiment.
type MailConfig struct {
	Nodes            int
	Users            int
	Messages         int
	Seed             uint64
	PartitionMinutes float64
	OfflineFraction  float64
	SessionMinutes   float64
	Minutes          float64
	SettleMinutes    float64
}

func mailScenario() Scenario {
	return Scenario{
		Name:    "mail",
		Summary: "POST end to end: users mail each other while nodes churn, the ring splits and heals, and some recipients stay offline",
		Setup: func(fs *flag.FlagSet) func() (*Result, error) {
			c := MailConfig{}
			fs.IntVar(&c.Nodes, "nodes", 200, "number of nodes")
			fs.IntVar(&c.Users, "users", 200, "number of users (spread over the nodes)")
			fs.IntVar(&c.Messages, "messages", 5000, "messages sent")
			fs.Uint64Var(&c.Seed, "seed", 1, "random seed; the same seed gives the same run")
			fs.Float64Var(&c.PartitionMinutes, "partition-minutes", 0, "split the ring in two halves for this long, in the middle of the run")
			fs.Float64Var(&c.OfflineFraction, "offline-fraction", 0, "fraction of nodes that go offline for most of the run and return at the end")
			fs.Float64Var(&c.SessionMinutes, "session-minutes", 120, "mean session length of the other nodes (0: no churn)")
			fs.Float64Var(&c.Minutes, "minutes", 120, "virtual minutes over which messages are sent")
			fs.Float64Var(&c.SettleMinutes, "settle-minutes", 30, "virtual minutes after everyone is back, before counting")
			return func() (*Result, error) { return RunMail(c) }
		},
	}
}

// RunMail runs the mail experiment.
func RunMail(c MailConfig) (*Result, error) {
	if c.Nodes < 4 || c.Users < 2 || c.Messages < 1 || c.Minutes <= 0 || c.OfflineFraction < 0 || c.OfflineFraction > 0.9 {
		return nil, fmt.Errorf("%w: need --nodes >= 4, --users >= 2, --messages >= 1, --offline-fraction in [0, 0.9]", ErrUsage)
	}
	cfg := sim.DefaultConfig(c.Seed)
	cfg.InvariantEvery = 0
	m, err := NewMail(cfg, overlay.SimConfig(), past.DefaultConfig(), post.DefaultConfig())
	if err != nil {
		return nil, err
	}
	meter := StartMeter(m.S, env.Minute)
	hosts, err := m.BuildStorage(c.Nodes, 100*env.Millisecond, env.Minute, nil)
	if err != nil {
		return nil, err
	}
	for i := 0; i < c.Users; i++ {
		if _, err := m.AddUser(fmt.Sprintf("user%d@sim.epost", i), hosts[i%len(hosts)]); err != nil {
			return nil, err
		}
	}
	// Let every mailbox be created.
	if err := m.S.RunFor(2 * env.Minute); err != nil {
		return nil, err
	}
	rng := m.S.Rand()
	start := m.S.Now()
	end := start.Add(minutes(c.Minutes))

	// Offline nodes leave early and return at the end; the others churn.
	offline := map[sim.HostID]bool{}
	for _, h := range hosts {
		if rng.Float64() < c.OfflineFraction {
			offline[h] = true
			at := env.Duration(rng.Int64N(int64(minutes(c.Minutes) / 4)))
			m.S.At(start.Add(at), func() { m.Crash(h) })
		}
	}
	var churning []sim.HostID
	for _, h := range hosts {
		if !offline[h] {
			churning = append(churning, h)
		}
	}
	if c.SessionMinutes > 0 {
		m.S.StartChurn(sim.Churn{
			MeanSession:  minutes(c.SessionMinutes),
			MeanDowntime: 10 * env.Minute,
			Until:        end,
			OnCrash:      func(h sim.HostID) { m.crashed(h) },
		}, churning)
	}
	if c.PartitionMinutes > 0 {
		mid := start.Add(minutes(c.Minutes) / 2)
		m.S.At(mid.Add(-minutes(c.PartitionMinutes)/2), func() {
			half := len(hosts) / 2
			m.S.Partition(hosts[:half], hosts[half:])
		})
		m.S.At(mid.Add(minutes(c.PartitionMinutes)/2), func() { m.S.Heal() })
	}

	type sent struct {
		id    [16]byte
		rcpts []int
		acked env.Time
	}
	var acked []*sent
	refused, unsent := 0, 0
	deliveredAt := map[string]env.Time{} // user + id -> first delivery
	counts := map[string]int{}
	m.OnDelivered = func(user string, id [16]byte) {
		k := user + string(id[:])
		counts[k]++
		if _, ok := deliveredAt[k]; !ok {
			deliveredAt[k] = m.S.Now()
		}
	}
	for i := 0; i < c.Messages; i++ {
		at := env.Duration(int64(minutes(c.Minutes)) * int64(i) / int64(c.Messages))
		m.S.At(start.Add(at), func() {
			from := rng.IntN(len(m.Users))
			a := m.Account(from)
			if a == nil || !a.Ready() {
				unsent++ // the sender's node is down: nothing to send from
				return
			}
			var rcpts []int
			var addrs []string
			for k := 1 + rng.IntN(3); k > 0; k-- {
				r := rng.IntN(len(m.Users))
				rcpts = append(rcpts, r)
				addrs = append(addrs, m.Users[r].Address)
			}
			body := []byte(fmt.Sprintf("From: %s\r\nSubject: message %d\r\n\r\nbody %d %x\r\n", m.Users[from].Address, i, i, rng.Uint64()))
			msgID := post.MessageID(m.Users[from].Address, canonicalSorted(addrs), body)
			m.Post(m.Users[from].Host).Send(m.Users[from].Address, addrs, body, func(err error) {
				if err != nil {
					refused++
					return
				}
				acked = append(acked, &sent{id: msgID, rcpts: dedupInts(rcpts), acked: m.S.Now()})
			})
		})
	}
	if err := m.S.RunUntil(end); err != nil {
		return nil, err
	}
	// Everyone returns; the system settles.
	m.S.Heal()
	for _, h := range hosts {
		if !m.S.Up(h) {
			m.S.Restart(h)
		}
	}
	if err := m.S.RunFor(minutes(c.SettleMinutes)); err != nil {
		return nil, err
	}
	delivered, lost, dups := 0, 0, 0
	var lostDetail []string
	var delaySum float64
	var delayMax float64
	for _, s := range acked {
		for _, r := range s.rcpts {
			k := m.Users[r].Address + string(s.id[:])
			n := counts[k]
			inbox := 0
			if a := m.Account(r); a != nil {
				if f, ok := a.Folder("INBOX"); ok {
					for _, msg := range f.Messages() {
						if msg.ID == s.id {
							inbox++
						}
					}
				}
			}
			switch {
			case inbox == 0:
				lost++
				if len(lostDetail) < 5 {
					a := m.Account(r)
					lostDetail = append(lostDetail, fmt.Sprintf("%s acked %.0fs host %d up %v ready %v delivered-count %d",
						m.Users[r].Address, s.acked.Sub(start).Seconds(), m.Users[r].Host, m.S.Up(m.Users[r].Host), a != nil && a.Ready(), n))
				}
			default:
				delivered++
				if inbox > 1 || n > 1 {
					dups++
				}
				d := deliveredAt[k].Sub(s.acked).Seconds()
				delaySum += d
				delayMax = max(delayMax, d)
			}
		}
	}
	notReady := 0
	for i := range m.Users {
		if a := m.Account(i); a == nil || !a.Ready() {
			notReady++
		}
	}
	st := m.totalPostStats()
	res := &Result{}
	res.Set("nodes", c.Nodes)
	res.Set("users", c.Users)
	res.Set("seed", c.Seed)
	res.Set("messages", c.Messages)
	res.Set("partition_minutes", c.PartitionMinutes)
	res.Set("offline_fraction", c.OfflineFraction)
	res.Set("sent", len(acked))
	res.Set("send_refused", refused)
	res.Set("sender_down", unsent)
	res.Set("deliveries_expected", delivered+lost)
	res.Set("delivered", delivered)
	res.Set("lost", lost)
	res.Set("duplicates", dups)
	res.Set("forks_merged", st.ForksMerged)
	res.Set("mailboxes_not_loaded", notReady)
	res.Set("lost_detail", lostDetail)
	res.Set("forged", st.Forged)
	res.Set("avg_delivery_seconds", round(ratio(delaySum, float64(delivered)), 2))
	res.Set("max_delivery_seconds", round(delayMax, 2))
	meter.Report(res)
	return res, nil
}

func (m *Mail) totalPostStats() post.Stats {
	var t post.Stats
	for h, x := range m.posts {
		if x == nil || !m.S.Up(sim.HostID(h)) {
			continue
		}
		s := x.Stats()
		t.ForksMerged += s.ForksMerged
		t.Forged += s.Forged
	}
	return t
}

func canonicalSorted(addrs []string) []string {
	out := append([]string(nil), addrs...)
	sort.Strings(out)
	return dedupStrings(out)
}

func dedupStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func dedupInts(s []int) []int {
	sort.Ints(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// memMeta is a simulated node's local metadata, which survives its
// crashes as a disk would.
type memMeta map[string][]byte

func (m memMeta) GetMeta(name string) ([]byte, error) {
	b, ok := m[name]
	if !ok {
		return nil, object.ErrNotFound
	}
	return append([]byte(nil), b...), nil
}

func (m memMeta) SetMeta(name string, value []byte) error {
	m[name] = append([]byte(nil), value...)
	return nil
}

// memCache is a simulated node's folder cache, on its disk.
type memCache map[object.Key][]byte

func (c memCache) GetObject(k object.Key) ([]byte, bool) { b, ok := c[k]; return b, ok }

func (c memCache) PutObject(k object.Key, b []byte) { c[k] = append([]byte(nil), b...) }

func (c memCache) DeleteObject(k object.Key) { delete(c, k) }
