package glacier

import (
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
)

// Maintenance. Every holder, once per AuditPeriod, routes one compact
// message per bundle it holds fragments of (bundle key, manifest hash,
// the indices it holds) to the root of the bundle key, the bundle's
// coordinator. A coordinator counts what it heard over a window of at
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

// report tells each held bundle's coordinator what this node holds.
func (g *Glacier) report() {
	bks := make([]id.ID, 0, len(g.held))
	for bk := range g.held {
		bks = append(bks, bk)
	}
	sortIDs(bks)
	for _, bk := range bks {
		held := g.held[bk]
		byMan := map[Hash][]uint16{}
		ns := map[Hash]int{}
		for idx, k := range held {
			f, err := g.readFragment(k)
			if err != nil {
				// Lost (expired, scrubbed) or damaged: no longer held.
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
			g.route(bk, wire.TypeGlacierHolding, wire.GlacierHolding{Bundle: bk, Manifest: mh, N: uint16(ns[mh]), Indices: idxs, Holder: g.self})
			g.stats.Holdings++
			g.stats.MaintenanceMsgs++
		}
	}
}

// onHolding counts a holder's report at the bundle's coordinator.
func (g *Glacier) onHolding(h wire.GlacierHolding) {
	if h.N == 0 || int(h.N) > 256 || len(h.Indices) > int(h.N) {
		g.stats.Malformed++
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
}

func (g *Glacier) startRepair(k auditKey, n int, holders map[uint16]NodeHandle) {
	r := &repair{key: k, n: n, holders: holders, req: g.req(), frags: map[int]*Fragment{}}
	g.repairs[r.req] = r
	// One request per distinct holder: each answers with all it holds.
	asked := map[id.NodeID]bool{}
	idxs := make([]int, 0, len(holders))
	for i := range holders {
		idxs = append(idxs, int(i))
	}
	sort.Ints(idxs)
	for _, i := range idxs {
		h := holders[uint16(i)]
		if asked[h.ID] {
			continue
		}
		asked[h.ID] = true
		g.send(h, wire.TypeGlacierFetch, wire.GlacierFetch{Req: r.req, Origin: g.self, Bundle: k.bundle, Index: uint16(i)})
		g.stats.MaintenanceMsgs++
	}
	req := r.req
	g.env.Clock.AfterFunc(g.cfg.FetchTimeout*env.Duration(g.cfg.FetchAttempts), func() {
		if r := g.repairs[req]; r != nil && !r.done {
			delete(g.repairs, req)
			g.env.Log.Info("glacier: repair gave up", "bundle", k.bundle.Short(), "fragments", len(r.frags))
		}
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
