package past

import (
	"fmt"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// MutableResult is what a mutable lookup returns: every valid object at
// the highest version any replica holds. More than one is a fork, which
// the reader must resolve (POST merges forked logs).
type MutableResult struct {
	Key      store.Key
	Versions []*Mutable
}

// Forked reports whether replicas hold different objects at one version.
func (r MutableResult) Forked() bool { return len(r.Versions) > 1 }

type lookupReq struct {
	req     uint64
	kind    store.Kind
	key     store.Key
	routed  int
	asked   map[id.ID]bool
	pending int // fetches awaiting an answer (mutable)
	queue   []NodeHandle
	timer   env.Timer
	best    slot       // mutable: the highest verified version seen
	set     *setRecord // set: the union seen
	found   bool
	doneImm func([]byte, error)
	doneMut func(MutableResult, error)
	doneSet func([][]byte, error)
}

// Lookup reads an immutable object. The bytes are verified against key
// before done sees them; a replica with bad or no bytes is skipped for the
// next.
func (p *Past) Lookup(key store.Key, done func([]byte, error)) {
	p.stats.Lookups++
	if b, err := p.st.Get(store.KindImmutable, key); err == nil {
		p.stats.LookupsOK++
		p.env.Clock.AfterFunc(0, func() { done(b, nil) })
		return
	}
	r := p.newLookup(store.KindImmutable, key)
	r.doneImm = done
	p.routeLookup(r)
}

// LookupMutable reads a mutable object from every replica it can reach
// and returns the highest valid version, so that no single stale holder
// can roll the reader back.
func (p *Past) LookupMutable(key store.Key, done func(MutableResult, error)) {
	p.stats.Lookups++
	r := p.newLookup(store.KindMutable, key)
	r.doneMut = done
	if b, err := p.st.Get(store.KindMutable, key); err == nil {
		if sl, _, err := p.verifyObject(store.KindMutable, key, b, false); err == nil {
			r.merge(sl, p.cfg.MaxForks)
		}
	}
	r.asked[p.self.ID.ID] = true
	p.routeLookup(r)
}

func (p *Past) newLookup(kind store.Kind, key store.Key) *lookupReq {
	p.nextReq++
	r := &lookupReq{req: p.nextReq, kind: kind, key: key, asked: map[id.ID]bool{}}
	p.lookups[r.req] = r
	return r
}

func (p *Past) routeLookup(r *lookupReq) {
	r.routed++
	p.route(r.key, wire.TypePastLookup, wire.PastLookup{Req: r.req, Origin: p.self, Kind: uint8(r.kind), Key: r.key})
	p.arm(r, p.cfg.LookupTimeout)
}

func (p *Past) arm(r *lookupReq, d env.Duration) {
	if r.timer != nil {
		r.timer.Stop()
	}
	r.timer = p.env.Clock.AfterFunc(d, func() {
		if p.lookups[r.req] != r {
			return
		}
		r.pending = 0
		p.next(r)
	})
}

// next moves a lookup on: the next replica to ask, another routed
// attempt, or the end.
func (p *Past) next(r *lookupReq) {
	if r.kind != store.KindImmutable {
		// Ask every replica not yet asked at once; finish when all
		// answered or the timer fires.
		for _, h := range r.queue {
			if !r.asked[h.ID.ID] {
				r.asked[h.ID.ID] = true
				r.pending++
				p.send(h, wire.TypePastFetch, wire.PastLookup{Req: r.req, Origin: p.self, Kind: uint8(r.kind), Key: r.key})
			}
		}
		r.queue = nil
		if r.pending > 0 {
			p.arm(r, p.cfg.FetchTimeout)
			return
		}
		if r.found || r.routed >= 2 {
			p.finishLookup(r, nil)
			return
		}
		p.routeLookup(r)
		return
	}
	for len(r.queue) > 0 {
		h := r.queue[0]
		r.queue = r.queue[1:]
		if r.asked[h.ID.ID] || h.ID == p.self.ID {
			continue
		}
		r.asked[h.ID.ID] = true
		p.send(h, wire.TypePastFetch, wire.PastLookup{Req: r.req, Origin: p.self, Kind: uint8(r.kind), Key: r.key})
		p.arm(r, p.cfg.FetchTimeout)
		return
	}
	if r.routed < 2 {
		p.routeLookup(r)
		return
	}
	p.finishLookup(r, fmt.Errorf("%w: %s (asked %d replicas)", ErrNotFound, r.key.Short(), len(r.asked)))
}

func (r *lookupReq) merge(s slot, maxForks int) {
	for _, m := range s {
		r.best, _, _ = r.best.merge(m, maxForks)
	}
	r.found = len(r.best) > 0
}

func (p *Past) finishLookup(r *lookupReq, err error) {
	delete(p.lookups, r.req)
	if r.timer != nil {
		r.timer.Stop()
	}
	if r.kind == store.KindImmutable {
		if err != nil {
			p.stats.LookupsFailed++
		} else {
			p.stats.LookupsOK++
		}
		if err != nil {
			r.doneImm(nil, err)
		}
		return
	}
	if r.kind == store.KindSet {
		// An empty or unknown set is a valid answer: nothing pending.
		p.stats.LookupsOK++
		var members [][]byte
		if r.set != nil {
			members = r.set.Members
		}
		r.doneSet(members, nil)
		return
	}
	if !r.found {
		p.stats.LookupsFailed++
		r.doneMut(MutableResult{}, fmt.Errorf("%w: %s (asked %d replicas)", ErrNotFound, r.key.Short(), len(r.asked)))
		return
	}
	p.stats.LookupsOK++
	if len(r.best) > 1 {
		p.stats.Forks++
	}
	r.doneMut(MutableResult{Key: r.key, Versions: r.best}, nil)
}

// answer replies to a lookup (routed, at the root or a holder on the path)
// or a fetch. It reports whether it had the object.
func (p *Past) answer(l wire.PastLookup, root bool) bool {
	kind := store.Kind(l.Kind)
	o := wire.PastObject{Req: l.Req, Kind: l.Kind, Key: l.Key, Node: p.self}
	if pastKind(kind) {
		if b, err := p.st.Get(kind, l.Key); err == nil {
			o.Found, o.Data = true, b
		}
	}
	if root {
		n := 2 * p.cfg.Replicas
		if kind == store.KindImmutable {
			// Copies beyond the k closest are kept (Carbonite): after
			// nodes closer to the key come back, or join, they hold
			// nothing until maintenance gives them their share, and the
			// copies that were acknowledged sit a little further out. A
			// reader asks one node at a time and stops at the first
			// copy, so naming the whole leaf set costs only on a miss.
			n = len(p.ov.Leaf().Members()) + 1
		}
		o.Replicas = p.replicaSet(l.Key, n)
	}
	p.send(l.Origin, wire.TypePastObject, o)
	return o.Found
}

// onObject takes an answer: verify, then finish or go on.
func (p *Past) onObject(from NodeHandle, o wire.PastObject) {
	r := p.lookups[o.Req]
	if r == nil || r.key != o.Key || store.Kind(o.Kind) != r.kind {
		return
	}
	for _, h := range o.Replicas {
		if h.ID != p.self.ID && !r.asked[h.ID.ID] {
			r.queue = append(r.queue, h)
		}
	}
	r.asked[from.ID.ID] = true
	if r.pending > 0 {
		r.pending--
	}
	if o.Found && r.kind == store.KindSet {
		if rec, _, err := p.verifySet(r.key, o.Data, false); err != nil {
			p.stats.BadObjects++
			p.env.Log.Warn("past: bad set", "key", r.key.Short(), "from", from.ID.ID.Short(), "err", err)
		} else {
			r.set, _, _ = r.set.merge(rec, p.cfg.MaxSetMembers)
			r.found = true
		}
	} else if o.Found {
		sl, _, err := p.verifyObject(r.kind, r.key, o.Data, false)
		if err != nil {
			p.stats.BadObjects++
			p.env.Log.Warn("past: bad object", "key", r.key.Short(), "from", from.ID.ID.Short(), "err", err)
		} else if r.kind == store.KindImmutable {
			delete(p.lookups, r.req)
			r.timer.Stop()
			p.stats.LookupsOK++
			r.doneImm(o.Data, nil)
			return
		} else {
			r.merge(sl, p.cfg.MaxForks)
		}
	}
	if r.kind != store.KindImmutable && r.pending > 0 {
		return
	}
	p.next(r)
}
