package glacier

import (
	"errors"
	"fmt"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/wire"
)

// owner is one local user's archive queue and chain position.
type owner struct {
	id      id.ID
	address string
	key     identity.SigningKey
	cert    []byte
	seq     uint64 // the next bundle's position
	prev    Hash   // the last sealed bundle's manifest hash
	queue   []Object
	queued  []env.Time // when each queued object arrived
	bytes   int
	timer   env.Timer
	// probing: the chain's end is not known here (a new disk): nothing is
	// sealed until the probe has found it, so no bundle is overwritten.
	probing bool
	// The queue's journal: the next entry's number, the number below
	// which everything is archived, and the bundles sealed and not yet
	// placed with the entries they took.
	jnext, jdone uint64
	outstanding  []pendingBundle
	// Compaction: partial bundles sealed here, oldest first, and the
	// positions a compacted bundle superseded (not renewed any more).
	partials     []*partialBundle
	compacting   bool
	compactTimer env.Timer
	superseded   map[uint64]bool
}

// QueueStatus is what waits in one user's archive queue.
type QueueStatus struct {
	Objects int
	Bytes   int
	Oldest  env.Duration // how long the oldest object has waited
	Placing int          // bundles sealed and not yet fully acknowledged
	NextSeq uint64
}

// AddOwner makes this node archive for a local user, continuing the chain
// at seq after the bundle whose manifest hash is prev. The caller persists
// what OnSealed reports and passes it back here after a restart, with
// known true. With known false (a node that has no record of the chain,
// such as a new disk for an old user) the archive first finds the chain's
// end in the network, and seals nothing before.
func (g *Glacier) AddOwner(address string, key identity.SigningKey, cert []byte, seq uint64, prev Hash, known bool) error {
	c, err := g.verifier.VerifyUser(cert, address)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInput, err)
	}
	if c.Signing != key.Public() {
		return fmt.Errorf("%w: signing key does not match the certificate of %s", ErrInput, address)
	}
	if _, ok := g.owners[c.UserID.ID]; ok {
		return nil
	}
	w := &owner{id: c.UserID.ID, address: c.Address, key: key, cert: cert, seq: seq, prev: prev, probing: !known}
	if r := g.journals[w.id]; r != nil {
		w.jdone = r.done
		w.jnext = r.done
		for j := range r.entries {
			w.jnext = max(w.jnext, j+1)
		}
	}
	g.owners[c.UserID.ID] = w
	if g.cfg.RenewPeriod > 0 {
		first := g.cfg.RenewPeriod/2 + env.Duration(g.env.Rand.IntN(int(g.cfg.RenewPeriod/2)+1))
		g.env.Clock.AfterFunc(first, func() { g.renew(w) })
	}
	if !known {
		g.probeEnd(w)
	}
	return nil
}

// probeEnd finds the position after the last bundle of w's chain in the
// network. Compaction leaves runs of freed positions shorter than
// RecoverLookAhead, so "a bundle exists in [s, s+RecoverLookAhead)" is
// true below the end and false from it on: doubling steps, then
// bisection, on that test. Once found, the queue is sealed as usual.
func (g *Glacier) probeEnd(w *owner) {
	ahead := uint64(max(g.cfg.RecoverLookAhead, 1))
	type bound struct {
		seq  uint64
		hash Hash
	}
	var have *bound   // highest position known to exist
	var lo, hi uint64 // once hi is found missing: lo exists, hi does not
	finish := func() {
		w.probing = false
		w.seq, w.prev = 0, Hash{}
		if have != nil {
			w.seq, w.prev = have.seq+1, have.hash
		}
		if g.OnSealed != nil {
			g.OnSealed(w.id, w.seq, w.prev)
		}
		g.env.Log.Info("glacier: chain end found", "owner", w.address, "next", w.seq)
		// The queue waited for the probe; it is sealed when full, or when
		// its oldest object has waited ArchiveDelay, as always.
		if len(w.queue) > 0 && w.timer == nil {
			wait := g.sealWait() - env.Duration(g.env.Clock.Now()-w.queued[0])
			w.timer = g.env.Clock.AfterFunc(max(wait, 0), func() {
				w.timer = nil
				g.seal(w)
			})
		}
	}
	// window reports the first position in [s, s+ahead) that exists.
	var window func(s uint64, found func(*bound), missing func())
	window = func(s uint64, found func(*bound), missing func()) {
		var at func(i uint64)
		at = func(i uint64) {
			if i >= ahead {
				missing()
				return
			}
			g.Fetch(w.id, s+i, func(_ *Bundle, m *Manifest, err error) {
				switch {
				case err == nil:
					found(&bound{s + i, m.Hash()})
				case errors.Is(err, ErrNoBundle):
					at(i + 1)
				default:
					// Fragments exist but too few: the position is taken
					// all the same.
					found(&bound{s + i, Hash{}})
				}
			})
		}
		at(0)
	}
	note := func(b *bound) {
		if have == nil || b.seq > have.seq {
			have = b
		}
	}
	var bisect func()
	bisect = func() {
		if hi-lo <= 1 {
			finish()
			return
		}
		mid := lo + (hi-lo)/2
		window(mid, func(b *bound) {
			note(b)
			lo = max(mid, b.seq)
			hi = max(hi, lo+1)
			bisect()
		}, func() {
			hi = mid
			bisect()
		})
	}
	var step func(s uint64)
	step = func(s uint64) {
		window(s, func(b *bound) {
			note(b)
			lo = b.seq
			step(2*b.seq + 1)
		}, func() {
			if have == nil {
				finish()
				return
			}
			hi = s
			bisect()
		})
	}
	step(0)
}

// renew extends the leases of every fragment of every bundle in w's chain,
// then schedules the next round: the archive lives as long as its owner
// keeps renewing, like PAST's objects.
func (g *Glacier) renew(w *owner) {
	if g.owners[w.id] != w {
		return
	}
	g.env.Clock.AfterFunc(g.cfg.RenewPeriod, func() { g.renew(w) })
	if w.probing {
		return
	}
	for s := uint64(0); s < w.seq; s++ {
		if w.superseded[s] {
			continue // freed: its objects are in a later bundle
		}
		bk := BundleKey(w.id, s)
		for i, k := range FragmentKeys(bk, g.cfg.Code.N) {
			g.route(k, wire.TypeGlacierRenew, wire.GlacierRenew{Bundle: bk, Owner: w.id, Index: uint16(i), Lease: int64(g.cfg.Lease), Skips: uint8(g.cfg.FetchSkips)})
			g.stats.MaintenanceMsgs++
		}
	}
}

// Archive queues an object of a local user for the archive. The object is
// already durable elsewhere (its PAST replicas); within ArchiveDelay it is
// sealed into a bundle and placed.
func (g *Glacier) Archive(user id.ID, o Object) error {
	w := g.owners[user]
	if w == nil {
		return fmt.Errorf("%w: %s does not archive here", ErrInput, user.Short())
	}
	size := len(o.Data) + 64 // with the object's framing in the bundle
	if len(w.queue) > 0 && !w.probing && (w.bytes+size > g.cfg.MaxBundleBytes || len(w.queue) >= g.cfg.MaxBundleObjects) {
		g.seal(w)
	}
	g.journal(w, o)
	w.queue = append(w.queue, o)
	w.queued = append(w.queued, g.env.Clock.Now())
	w.bytes += size
	g.stats.Queued++
	g.stats.QueuedBytes += uint64(len(o.Data))
	if !w.probing && (w.bytes >= g.cfg.MaxBundleBytes || len(w.queue) >= g.cfg.MaxBundleObjects) {
		g.seal(w)
		return nil
	}
	if w.timer == nil && !w.probing {
		w.timer = g.env.Clock.AfterFunc(g.sealWait(), func() {
			w.timer = nil
			g.seal(w)
		})
	}
	return nil
}

// Flush seals every non-empty queue now.
func (g *Glacier) Flush() {
	ids := make([]id.ID, 0, len(g.owners))
	for k := range g.owners {
		ids = append(ids, k)
	}
	sortIDs(ids)
	for _, k := range ids {
		g.seal(g.owners[k])
	}
}

// Queue reports a local user's archive queue.
func (g *Glacier) Queue(user id.ID) QueueStatus {
	w := g.owners[user]
	if w == nil {
		return QueueStatus{}
	}
	q := QueueStatus{Objects: len(w.queue), Bytes: w.bytes, NextSeq: w.seq}
	if len(w.queued) > 0 {
		q.Oldest = env.Duration(g.env.Clock.Now() - w.queued[0])
	}
	for _, p := range g.placing {
		if p.owner == user {
			q.Placing++
		}
	}
	return q
}

// Queues sums every local user's archive queue: what is not archived yet
// (Oldest is the longest wait), and bundles still being placed.
func (g *Glacier) Queues() QueueStatus {
	var q QueueStatus
	now := g.env.Clock.Now()
	for _, w := range g.owners {
		q.Objects += len(w.queue)
		q.Bytes += w.bytes
		if len(w.queued) > 0 {
			q.Oldest = max(q.Oldest, env.Duration(now-w.queued[0]))
		}
	}
	for _, p := range g.placing {
		if !p.repair {
			q.Placing++
		}
	}
	return q
}

// seal turns the queue into a bundle, encodes it and starts placing its
// fragments.
func (g *Glacier) seal(w *owner) {
	if w.probing {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if len(w.queue) == 0 {
		return
	}
	queued := w.queued
	from := w.jnext - uint64(len(w.queue))
	objs := w.queue
	w.queue, w.queued, w.bytes = nil, nil, 0
	p := g.sealBundle(w, objs, nil)
	if p == nil {
		return
	}
	w.sealedRange(p.seq, from, w.jnext)
	now := g.env.Clock.Now()
	p.waited = make([]env.Duration, len(queued))
	for i, t := range queued {
		p.waited[i] = env.Duration(now - t)
	}
	g.place(p)
}

// sealBundle makes the next bundle of w's chain from objs and returns its
// placement, not yet started; sup names the earlier bundles it
// supersedes (a compaction).
func (g *Glacier) sealBundle(w *owner, objs []Object, sup []SeqRange) *placement {
	b := &Bundle{Owner: w.id, Seq: w.seq, Objects: objs}
	m, frags, err := makeFragments(g.cfg.Code, b, w.prev, sup, w.key)
	if err != nil {
		// Only an object too large to encode gets here; it stays in PAST.
		g.env.Log.Error("glacier: seal bundle", "owner", w.address, "seq", w.seq, "err", err)
		return nil
	}
	recs := make([]wire.GlacierRecord, len(frags))
	for i, f := range frags {
		enc, err := f.Encode()
		if err != nil {
			g.env.Log.Error("glacier: encode fragment", "err", err)
			return nil
		}
		recs[i] = wire.GlacierRecord{Fragment: enc, Address: w.address, Cert: w.cert}
	}
	w.prev = m.Hash()
	w.seq++
	g.stats.Bundles++
	g.stats.BundleBytes += m.Size
	for i := range recs {
		g.stats.FragmentBytes += uint64(len(wire.MustMarshal(recs[i])))
	}
	if g.OnSealed != nil {
		g.OnSealed(w.id, w.seq, w.prev)
	}
	if sup == nil && m.Size < uint64(g.cfg.MaxBundleBytes/2) && g.cfg.CompactAfter > 0 {
		w.partials = append(w.partials, &partialBundle{seq: m.Seq, manifest: m.Hash(), size: int(m.Size), objects: len(objs), sealed: g.env.Clock.Now()})
	}
	keys := make([][32]byte, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	return &placement{owner: w.id, seq: m.Seq, manifest: m.Hash(), keys: FragmentKeys(BundleKey(w.id, m.Seq), g.cfg.Code.N), recs: recs, sealed: g.env.Clock.Now(), objects: keys}
}

// placement is a bundle's fragments on their way to their holders, by the
// owner or by a repairing coordinator.
type placement struct {
	owner    id.ID
	seq      uint64
	manifest Hash
	keys     []id.ID
	recs     []wire.GlacierRecord // nil where not to place (repair: held already)
	ack      []bool
	left     int
	attempts int
	req      uint64
	waited   []env.Duration
	sealed   env.Time
	objects  [][32]byte // the keys of the bundle's objects (the owner's placements)
	repair   bool
	// compacts: the partial bundles this one supersedes (a compaction),
	// freed once every fragment of this one is acknowledged.
	compacts []*partialBundle
}

func (g *Glacier) place(p *placement) {
	p.req = g.req()
	p.ack = make([]bool, len(p.recs))
	for i, r := range p.recs {
		if r.Fragment != nil {
			p.left++
		} else {
			p.ack[i] = true
		}
	}
	g.placing[p.req] = p
	g.sendFragments(p)
}

func (g *Glacier) sendFragments(p *placement) {
	p.attempts++
	for i, r := range p.recs {
		if p.ack[i] {
			continue
		}
		n := g.route(p.keys[i], wire.TypeGlacierStore, wire.GlacierStore{
			Req: p.req, Origin: g.self, Record: r, Cap: uint16(g.cfg.PerNode), Lease: int64(g.cfg.Lease),
		})
		if p.repair && n > 0 {
			g.stats.MaintenanceMsgs++
		}
	}
	req := p.req
	g.env.Clock.AfterFunc(g.cfg.StoreTimeout, func() {
		p := g.placing[req]
		if p == nil {
			return
		}
		// A repair is not re-sent: the next audit counts what arrived.
		if p.attempts < g.cfg.StoreAttempts && !p.repair {
			g.sendFragments(p)
			return
		}
		// Audits find and repair what is still missing.
		delete(g.placing, req)
		if p.repair {
			return
		}
		if w := g.owners[p.owner]; w != nil {
			g.placed(w, p.seq)
			g.partialPlaced(w, p, false)
		}
		g.stats.Incomplete++
		g.env.Log.Warn("glacier: placement incomplete", "bundle", p.seq, "unacknowledged", p.left)
	})
}

func (p *placement) acked(g *Glacier, s wire.GlacierStored) {
	i := int(s.Index)
	if s.Manifest != p.manifest || i >= len(p.ack) || p.ack[i] {
		return
	}
	p.ack[i] = true
	p.left--
	if p.left > 0 {
		return
	}
	delete(g.placing, p.req)
	if p.repair {
		return
	}
	if w := g.owners[p.owner]; w != nil {
		g.placed(w, p.seq)
		g.partialPlaced(w, p, true)
	}
	g.stats.Archived++
	if g.OnChainPlaced != nil {
		g.OnChainPlaced(p.owner, p.seq, p.manifest, p.objects)
	}
	if g.OnArchived != nil {
		now := g.env.Clock.Now()
		w := make([]env.Duration, len(p.waited))
		for i, d := range p.waited {
			w[i] = d + env.Duration(now-p.sealed)
		}
		g.OnArchived(p.owner, p.seq, w)
	}
}

func sortIDs(ids []id.ID) {
	sort.Slice(ids, func(i, j int) bool { return ids[i].Cmp(ids[j]) < 0 })
}
