package glacier

import (
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
)

// Maintenance. Every holder, once per AuditPeriod, tells the root of each
// held bundle's key, the bundle's coordinator, what it holds of the
// bundle (bundle key, manifest hash, indices), batched per run of nearby
// keys (report). A coordinator counts what it heard over a window of at
// least one period; when fewer than RepairBelow fragments were reported
// it fetches enough of them from their holders, decodes once, regenerates
// every missing fragment (same shards, so the signed Merkle root still
// covers them) and places those. Coordinators hold no state that matters:
// a new one (after a failure or a join) rebuilds its count from the next
// round of reports.

type auditKey struct {
	bundle   id.ID
	manifest Hash
}

type audit struct {
	n       int
	since   env.Time
	holders map[uint16]NodeHandle
	// After a repair, achieved is what the next window counted: with
	// fewer live nodes than fragments not every fragment finds a holder,
	// and the coordinator repairs again only if the count falls further.
	repaired bool
	achieved int
}

func (g *Glacier) auditTick() {
	g.env.Clock.AfterFunc(g.cfg.AuditPeriod, g.auditTick)
	if g.ov == nil || !g.ov.Active() {
		return
	}
	g.report()
	g.evaluate()
}

// maxAuditEntries bounds one audit message (about 60 bytes an entry).
const maxAuditEntries = 256

// maxAuditHops bounds how many coordinators one audit message visits.
const maxAuditHops = 64

// report tells the coordinators of the bundles held here what this node
// holds: one entry per (bundle, manifest), sorted by bundle key, in
// messages of up to maxAuditEntries entries, each routed to its first key
// and walked on by each coordinator to the next key it is not the root
// of. Fragments sit at evenly spaced offsets from their bundle's key, so
// the keys of the bundles one node holds fragment i of fall in a narrow
// arc: the messages a holder sends per period are bounded by the
// coordinators of those arcs (a few per fragment index), however many
// bundles accumulate.
func (g *Glacier) report() {
	bks := make([]id.ID, 0, len(g.held))
	for bk := range g.held {
		bks = append(bks, bk)
	}
	sortIDs(bks)
	var entries []wire.GlacierAuditEntry
	for _, bk := range bks {
		held := g.held[bk]
		byMan := map[Hash][]uint16{}
		ns := map[Hash]int{}
		for idx, k := range held {
			f, err := g.readFragment(k)
			if err != nil {
				// Lost (expired, scrubbed, released) or damaged: no
				// longer held.
				g.unhold(bk, idx)
				continue
			}
			mh := f.Manifest.Hash()
			byMan[mh] = append(byMan[mh], idx)
			ns[mh] = f.Manifest.Code.N
		}
		mhs := make([]Hash, 0, len(byMan))
		for mh := range byMan {
			mhs = append(mhs, mh)
		}
		sort.Slice(mhs, func(i, j int) bool { return string(mhs[i][:]) < string(mhs[j][:]) })
		for _, mh := range mhs {
			idxs := byMan[mh]
			sort.Slice(idxs, func(i, j int) bool { return idxs[i] < idxs[j] })
			entries = append(entries, wire.GlacierAuditEntry{Bundle: bk, Manifest: mh, N: uint16(ns[mh]), Indices: idxs})
		}
	}
	for len(entries) > 0 {
		n := min(len(entries), maxAuditEntries)
		g.route(entries[0].Bundle, wire.TypeGlacierAudit, wire.GlacierAudit{Holder: g.self, Entries: entries[:n]})
		g.stats.Holdings++
		g.stats.MaintenanceMsgs++
		entries = entries[n:]
	}
}

// isRoot reports whether this node is the root of key as far as its leaf
// set tells.
func (g *Glacier) isRoot(key id.ID) bool {
	leaf := g.ov.Leaf()
	members := leaf.Members()
	// A leaf set whose two sides share members knows the whole ring
	// (LeafSet.Covers does not see that case).
	if len(members) == len(leaf.Left())+len(leaf.Right()) && !leaf.Covers(key) {
		return false
	}
	for _, m := range members {
		if id.Closer(key, m.ID.ID, g.self.ID.ID) {
			return false
		}
	}
	return true
}

// onAudit counts the entries this node coordinates and routes the rest
// on. The first entry's key is the one the message was routed to, so it
// is this node's whatever its leaf set says: a walk always advances.
func (g *Glacier) onAudit(a wire.GlacierAudit) {
	if len(a.Entries) == 0 || len(a.Entries) > maxAuditEntries {
		g.stats.Malformed++
		return
	}
	var rest []wire.GlacierAuditEntry
	for i, e := range a.Entries {
		if i == 0 || g.isRoot(e.Bundle) {
			g.onHolding(wire.GlacierHolding{Bundle: e.Bundle, Manifest: e.Manifest, N: e.N, Indices: e.Indices, Holder: a.Holder})
			continue
		}
		rest = append(rest, e)
	}
	if len(rest) == 0 || a.Hops >= maxAuditHops {
		return
	}
	a.Entries, a.Hops = rest, a.Hops+1
	g.route(rest[0].Bundle, wire.TypeGlacierAudit, a)
	g.stats.MaintenanceMsgs++
}

// onHolding counts a holder's report at the bundle's coordinator.
func (g *Glacier) onHolding(h wire.GlacierHolding) {
	if h.N == 0 || int(h.N) > 256 || len(h.Indices) > int(h.N) {
		g.stats.Malformed++
		return
	}
	if g.released[h.Bundle] {
		return
	}
	k := auditKey{h.Bundle, h.Manifest}
	a := g.coord[k]
	if a == nil {
		a = &audit{n: int(h.N), since: g.env.Clock.Now(), holders: map[uint16]NodeHandle{}}
		g.coord[k] = a
	}
	for _, i := range h.Indices {
		if int(i) < a.n {
			a.holders[i] = h.Holder
		}
	}
}

// evaluate closes every audit window at least one period long: repairs
// bundles that lost too many fragments and starts the next window.
func (g *Glacier) evaluate() {
	now := g.env.Clock.Now()
	keys := make([]auditKey, 0, len(g.coord))
	for k := range g.coord {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if c := keys[i].bundle.Cmp(keys[j].bundle); c != 0 {
			return c < 0
		}
		return string(keys[i].manifest[:]) < string(keys[j].manifest[:])
	})
	for _, k := range keys {
		a := g.coord[k]
		if env.Duration(now-a.since) < g.cfg.AuditPeriod {
			continue
		}
		if len(a.holders) == 0 {
			// Nobody reported in a whole window: not ours any more.
			delete(g.coord, k)
			continue
		}
		holders := a.holders
		a.holders, a.since = map[uint16]NodeHandle{}, now
		if a.repaired {
			a.repaired, a.achieved = false, len(holders)
		}
		below := g.cfg.RepairBelow * a.n / max(g.cfg.Code.N, 1)
		if a.achieved > 0 {
			below = min(below, a.achieved-a.n/16)
		}
		if len(holders) >= below {
			continue
		}
		if len(g.repairs) >= g.cfg.MaxRepairs {
			continue
		}
		a.repaired = true
		g.startRepair(k, a.n, holders)
	}
}

// repair fetches enough fragments of one bundle from their holders to
// regenerate the missing ones.
type repair struct {
	key     auditKey
	n       int
	holders map[uint16]NodeHandle
	req     uint64
	frags   map[int]*Fragment
	rec     wire.GlacierRecord // one record, for the owner's address and certificate
	done    bool
	// order lists the distinct holders, each with how many fragments it
	// reported; next is the first not asked yet.
	order  []repairHolder
	next   int
	rounds int
}

type repairHolder struct {
	h     NodeHandle
	index uint16 // the lowest index it reported, named in the request
	count int
}

// repairSlack is how many fragments beyond M a repair asks for at first,
// so that a holder or two that do not answer cost no extra round.
func repairSlack(m int) int { return max(4, m/8) }

func (g *Glacier) startRepair(k auditKey, n int, holders map[uint16]NodeHandle) {
	r := &repair{key: k, n: n, holders: holders, req: g.req(), frags: map[int]*Fragment{}}
	g.repairs[r.req] = r
	idxs := make([]int, 0, len(holders))
	for i := range holders {
		idxs = append(idxs, int(i))
	}
	sort.Ints(idxs)
	pos := map[id.NodeID]int{}
	for _, i := range idxs {
		h := holders[uint16(i)]
		if j, ok := pos[h.ID]; ok {
			r.order[j].count++
			continue
		}
		pos[h.ID] = len(r.order)
		r.order = append(r.order, repairHolder{h: h, index: uint16(i), count: 1})
	}
	// The holders are asked in an order of their own, not by index, so
	// that repairs of many bundles do not all load the same nodes.
	for i := len(r.order) - 1; i > 0; i-- {
		j := g.env.Rand.IntN(i + 1)
		r.order[i], r.order[j] = r.order[j], r.order[i]
	}
	g.repairRound(r)
}

// repairRound asks the next holders, enough of them for the fragments
// still missing towards M plus a slack: each holder answers with every
// fragment of the bundle it holds. The code's M is known from the
// audit's N only through this node's own code until a fragment arrives.
func (g *Glacier) repairRound(r *repair) {
	r.rounds++
	m := g.cfg.Code.M * r.n / max(g.cfg.Code.N, 1)
	for _, f := range r.frags {
		m = f.Manifest.Code.M
		break
	}
	want := m + repairSlack(m) - len(r.frags)
	asked := 0
	for r.next < len(r.order) && asked < want {
		h := r.order[r.next]
		r.next++
		asked += h.count
		g.send(h.h, wire.TypeGlacierFetch, wire.GlacierFetch{Req: r.req, Origin: g.self, Bundle: r.key.bundle, Index: h.index})
		g.stats.MaintenanceMsgs++
	}
	req := r.req
	g.env.Clock.AfterFunc(g.cfg.FetchTimeout, func() {
		r := g.repairs[req]
		if r == nil || r.done {
			return
		}
		if r.rounds < g.cfg.FetchAttempts && r.next < len(r.order) {
			g.repairRound(r)
			return
		}
		delete(g.repairs, req)
		g.env.Log.Info("glacier: repair gave up", "bundle", r.key.bundle.Short(), "fragments", len(r.frags))
	})
}

func (r *repair) add(g *Glacier, recs []wire.GlacierRecord) {
	if r.done {
		return
	}
	var m *Manifest
	for _, rec := range recs {
		f, bk, err := g.checkRecord(rec)
		if err != nil || bk != r.key.bundle || f.Manifest.Hash() != r.key.manifest {
			g.stats.BadFragments++
			continue
		}
		r.frags[f.Index] = f
		r.rec = rec
		m = &f.Manifest
	}
	if m == nil || len(r.frags) < m.Code.M {
		return
	}
	r.done = true
	delete(g.repairs, r.req)
	shards := make([][]byte, m.Code.N)
	for i, f := range r.frags {
		shards[i] = f.Data
	}
	if err := Reconstruct(m.Code, shards); err != nil {
		g.env.Log.Warn("glacier: repair decode", "bundle", r.key.bundle.Short(), "err", err)
		return
	}
	leaves := make([]Hash, len(shards))
	for i, s := range shards {
		leaves[i] = LeafHash(i, s)
	}
	if MerkleRoot(leaves) != m.Root {
		g.stats.BadFragments++
		return
	}
	place := make([]wire.GlacierRecord, m.Code.N)
	missing := 0
	for i := range shards {
		if _, ok := r.holders[uint16(i)]; ok {
			continue
		}
		f := &Fragment{Manifest: *m, Index: i, Proof: MerkleProof(leaves, i), Data: shards[i]}
		enc, err := f.Encode()
		if err != nil {
			return
		}
		place[i] = wire.GlacierRecord{Fragment: enc, Address: r.rec.Address, Cert: r.rec.Cert}
		missing++
	}
	g.stats.Repairs++
	g.stats.Regenerated += uint64(missing)
	g.place(&placement{owner: m.Owner, seq: m.Seq, manifest: r.key.manifest, keys: FragmentKeys(r.key.bundle, m.Code.N), recs: place, repair: true})
}
