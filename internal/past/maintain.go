package past

import (
	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// maintState is replica maintenance's memory. It is soft state: lost on
// restart and rebuilt by the next rounds.
type maintState struct {
	since   map[id.ID]env.Time               // when each leaf-set member arrived (this stay)
	holders map[store.Entry]map[id.ID]uint64 // nodes known to hold an entry, at what version
	deficit map[store.Entry]env.Time         // since when fewer than k holders were reachable
	offers  map[uint64]sentOffer             // offers awaiting a Want
	seq     uint64
	round   uint64
	timer   env.Timer
	timerAt env.Time
}

type sentOffer struct {
	to      NodeHandle
	entries []wire.PastOfferEntry
}

func newMaintState() maintState {
	return maintState{
		since:   map[id.ID]env.Time{},
		holders: map[store.Entry]map[id.ID]uint64{},
		deficit: map[store.Entry]env.Time{},
		offers:  map[uint64]sentOffer{},
	}
}

func (m *maintState) forget(e store.Entry) {
	delete(m.holders, e)
	delete(m.deficit, e)
}

func (m *maintState) hold(e store.Entry, n id.ID, version uint64) {
	h := m.holders[e]
	if h == nil {
		h = map[id.ID]uint64{}
		m.holders[e] = h
	}
	h[n] = version
}

// scheduleMaintain runs a round after d, unless one is due sooner.
func (p *Past) scheduleMaintain(d env.Duration) {
	at := p.env.Clock.Now().Add(d)
	if p.m.timer != nil {
		if p.m.timerAt <= at {
			return
		}
		p.m.timer.Stop()
	}
	p.m.timerAt = at
	p.m.timer = p.env.Clock.AfterFunc(d, func() {
		p.m.timer = nil
		p.maintain()
		p.scheduleMaintain(p.cfg.MaintainPeriod)
	})
}

// MaintainNow runs a maintenance round at once (tests, and an operator's
// "repair now").
func (p *Past) MaintainNow() { p.maintain() }

// maintain offers every held object to the replicas, by this node's view,
// that are not known to hold it. A full round offers to all of them, so
// that one that lost data is refilled.
func (p *Past) maintain() {
	if p.ov == nil || !p.ov.Active() {
		return
	}
	p.m.round++
	full := p.m.round%uint64(p.cfg.FullSyncRounds) == 0
	p.m.offers = map[uint64]sentOffer{} // answers to older rounds are moot
	ticks := p.ticks()
	batches := map[id.ID]*sentOffer{}
	var order []id.ID // deterministic send order
	for _, kind := range []store.Kind{store.KindImmutable, store.KindMutable, store.KindSet} {
		var after *store.Key
		for {
			keys, more, err := p.st.Keys(kind, store.Range{}, after, 1024)
			if err != nil {
				p.storeError("keys", err)
				return
			}
			for _, key := range keys {
				e := store.Entry{Kind: kind, Key: key}
				exp, err := p.st.Lease(kind, key)
				if err != nil || exp <= ticks {
					continue
				}
				var version uint64
				if kind != store.KindImmutable {
					b, err := p.st.Get(kind, key)
					if err != nil {
						continue
					}
					if version, err = p.heldVersion(kind, b); err != nil {
						continue
					}
				}
				p.checkDeficit(e)
				for _, h := range p.replicaSet(key, p.cfg.Replicas) {
					if h.ID == p.self.ID {
						continue
					}
					if v, known := p.m.holders[e][h.ID.ID]; known && v == version && !full {
						continue
					}
					b := batches[h.ID.ID]
					if b == nil {
						b = &sentOffer{to: h}
						batches[h.ID.ID] = b
						order = append(order, h.ID.ID)
					}
					b.entries = append(b.entries, wire.PastOfferEntry{Kind: uint8(kind), Key: key, Version: version, Remaining: int64(exp - ticks)})
					if len(b.entries) >= p.cfg.MaxOfferEntries {
						p.sendOffer(b)
						b.entries = nil
					}
				}
			}
			if !more || len(keys) == 0 {
				break
			}
			after = &keys[len(keys)-1]
		}
	}
	for _, n := range order {
		if b := batches[n]; len(b.entries) > 0 {
			p.sendOffer(b)
		}
	}
}

func (p *Past) sendOffer(b *sentOffer) {
	p.m.seq++
	p.m.offers[p.m.seq] = sentOffer{to: b.to, entries: b.entries}
	p.stats.Offers++
	p.stats.MaintenanceBytes += uint64(p.send(b.to, wire.TypePastOffer, wire.PastOffer{From: p.self, Round: p.m.seq, Entries: b.entries}))
}

// reachable counts the known holders of e that are up by this node's
// view (in its leaf set), itself included.
func (p *Past) reachable(e store.Entry) int {
	n := 1
	leaf := p.ov.Leaf()
	for h := range p.m.holders[e] {
		if h != p.self.ID.ID && leaf.Contains(h) {
			n++
		}
	}
	return n
}

// checkDeficit notes when e first had fewer than k reachable holders.
func (p *Past) checkDeficit(e store.Entry) {
	if p.reachable(e) >= p.cfg.Replicas {
		delete(p.m.deficit, e)
	} else if _, ok := p.m.deficit[e]; !ok {
		p.m.deficit[e] = p.env.Clock.Now()
	}
}

// mayCopy is Carbonite's rule for giving node to a copy of e it lacks.
func (p *Past) mayCopy(e store.Entry, to id.ID) bool {
	now := p.env.Clock.Now()
	reach := p.reachable(e)
	switch {
	case reach <= 1:
		return true // the last known copy: no waiting
	case reach < p.cfg.Replicas:
		d, ok := p.m.deficit[e]
		return ok && now.Sub(d) >= p.cfg.RepairDelay
	}
	s, ok := p.m.since[to]
	return ok && now.Sub(s) >= p.cfg.RepairDelay
}

// onOffer answers an offer with what this node lacks, and takes on the
// longer lease of what it has.
func (p *Past) onOffer(from NodeHandle, o wire.PastOffer) {
	ticks := p.ticks()
	var want []wire.PastOfferEntry
	for _, x := range o.Entries {
		kind, key := store.Kind(x.Kind), store.Key(x.Key)
		if !kind.Valid() || x.Remaining <= 0 {
			continue
		}
		e := store.Entry{Kind: kind, Key: key}
		p.m.hold(e, from.ID.ID, x.Version)
		exp, err := p.st.Lease(kind, key)
		if err != nil {
			want = append(want, x)
			continue
		}
		if kind != store.KindImmutable {
			b, err := p.st.Get(kind, key)
			if err != nil {
				want = append(want, x)
				continue
			}
			v, err := p.heldVersion(kind, b)
			// A mutable object is wanted if newer; a set if different at
			// all (the push is merged by union).
			if err != nil || (kind == store.KindMutable && v < x.Version) || (kind == store.KindSet && v != x.Version) {
				want = append(want, x)
				continue
			}
		}
		// The lease travels: a holder renewed by the owner passes the
		// renewal on.
		remaining := min(env.Duration(x.Remaining), p.cfg.MaxLease)
		if offered := ticks.Add(remaining); offered > exp+env.Time(p.cfg.MaintainPeriod) {
			p.st.ExtendLeaseAsync(kind, key, offered, func(err error) {
				if err != nil {
					p.storeError("extend lease", err)
				}
			})
		}
	}
	p.stats.Wants++
	p.stats.MaintenanceBytes += uint64(p.send(from, wire.TypePastWant, wire.PastWant{From: p.self, Round: o.Round, Want: want}))
}

// onWant records who holds what and pushes what may be copied.
func (p *Past) onWant(from NodeHandle, w wire.PastWant) {
	o, ok := p.m.offers[w.Round]
	if !ok || o.to.ID != from.ID {
		return
	}
	delete(p.m.offers, w.Round)
	wanted := map[store.Entry]bool{}
	for _, x := range w.Want {
		wanted[store.Entry{Kind: store.Kind(x.Kind), Key: x.Key}] = true
	}
	ticks := p.ticks()
	for _, x := range o.entries {
		e := store.Entry{Kind: store.Kind(x.Kind), Key: x.Key}
		if !wanted[e] {
			p.m.hold(e, from.ID.ID, x.Version)
			continue
		}
		// It says it lacks it, whatever we thought. If we thought it held
		// it, it lost its copy (a scrubbed corruption, a replaced disk)
		// or holds an older version: giving it back makes no copy beyond
		// those that were, so Carbonite's patience does not apply.
		lost := false
		if h := p.m.holders[e]; h != nil {
			_, lost = h[from.ID.ID]
			delete(h, from.ID.ID)
		}
		p.checkDeficit(e)
		if !lost && !p.mayCopy(e, from.ID.ID) {
			continue
		}
		data, err := p.st.Get(e.Kind, e.Key)
		if err != nil {
			continue
		}
		exp, err := p.st.Lease(e.Kind, e.Key)
		if err != nil || exp <= ticks {
			continue
		}
		p.stats.Pushes++
		p.stats.MaintenanceBytes += uint64(p.send(from, wire.TypePastPush, wire.PastPush{From: p.self, Kind: x.Kind, Key: x.Key, Data: data, Remaining: int64(exp - ticks)}))
		p.m.hold(e, from.ID.ID, x.Version)
	}
}

// onPush stores a copy with the lease it has left.
func (p *Past) onPush(from NodeHandle, x wire.PastPush) {
	kind, key := store.Kind(x.Kind), store.Key(x.Key)
	if x.Remaining <= 0 || env.Duration(x.Remaining) > p.cfg.MaxLease {
		p.stats.Refused[RefusedLease]++
		return
	}
	bad := func(reason int, err error) {
		p.stats.Refused[reason]++
		p.stats.BadObjects++
		p.env.Log.Warn("past: bad push", "key", key.Short(), "from", from.ID.ID.Short(), "err", err)
	}
	expiry := p.ticks().Add(env.Duration(x.Remaining))
	if kind == store.KindSet {
		rec, reason, err := p.verifySet(key, x.Data, false)
		if err != nil {
			bad(reason, err)
			return
		}
		p.mergeSet(key, rec, expiry, func(_ uint64, _ int, err error) {
			if err == nil {
				p.stored()
			}
		})
		return
	}
	sl, reason, err := p.verifyObject(kind, key, x.Data, false)
	if err != nil {
		bad(reason, err)
		return
	}
	if kind == store.KindImmutable {
		p.st.PutAsync(kind, key, x.Data, expiry, func(err error) {
			if err != nil {
				p.storeError("put pushed", err)
				return
			}
			p.stored()
		})
		return
	}
	p.mergeMutable(key, sl, expiry, func(_ uint64, _ int, err error) {
		if err == nil {
			p.stored()
		}
	})
}
