package glacier

import (
	"errors"
	"fmt"

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

// probeEnd finds the first position of w's chain that no node holds:
// doubling steps, then bisection, each step one Fetch. Once found, the
// queue is sealed as usual.
func (g *Glacier) probeEnd(w *owner) {
	type bound struct {
		seq  uint64
		hash Hash
	}
	var have *bound   // highest position known to exist
	var lo, hi uint64 // once hi is found missing: lo exists, hi does not
	var step func(s uint64)
	var bisect func()
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
			wait := g.cfg.ArchiveDelay - env.Duration(g.env.Clock.Now()-w.queued[0])
			w.timer = g.env.Clock.AfterFunc(max(wait, 0), func() {
				w.timer = nil
				g.seal(w)
			})
		}
	}
	probe := func(s uint64, found func(*Manifest), missing func()) {
		g.Fetch(w.id, s, func(_ *Bundle, m *Manifest, err error) {
			switch {
			case err == nil:
				found(m)
			case errors.Is(err, ErrNoBundle):
				missing()
			default:
				// Fragments exist but too few: the position is taken all
				// the same.
				found(nil)
			}
		})
	}
	// lo exists and hi does not: halve the gap until they are adjacent.
	bisect = func() {
		if hi-lo <= 1 {
			finish()
			return
		}
		mid := lo + (hi-lo)/2
		probe(mid, func(m *Manifest) {
			lo = mid
			have = &bound{mid, Hash{}}
			if m != nil {
				have.hash = m.Hash()
			}
			bisect()
		}, func() {
			hi = mid
			bisect()
		})
	}
	step = func(s uint64) {
		probe(s, func(m *Manifest) {
			lo = s
			have = &bound{s, Hash{}}
			if m != nil {
				have.hash = m.Hash()
			}
			step(2*s + 1)
		}, func() {
			if s == 0 {
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
		w.timer = g.env.Clock.AfterFunc(g.cfg.ArchiveDelay, func() {
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
	b := &Bundle{Owner: w.id, Seq: w.seq, Objects: w.queue}
	m, frags, err := MakeFragments(g.cfg.Code, b, w.prev, w.key)
	if err != nil {
		// Only an object too large to encode gets here; it stays in PAST.
		g.env.Log.Error("glacier: seal bundle", "owner", w.address, "seq", w.seq, "err", err)
		w.queue, w.queued, w.bytes = nil, nil, 0
		return
	}
	queued := w.queued
	w.sealedRange(m.Seq, w.jnext-uint64(len(w.queue)), w.jnext)
	w.queue, w.queued, w.bytes = nil, nil, 0
	w.prev = m.Hash()
	w.seq++
	g.stats.Bundles++
	g.stats.BundleBytes += m.Size
	if g.OnSealed != nil {
		g.OnSealed(w.id, w.seq, w.prev)
	}
	recs := make([]wire.GlacierRecord, len(frags))
	for i, f := range frags {
		enc, err := f.Encode()
		if err != nil {
			g.env.Log.Error("glacier: encode fragment", "err", err)
			return
		}
		recs[i] = wire.GlacierRecord{Fragment: enc, Address: w.address, Cert: w.cert}
		g.stats.FragmentBytes += uint64(len(wire.MustMarshal(recs[i])))
	}
	now := g.env.Clock.Now()
	waited := make([]env.Duration, len(queued))
	for i, t := range queued {
		waited[i] = env.Duration(now - t)
	}
	p := &placement{owner: w.id, seq: m.Seq, manifest: m.Hash(), keys: FragmentKeys(BundleKey(w.id, m.Seq), g.cfg.Code.N), recs: recs, waited: waited, sealed: now}
	g.place(p)
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
	repair   bool
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
	}
	g.stats.Archived++
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
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && ids[j].Cmp(ids[j-1]) < 0; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
}
