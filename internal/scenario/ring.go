package scenario

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/sim"
)

// Ring runs Pastry overlay nodes on the simulator and judges every lookup
// against an oracle that knows the true membership.
type Ring struct {
	S   *sim.Sim
	Cfg overlay.Config

	ids    []id.NodeID        // by host; fixed for life, as a CA-issued id is
	nodes  []*overlay.Overlay // by host; nil while down
	order  []sim.HostID       // hosts sorted by id, for the oracle
	retire []overlay.Stats    // stats of crashed incarnations, summed per host
	looks  map[uint64]*lookup
	nextLk uint64

	// Bootstraps, if set, are given to every node for partition
	// reintegration.
	Bootstraps []env.Addr
	// FalseDead counts leaf-set removals of nodes that were up at the time.
	FalseDead int

	// Lookups counts the lookup outcomes so far.
	Lookups LookupStats

	// MakeApp, if set, builds the application each incarnation of a node
	// runs over the overlay (PAST, for storage experiments), given the
	// lookup recorder as the layer above it; attach is called with the
	// new overlay before it joins.
	MakeApp func(h sim.HostID, e env.Env, upper overlay.App) (app overlay.App, attach func(*overlay.Overlay))

	// AuthLikeTransport gives every node the real transport's sender
	// check: a node accepts a sender's claim only from an address that
	// reached it directly since it last started (the transport learns a
	// peer from its hello).
	AuthLikeTransport bool
}

// directSenders is a process that remembers which addresses reached it
// directly, for AuthLikeTransport.
type directSenders struct {
	o    *overlay.Overlay
	seen map[env.Addr]bool
}

func (d *directSenders) Receive(from env.Addr, msg []byte) {
	d.seen[from] = true
	d.o.Receive(from, msg)
}

// LookupStats summarises lookups.
type LookupStats struct {
	Issued     int
	Delivered  int // first deliveries within the deadline
	Correct    int // delivered at the numerically closest active node
	Late       int // delivered after the deadline: counted as lost
	Duplicates int
	DualRoots  int // deliveries while another active node also considered itself root
	// LostSourceCrashed counts the lookups not delivered in time whose
	// source crashed meanwhile: it alone kept the message for re-sending.
	LostSourceCrashed int
	HopsSum           int
	MaxHops           int
	StretchSum        float64
	Stretches         int
}

type lookup struct {
	key      id.ID
	src      sim.HostID
	issued   env.Time
	done     bool
	measured bool
}

// LookupDeadline is when an undelivered lookup counts as lost.
const LookupDeadline = 10 * env.Second

// NewRing makes an empty ring on a fresh simulator.
func NewRing(simCfg sim.Config, cfg overlay.Config) *Ring {
	return &Ring{S: sim.New(simCfg), Cfg: cfg, looks: map[uint64]*lookup{}}
}

// ringApp is the overlay application on each simulated node: it records
// lookup deliveries for the oracle.
type ringApp struct {
	r *Ring
	h sim.HostID
}

func (a ringApp) Deliver(m overlay.Message)                         { a.r.delivered(a.h, m) }
func (a ringApp) Forward(*overlay.Message, overlay.NodeHandle) bool { return true }
func (a ringApp) Direct(overlay.NodeHandle, []byte)                 {}
func (a ringApp) LeafSetChanged(overlay.NodeHandle, bool)           {}

// AddNode creates a host with a random id. It joins through a random
// active node, or creates the ring if there is none.
func (r *Ring) AddNode() sim.HostID {
	var x id.NodeID
	x.ID = id.FromUint64(r.S.Rand().Uint64(), r.S.Rand().Uint64())
	return r.AddNodeWithID(x)
}

// AddNodeWithID is AddNode for a given id (one a CA issued).
// before, if given, runs after the host exists and before its process
// first starts (to set its clock, say).
func (r *Ring) AddNodeWithID(x id.NodeID, before ...func(sim.HostID)) sim.HostID {
	h := sim.HostID(len(r.ids))
	r.ids = append(r.ids, x)
	r.nodes = append(r.nodes, nil)
	r.retire = append(r.retire, overlay.Stats{})
	i := sort.Search(len(r.order), func(i int) bool { return r.ids[r.order[i]].Cmp(x.ID) >= 0 })
	r.order = append(r.order, 0)
	copy(r.order[i+1:], r.order[i:])
	r.order[i] = h
	sh := r.S.AddDown(r.start(h))
	for _, f := range before {
		f(sh)
	}
	r.S.Restart(sh)
	return h
}

func (r *Ring) start(h sim.HostID) sim.StartFunc {
	return func(e env.Env) sim.Process {
		// The engine knows hosts, not ring ids: add the id so a simulated
		// node's records read like a real node's.
		e.Log = e.Log.With("id", r.ids[h].Short())
		self := overlay.NodeHandle{ID: r.ids[h], Addr: string(e.Self)}
		var app overlay.App = ringApp{r, h}
		var attach func(*overlay.Overlay)
		if r.MakeApp != nil {
			app, attach = r.MakeApp(h, e, app)
		}
		o := overlay.New(r.Cfg, e, self, app)
		if attach != nil {
			attach(o)
		}
		o.Bootstraps = r.Bootstraps
		o.OnDeclaredDead = func(d overlay.NodeHandle, inLeaf bool) {
			if dh, ok := r.S.Host(env.Addr(d.Addr)); ok && inLeaf && r.S.Up(dh) {
				r.FalseDead++
			}
		}
		var proc sim.Process = o
		if r.AuthLikeTransport {
			d := &directSenders{o: o, seen: map[env.Addr]bool{}}
			o.Authenticate = func(from env.Addr, _ id.NodeID) bool { return d.seen[from] }
			proc = d
		}
		boot, ok := r.randomActive(h)
		r.nodes[h] = o
		if ok {
			o.Join(r.S.Addr(boot))
		} else {
			o.Create()
		}
		return proc
	}
}

// Crash stops host h, keeping its counters.
func (r *Ring) Crash(h sim.HostID) {
	r.S.Crash(h)
	r.crashed(h)
}

// Node returns host h's overlay, nil while down.
func (r *Ring) Node(h sim.HostID) *overlay.Overlay { return r.nodes[h] }

// Len is the number of hosts.
func (r *Ring) Len() int { return len(r.ids) }

func (r *Ring) randomActive(except sim.HostID) (sim.HostID, bool) {
	n := len(r.nodes)
	if n == 0 {
		return 0, false
	}
	start := r.S.Rand().IntN(n)
	for i := 0; i < n; i++ {
		h := sim.HostID((start + i) % n)
		if h != except && r.nodes[h] != nil && r.nodes[h].Active() {
			return h, true
		}
	}
	return 0, false
}

// ActiveCount is the number of live, active nodes.
func (r *Ring) ActiveCount() int {
	n := 0
	for _, o := range r.nodes {
		if o != nil && o.Active() {
			n++
		}
	}
	return n
}

// Root is the oracle: the numerically closest live, active node to key.
func (r *Ring) Root(key id.ID) (sim.HostID, bool) {
	n := len(r.order)
	i := sort.Search(n, func(i int) bool { return r.ids[r.order[i]].Cmp(key) >= 0 })
	var best sim.HostID
	found := false
	try := func(h sim.HostID) {
		if o := r.nodes[h]; o != nil && o.Active() {
			if !found || id.Closer(key, r.ids[h].ID, r.ids[best].ID) {
				best, found = h, true
			}
		}
	}
	// Walk clockwise and counter-clockwise to the first active node each way.
	for k := 0; k < n; k++ {
		h := r.order[(i+k)%n]
		if o := r.nodes[h]; o != nil && o.Active() {
			try(h)
			break
		}
	}
	for k := 1; k <= n; k++ {
		h := r.order[((i-k)%n+n)%n]
		if o := r.nodes[h]; o != nil && o.Active() {
			try(h)
			break
		}
	}
	return best, found
}

// rootClaims counts active nodes near key that consider themselves its root.
func (r *Ring) rootClaims(key id.ID) int {
	n := len(r.order)
	i := sort.Search(n, func(i int) bool { return r.ids[r.order[i]].Cmp(key) >= 0 })
	claims := 0
	seen := map[sim.HostID]bool{}
	for _, dir := range []int{1, -1} {
		active := 0
		for k := 0; k < n && active < r.Cfg.LeafSetSize/2+1; k++ {
			j := i + dir*k
			if dir < 0 {
				j = i - 1 - k
			}
			h := r.order[((j%n)+n)%n]
			o := r.nodes[h]
			if o == nil || !o.Active() || seen[h] {
				continue
			}
			seen[h] = true
			active++
			if o.IsRoot(key) {
				claims++
			}
		}
	}
	return claims
}

// Lookup routes a lookup for key from host src and tracks it.
func (r *Ring) Lookup(src sim.HostID, key id.ID, measured bool) {
	r.nextLk++
	lk := &lookup{key: key, src: src, issued: r.S.Now(), measured: measured}
	r.looks[r.nextLk] = lk
	if measured {
		r.Lookups.Issued++
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], r.nextLk)
	srcNode := r.nodes[src]
	srcNode.Route(key, b[:])
	n := r.nextLk
	r.S.After(LookupDeadline, func() {
		l := r.looks[n]
		switch {
		case l == nil:
		case l.done:
			delete(r.looks, n)
		case l.measured && r.nodes[src] != srcNode:
			r.Lookups.LostSourceCrashed++
		}
	})
}

// RandomLookup issues a lookup of a random key from a random active node.
func (r *Ring) RandomLookup(measured bool) {
	src, ok := r.randomActive(-1)
	if !ok {
		return
	}
	key := id.FromUint64(r.S.Rand().Uint64(), r.S.Rand().Uint64())
	r.Lookup(src, key, measured)
}

func (r *Ring) delivered(h sim.HostID, m overlay.Message) {
	if len(m.Payload) != 8 {
		return
	}
	n := binary.BigEndian.Uint64(m.Payload)
	lk := r.looks[n]
	if lk == nil {
		return
	}
	st := &r.Lookups
	if lk.done {
		if lk.measured {
			st.Duplicates++
		}
		return
	}
	lk.done = true
	if !lk.measured {
		return
	}
	took := r.S.Now().Sub(lk.issued)
	if took > LookupDeadline {
		st.Late++
		return
	}
	st.Delivered++
	root, ok := r.Root(m.Key)
	if ok && root == h {
		st.Correct++
	}
	if r.rootClaims(m.Key) > 1 {
		st.DualRoots++
	}
	st.HopsSum += m.Hops
	if m.Hops > st.MaxHops {
		st.MaxHops = m.Hops
	}
	if direct := r.S.Latency(lk.src, h); h != lk.src && direct > 0 {
		st.StretchSum += float64(took) / float64(direct)
		st.Stretches++
	}
}

// TotalStats sums the overlay counters of every incarnation of every host.
func (r *Ring) TotalStats() overlay.Stats {
	var t overlay.Stats
	for h := range r.nodes {
		t = addStats(t, r.retire[h])
		if o := r.nodes[h]; o != nil {
			t = addStats(t, o.Stats())
		}
	}
	return t
}

func addStats(a, b overlay.Stats) overlay.Stats {
	a.SentLookup += b.SentLookup
	a.SentLookupAcks += b.SentLookupAcks
	a.SentControl += b.SentControl
	a.SentControlAcks += b.SentControlAcks
	a.SentDirect += b.SentDirect
	a.Delivered += b.Delivered
	a.Rerouted += b.Rerouted
	a.DroppedRoutes += b.DroppedRoutes
	a.Malformed += b.Malformed
	a.Unauthenticated += b.Unauthenticated
	a.DeclaredDead += b.DeclaredDead
	a.Joins += b.Joins
	a.Reintegrations += b.Reintegrations
	a.Stalls += b.Stalls
	a.Searches += b.Searches
	a.IndirectFound += b.IndirectFound
	a.Relayed += b.Relayed
	a.Resent += b.Resent
	for i := range a.Probes {
		a.Probes[i] += b.Probes[i]
	}
	for i := range a.ByType {
		a.ByType[i] += b.ByType[i]
	}
	return a
}

// WrongLeafSets compares every live, active node's leaf set with the true
// one (the L/2 nearest live, active nodes on each side) and returns how
// many differ, with a description of the first difference.
func (r *Ring) WrongLeafSets() (int, string) {
	var live []sim.HostID
	for _, h := range r.order {
		if o := r.nodes[h]; o != nil && o.Active() {
			live = append(live, h)
		}
	}
	n := len(live)
	half := r.Cfg.LeafSetSize / 2
	if n-1 < half {
		half = n - 1
	}
	wrong := 0
	first := ""
	for i, h := range live {
		o := r.nodes[h]
		left, right := o.Leaf().Left(), o.Leaf().Right()
		ok := len(left) == half && len(right) == half
		for k := 1; ok && k <= half; k++ {
			if right[k-1].ID != r.ids[live[(i+k)%n]] || left[k-1].ID != r.ids[live[((i-k)%n+n)%n]] {
				ok = false
			}
		}
		if !ok {
			wrong++
			if first == "" {
				first = fmt.Sprintf("node %s (host %d) has %d/%d members, want %d per side", r.ids[h].Short(), h, len(left), len(right), half)
				want := map[id.NodeID]bool{}
				for k := 1; k <= half; k++ {
					want[r.ids[live[(i+k)%n]]] = true
					want[r.ids[live[((i-k)%n+n)%n]]] = true
				}
				for _, m := range o.Leaf().Members() {
					if !want[m.ID] {
						first += fmt.Sprintf("; extra %s", m.ID.Short())
						if hh, ok := r.S.Host(env.Addr(m.Addr)); ok && r.nodes[hh] == nil {
							first += " (down)"
						}
					}
					delete(want, m.ID)
				}
				for x := range want {
					first += fmt.Sprintf("; missing %s", x.Short())
				}
			}
		}
	}
	return wrong, first
}

// Rings counts the distinct rings among live, active nodes: connected
// components of the graph whose edges are leaf-set memberships.
func (r *Ring) Rings() int {
	parent := map[sim.HostID]sim.HostID{}
	var find func(sim.HostID) sim.HostID
	find = func(x sim.HostID) sim.HostID {
		for parent[x] != x {
			parent[x] = parent[parent[x]]
			x = parent[x]
		}
		return x
	}
	for h, o := range r.nodes {
		if o != nil && o.Active() {
			parent[sim.HostID(h)] = sim.HostID(h)
		}
	}
	for h, o := range r.nodes {
		if o == nil || !o.Active() {
			continue
		}
		for _, m := range o.Leaf().Members() {
			mh, ok := r.S.Host(env.Addr(m.Addr))
			if _, live := parent[mh]; !ok || !live {
				continue
			}
			a, b := find(sim.HostID(h)), find(mh)
			if a != b {
				parent[a] = b
			}
		}
	}
	roots := map[sim.HostID]bool{}
	for h := range parent {
		roots[find(h)] = true
	}
	return len(roots)
}

// IndirectLinks sums, over live nodes, the nodes each reaches only through
// a helper.
func (r *Ring) IndirectLinks() int {
	n := 0
	for _, o := range r.nodes {
		if o != nil {
			n += o.IndirectLinks()
		}
	}
	return n
}

// Build adds n nodes, one every interval, then lets the ring settle.
func (r *Ring) Build(n int, interval, settle env.Duration) ([]sim.HostID, error) {
	var hosts []sim.HostID
	start := r.S.Now()
	for i := 0; i < n; i++ {
		r.S.At(start.Add(env.Duration(i)*interval), func() { hosts = append(hosts, r.AddNode()) })
	}
	if err := r.S.RunUntil(start.Add(env.Duration(n)*interval + settle)); err != nil {
		return nil, err
	}
	return hosts, nil
}

// RunLookups issues k random lookups, 10 ms apart, waits for the last to
// land or time out, and returns their statistics alone.
func (r *Ring) RunLookups(k int) (LookupStats, error) {
	saved := r.Lookups
	r.Lookups = LookupStats{}
	for i := 0; i < k; i++ {
		r.S.After(env.Duration(i)*10*env.Millisecond, func() { r.RandomLookup(true) })
	}
	err := r.S.RunFor(env.Duration(k)*10*env.Millisecond + 2*LookupDeadline)
	st := r.Lookups
	r.Lookups = addLookups(saved, st)
	return st, err
}

func addLookups(a, b LookupStats) LookupStats {
	a.Issued += b.Issued
	a.Delivered += b.Delivered
	a.Correct += b.Correct
	a.Late += b.Late
	a.Duplicates += b.Duplicates
	a.DualRoots += b.DualRoots
	a.LostSourceCrashed += b.LostSourceCrashed
	a.HopsSum += b.HopsSum
	if b.MaxHops > a.MaxHops {
		a.MaxHops = b.MaxHops
	}
	a.StretchSum += b.StretchSum
	a.Stretches += b.Stretches
	return a
}
