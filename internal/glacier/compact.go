package glacier

import (
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// Compaction. A light user's queue is sealed by the archive delay long
// before it fills a bundle, and a small bundle costs far more than its
// bytes: every fragment carries a manifest and a proof, about 805 bytes
// with what a holder keeps beside it, so a bundle of S bytes stores about
// 256/66 + 256*805/S times S. The owner therefore merges its partial
// bundles (sealed less than half full) into one: once they would fill
// three quarters of a bundle, once CompactMax of them are waiting, or
// once the oldest has waited CompactAfter, it fetches them back from the
// archive (decoding each, as recovery does), seals one bundle with all
// their objects at the next chain position, naming the positions it
// supersedes in its signed manifest, and once every fragment of that one
// is acknowledged, frees the old ones: it stops renewing them and asks
// their holders (GlacierRelease, with the new manifest as proof) to drop
// their fragments. Until then both copies exist, so nothing archived is
// ever without a complete placement.
//
// A compacted bundle is not compacted again: a superseded run of
// positions is then at most about CompactMax long, and recovery, walking
// the chain, looks that far ahead past a missing position before it
// concludes the chain has ended (RecoverLookAhead).

// partialBundle is a bundle sealed small, a candidate for compaction.
type partialBundle struct {
	seq      uint64
	manifest Hash
	size     int
	objects  int
	sealed   env.Time
	placed   bool // every fragment acknowledged
	skip     bool // a compaction of it failed: left as it is
}

// partialPlaced notes the end of a placement: a partial bundle becomes a
// candidate once fully acknowledged; a compaction frees what it
// supersedes.
func (g *Glacier) partialPlaced(w *owner, p *placement, complete bool) {
	if p.compacts != nil {
		w.compacting = false
		if !complete {
			// Both copies stay and are renewed; not tried again.
			for _, q := range p.compacts {
				q.skip = true
			}
			return
		}
		g.release(w, p)
		g.maybeCompact(w)
		return
	}
	for _, q := range w.partials {
		if q.seq == p.seq {
			q.placed = complete
			q.skip = !complete
		}
	}
	g.maybeCompact(w)
}

// compactGroup picks the oldest placed partial bundles that fit in one
// bundle, and reports whether it is time to merge them.
func (g *Glacier) compactGroup(w *owner) ([]*partialBundle, bool, env.Time) {
	var group []*partialBundle
	bytes, objects := 0, 0
	full := false
	for _, q := range w.partials {
		if q.skip || !q.placed {
			continue
		}
		if len(group) == g.cfg.CompactMax || bytes+q.size > g.cfg.MaxBundleBytes || objects+q.objects > g.cfg.MaxBundleObjects {
			full = true
			break
		}
		group = append(group, q)
		bytes += q.size
		objects += q.objects
	}
	if len(group) < 2 {
		return nil, false, 0
	}
	due := group[0].sealed.Add(g.cfg.CompactAfter)
	now := g.env.Clock.Now()
	return group, full || len(group) == g.cfg.CompactMax || 4*bytes >= 3*g.cfg.MaxBundleBytes || now >= due, due
}

// maybeCompact starts a compaction when one is due, or sets a timer for
// when the oldest partial bundle will have waited CompactAfter.
func (g *Glacier) maybeCompact(w *owner) {
	if g.cfg.CompactAfter <= 0 || w.compacting || w.probing || g.owners[w.id] != w {
		return
	}
	group, now, due := g.compactGroup(w)
	if group == nil {
		return
	}
	if !now {
		if w.compactTimer == nil {
			w.compactTimer = g.env.Clock.AfterFunc(env.Duration(due-g.env.Clock.Now()), func() {
				w.compactTimer = nil
				g.maybeCompact(w)
			})
		}
		return
	}
	w.compacting = true
	got := make([]*Bundle, len(group))
	left, failed := len(group), false
	for i, q := range group {
		g.Fetch(w.id, q.seq, func(b *Bundle, m *Manifest, err error) {
			if err != nil || m.Hash() != q.manifest {
				failed = true
				q.skip = true
				g.env.Log.Warn("glacier: compaction fetch", "owner", w.address, "seq", q.seq, "err", err)
			} else {
				got[i] = b
			}
			if left--; left == 0 {
				g.finishCompact(w, group, got, failed)
			}
		})
	}
}

func (g *Glacier) finishCompact(w *owner, group []*partialBundle, got []*Bundle, failed bool) {
	if failed || g.owners[w.id] != w {
		w.compacting = false
		g.maybeCompact(w)
		return
	}
	var objs []Object
	seqs := make([]uint64, len(group))
	for i, b := range got {
		objs = append(objs, b.Objects...)
		seqs[i] = group[i].seq
	}
	p := g.sealBundle(w, objs, seqRanges(seqs))
	if p == nil {
		w.compacting = false
		for _, q := range group {
			q.skip = true
		}
		return
	}
	p.compacts = group
	g.stats.Compactions++
	g.place(p)
}

// seqRanges turns sorted positions into ranges.
func seqRanges(seqs []uint64) []SeqRange {
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	var out []SeqRange
	for _, s := range seqs {
		if n := len(out); n > 0 && out[n-1].To == s {
			out[n-1].To = s + 1
			continue
		}
		out = append(out, SeqRange{From: s, To: s + 1})
	}
	return out
}

// release frees the bundles a fully placed compaction supersedes.
func (g *Glacier) release(w *owner, p *placement) {
	var man []byte
	if len(p.recs) > 0 {
		if f, err := DecodeFragment(p.recs[0].Fragment); err == nil {
			man = wire.MustMarshal(&f.Manifest)
		}
	}
	if man == nil {
		return
	}
	if w.superseded == nil {
		w.superseded = map[uint64]bool{}
	}
	in := map[*partialBundle]bool{}
	for _, q := range p.compacts {
		in[q] = true
		w.superseded[q.seq] = true
		bk := BundleKey(w.id, q.seq)
		// The coordinator first, so it does not repair what goes.
		g.route(bk, wire.TypeGlacierRelease, wire.GlacierRelease{Owner: w.id, Seq: q.seq, Index: releaseCoordinator, Manifest: man, Address: w.address, Cert: w.cert})
		for i, k := range FragmentKeys(bk, g.cfg.Code.N) {
			g.route(k, wire.TypeGlacierRelease, wire.GlacierRelease{Owner: w.id, Seq: q.seq, Index: uint16(i), Skips: uint8(g.cfg.FetchSkips), Manifest: man, Address: w.address, Cert: w.cert})
		}
		g.stats.MaintenanceMsgs += uint64(1 + g.cfg.Code.N)
		g.stats.Released++
	}
	kept := w.partials[:0]
	for _, q := range w.partials {
		if !in[q] {
			kept = append(kept, q)
		}
	}
	w.partials = kept
}

// releaseCoordinator, as a release's Index, addresses the bundle's
// coordinator, which holds no fragment.
const releaseCoordinator = 0xFFFF

// tombstone replaces a released fragment's bytes: the store frees space
// only when a lease ends, and leases only grow, so the entry stays,
// empty, until then.
var tombstone = wire.MustMarshal(wire.GlacierRecord{})

// onRelease frees this node's fragments of a superseded bundle, once the
// owner's signed manifest of the superseding bundle checks out against a
// certificate of the owner held here.
func (g *Glacier) onRelease(r wire.GlacierRelease) {
	var m Manifest
	if wire.Unmarshal(r.Manifest, &m) != nil || m.check() != nil || m.Owner != r.Owner || m.Seq <= r.Seq || !m.Covers(r.Seq) {
		g.stats.Malformed++
		return
	}
	bk := BundleKey(r.Owner, r.Seq)
	held := g.held[bk]
	_, holds := held[r.Index]
	if r.Index == releaseCoordinator || len(held) > 0 {
		if !g.signedBy(&m, r.Address, r.Cert) {
			g.stats.BadFragments++
			return
		}
		g.forget(bk)
	}
	idxs := make([]int, 0, len(held))
	for i := range held {
		idxs = append(idxs, int(i))
	}
	sort.Ints(idxs)
	for _, i := range idxs {
		k := held[uint16(i)]
		g.unhold(bk, uint16(i))
		g.st.PutAsync(store.KindFragment, k, tombstone, 0, func(err error) {
			if err != nil {
				g.stats.StoreErrors++
			}
		})
		g.stats.ReleasedFragments++
	}
	if holds || r.Skips == 0 || r.Index == releaseCoordinator {
		return
	}
	if next, ok := g.ov.Leaf().RightNeighbour(); ok {
		r.Skips--
		g.send(next, wire.TypeGlacierRelease, r)
	}
}

// forget drops what this node knows of a released bundle as its
// coordinator, and remembers the release so that neither an audit nor a
// late repair brings it back.
func (g *Glacier) forget(bk id.ID) {
	for k := range g.coord {
		if k.bundle == bk {
			delete(g.coord, k)
		}
	}
	if len(g.released) >= 1<<16 {
		clear(g.released)
	}
	g.released[bk] = true
}

// signedBy checks that m is signed by the key of cert, a certificate of
// m's owner from the community's CA.
func (g *Glacier) signedBy(m *Manifest, address string, cert []byte) bool {
	c, err := g.verifier.VerifyUser(cert, address)
	return err == nil && c.UserID.ID == m.Owner && m.Verify(c.Signing) == nil
}
