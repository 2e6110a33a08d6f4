package past

import (
	"errors"
	"fmt"
	"slices"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// Receipt is one replica's signed statement that it holds an object.
type Receipt struct {
	Node    NodeHandle
	Version uint64
	Cert    []byte
	Sig     []byte
}

// InsertResult is what an accepted insert or renewal returns.
type InsertResult struct {
	Kind     store.Kind
	Key      store.Key
	Version  uint64    // mutable objects: the version the replicas hold
	Receipts []Receipt // from nodes among the k closest, a majority of k
}

type insertReq struct {
	msg      wire.PastStore
	version  uint64
	attempt  int
	receipts map[id.ID]Receipt
	// claimed is the replica set the root named in this attempt's
	// receipts. Each attempt starts afresh: a set named before a replica
	// failed would otherwise hold acceptance back for good.
	claimed  []NodeHandle
	refusals map[id.ID]string
	// here is why this node's own replica refused, kept as an error (a
	// remote refusal is only a string) so that a failed insert says, for
	// errors.Is, that this node's store was full or failing.
	here     error
	timer    env.Timer
	deadline env.Time
	done     func(InsertResult, error)
}

// Insert stores an immutable object for lease; its key is the SHA-256 of
// data. done runs once a majority of the replica set has receipted it, or
// with an error. Inserting an object that exists renews its lease. A
// failed insert (of any kind) that this node's own replica refused wraps
// that refusal's cause too, so a full local disk matches store.ErrFull.
func (p *Past) Insert(data []byte, lease env.Duration, done func(InsertResult, error)) store.Key {
	key := store.ImmutableKey(data)
	p.startInsert(store.KindImmutable, key, data, lease, false, 0, done)
	return key
}

// InsertMutable stores a signed mutable object for lease. Replicas refuse
// it if they hold a higher version.
func (p *Past) InsertMutable(m *Mutable, lease env.Duration, done func(InsertResult, error)) {
	key, err := m.Verify(p.ident.Verifier)
	if err != nil {
		p.env.Clock.AfterFunc(0, func() { done(InsertResult{}, err) })
		return
	}
	p.startInsert(store.KindMutable, key, m.Encode(), lease, false, m.Version, done)
}

// Renew extends the lease of an object the replicas already hold to
// lease from now. It fails if a majority does not hold it; re-insert it
// then.
func (p *Past) Renew(kind store.Kind, key store.Key, lease env.Duration, done func(InsertResult, error)) {
	p.startInsert(kind, key, nil, lease, true, 0, done)
}

func (p *Past) startInsert(kind store.Kind, key store.Key, data []byte, lease env.Duration, renew bool, version uint64, done func(InsertResult, error)) {
	p.stats.Inserts++
	fail := func(err error) {
		p.stats.InsertsFailed++
		p.env.Clock.AfterFunc(0, func() { done(InsertResult{}, err) })
	}
	switch {
	case len(data) > p.cfg.MaxObjectSize:
		fail(fmt.Errorf("%w: %d bytes, limit %d", ErrInput, len(data), p.cfg.MaxObjectSize))
		return
	case lease <= 0 || lease > p.cfg.MaxLease:
		fail(fmt.Errorf("%w: lease %v", ErrInput, lease))
		return
	case !pastKind(kind):
		fail(fmt.Errorf("%w: kind %d", ErrInput, kind))
		return
	}
	p.nextReq++
	r := &insertReq{
		msg: wire.PastStore{Req: p.nextReq, Origin: p.self, Kind: uint8(kind), Key: key,
			Data: data, Lease: int64(lease), Renew: renew, Fanout: true},
		version:  version,
		receipts: map[id.ID]Receipt{},
		refusals: map[id.ID]string{},
		deadline: p.env.Clock.Now().Add(p.cfg.InsertTimeout),
		done:     done,
	}
	p.inserts[r.msg.Req] = r
	p.sendInsert(r)
}

// sendInsert routes one attempt and arms its timer.
func (p *Past) sendInsert(r *insertReq) {
	r.attempt++
	r.claimed = nil
	p.route(r.msg.Key, wire.TypePastStore, r.msg)
	wait := p.cfg.InsertTimeout / env.Duration(p.cfg.InsertAttempts)
	if r.attempt >= p.cfg.InsertAttempts {
		wait = r.deadline.Sub(p.env.Clock.Now())
	}
	r.timer = p.env.Clock.AfterFunc(wait, func() {
		if p.inserts[r.msg.Req] != r {
			return
		}
		if r.attempt < p.cfg.InsertAttempts {
			p.sendInsert(r)
			return
		}
		p.finishInsert(r, fmt.Errorf("%w: insert %s: %d of %d receipts", ErrTimeout, store.Key(r.msg.Key).Short(), len(r.receipts), p.cfg.majority()))
	})
}

func (p *Past) finishInsert(r *insertReq, err error) {
	delete(p.inserts, r.msg.Req)
	if r.timer != nil {
		r.timer.Stop()
	}
	if err != nil {
		if r.here != nil {
			err = fmt.Errorf("%w (here: %w)", err, r.here)
		}
		p.stats.InsertsFailed++
		r.done(InsertResult{}, err)
		return
	}
	p.stats.InsertsOK++
	res := InsertResult{Kind: store.Kind(r.msg.Kind), Key: r.msg.Key, Version: r.version}
	for _, rc := range r.receipts {
		res.Receipts = append(res.Receipts, rc)
	}
	r.done(res, nil)
}

// onReceipt verifies a receipt and checks whether the insert is now
// accepted.
func (p *Past) onReceipt(m wire.PastReceipt) {
	r := p.inserts[m.Req]
	if r == nil || r.msg.Key != m.Key || r.msg.Kind != m.Kind || r.msg.Renew != m.Renew {
		return
	}
	pub, ok := p.verifyNode(m.Node.ID, m.Cert)
	body := wire.MustMarshal(wire.PastReceiptBody{Kind: m.Kind, Key: m.Key, Version: m.Version, Renew: m.Renew, Node: m.Node.ID.ID})
	if !ok || !pub.Verify(labelReceipt, body, m.Sig) {
		p.stats.BadReceipts++
		p.env.Log.Warn("past: bad receipt", "from", m.Node.ID.ID.Short(), "key", store.Key(m.Key).Short())
		return
	}
	if store.Kind(m.Kind) == store.KindMutable && !m.Renew && m.Version != r.version {
		// The replica holds another version: it is no receipt for ours.
		r.refusals[m.Node.ID.ID] = fmt.Sprintf("holds version %d", m.Version)
		p.checkRefusals(r)
		return
	}
	if m.Renew && r.version < m.Version {
		r.version = m.Version
	}
	r.receipts[m.Node.ID.ID] = Receipt{Node: m.Node, Version: m.Version, Cert: m.Cert, Sig: m.Sig}
	r.claimed = append(r.claimed, m.Replicas...)
	if p.accepted(r) {
		p.finishInsert(r, nil)
	}
}

// recheckInserts applies the acceptance rule again to the inserts
// waiting for receipts once node gone has left this node's leaf set: a
// replica that failed after the insert started no longer counts as one
// of the k closest, not even where the root named it, and the receipts
// already in may now be a majority.
func (p *Past) recheckInserts(gone NodeHandle) {
	reqs := make([]uint64, 0, len(p.inserts))
	for req := range p.inserts {
		reqs = append(reqs, req)
	}
	slices.Sort(reqs) // completions in a deterministic order
	for _, req := range reqs {
		r := p.inserts[req]
		if r == nil {
			continue
		}
		r.claimed = slices.DeleteFunc(r.claimed, func(h NodeHandle) bool { return h.ID == gone.ID })
		if len(r.receipts) > 0 && p.accepted(r) {
			p.finishInsert(r, nil)
		}
	}
}

// accepted applies the acceptance rule: receipts from a majority of k,
// each from a node that is among the k closest to the key of every node
// this node knows of.
func (p *Past) accepted(r *insertReq) bool {
	good, need, _ := p.tally(r)
	return good >= need
}

// tally counts the receipts that count, and how many are needed out of
// how many replicas this node believes there are.
func (p *Past) tally(r *insertReq) (good, need, size int) {
	known := append(p.ov.Leaf().Members(), p.self)
	known = append(known, p.ov.Table().All()...)
	known = append(known, r.claimed...)
	for _, rc := range r.receipts {
		known = append(known, rc.Node)
	}
	k := p.cfg.Replicas
	need = p.cfg.majority()
	set := closest(store.Key(r.msg.Key).Ring(), known, k)
	if len(set) < k {
		// A ring smaller than k: a majority of all of it.
		need = len(set)/2 + 1
	}
	for _, h := range set {
		if _, ok := r.receipts[h.ID.ID]; ok {
			good++
		}
	}
	return good, need, len(set)
}

func (p *Past) onRefuse(from NodeHandle, m wire.PastRefuse) {
	r := p.inserts[m.Req]
	if r == nil || r.msg.Key != m.Key || from.ID != m.Node.ID {
		return
	}
	r.refusals[from.ID.ID] = m.Reason
	p.checkRefusals(r)
}

// checkRefusals fails an insert once enough replicas refused that a
// majority of receipts can no longer come.
func (p *Past) checkRefusals(r *insertReq) {
	_, need, size := p.tally(r)
	if len(r.refusals) < size-need+1 {
		return
	}
	var reason string
	for _, x := range r.refusals {
		if reason == "" || x < reason {
			reason = x // deterministic pick
		}
	}
	p.finishInsert(r, fmt.Errorf("%w: %s by %d replicas: %s", ErrRefused, store.Key(r.msg.Key).Short(), len(r.refusals), reason))
}

// onRootStore runs at the key's root: send the request on to the rest of
// the replica set, and store it here.
func (p *Past) onRootStore(s wire.PastStore) {
	set := p.replicaSet(s.Key, p.cfg.Replicas)
	fwd := s
	fwd.Fanout = false
	for _, h := range set {
		if h.ID != p.self.ID {
			p.send(h, wire.TypePastStore, fwd)
		}
	}
	p.onReplicaStore(fwd, set)
}

// onReplicaStore verifies and stores an object (or renews its lease) and
// receipts it once durable. set is the root's replica set, nil elsewhere.
func (p *Past) onReplicaStore(s wire.PastStore, set []NodeHandle) {
	kind, key := store.Kind(s.Kind), store.Key(s.Key)
	refuse := func(reason int, err error) {
		p.stats.Refused[reason]++
		if reason != RefusedStore { // storeError has logged it
			p.env.Log.Info("past: refused", "key", key.Short(), "from", s.Origin.ID.ID.Short(), "err", err)
		}
		if r := p.inserts[s.Req]; r != nil && s.Origin.ID == p.self.ID && r.msg.Key == s.Key {
			r.here = err
		}
		p.send(s.Origin, wire.TypePastRefuse, wire.PastRefuse{Req: s.Req, Key: s.Key, Node: p.self, Reason: err.Error()})
	}
	if env.Duration(s.Lease) <= 0 || env.Duration(s.Lease) > p.cfg.MaxLease {
		refuse(RefusedLease, fmt.Errorf("%w: lease %d", ErrRefused, s.Lease))
		return
	}
	expiry := p.ticks().Add(env.Duration(s.Lease))
	receipt := func(version uint64) func(error) {
		return func(err error) {
			if err != nil {
				p.storeError("put", err)
				refuse(RefusedStore, fmt.Errorf("%w: store: %w", ErrRefused, err))
				return
			}
			p.stored()
			p.sendReceipt(s, version, set)
		}
	}
	if s.Renew {
		p.renewLocal(kind, key, expiry, func(version uint64, err error) {
			if errors.Is(err, store.ErrNotFound) {
				refuse(RefusedMissing, fmt.Errorf("%w: renew: %s not held", ErrRefused, key.Short()))
				return
			}
			receipt(version)(err)
		})
		return
	}
	if kind == store.KindSet {
		rec, reason, err := p.verifySet(key, s.Data, true)
		if err != nil {
			refuse(reason, err)
			return
		}
		if adm, ok := p.sets.(Admitter); ok && len(rec.Members) == 1 {
			if err := adm.Admit(key, rec.Members[0]); err != nil {
				refuse(RefusedRate, fmt.Errorf("%w: %w", ErrRefused, err))
				return
			}
		}
		p.mergeSet(key, rec, expiry, func(version uint64, reason int, err error) {
			if err != nil {
				refuse(reason, err)
				return
			}
			receipt(version)(nil)
		})
		return
	}
	sl, reason, err := p.verifyObject(kind, key, s.Data, true)
	if err != nil {
		refuse(reason, err)
		return
	}
	if kind == store.KindImmutable {
		p.st.PutAsync(kind, key, s.Data, expiry, receipt(0))
		return
	}
	p.mergeMutable(key, sl, expiry, func(version uint64, reason int, err error) {
		if err != nil {
			refuse(reason, err)
			return
		}
		receipt(version)(nil)
	})
}

// renewLocal extends a held object's lease; done gets the version held.
func (p *Past) renewLocal(kind store.Kind, key store.Key, expiry env.Time, done func(uint64, error)) {
	var version uint64
	if kind != store.KindImmutable {
		b, err := p.st.Get(kind, key)
		if err != nil {
			done(0, err)
			return
		}
		version, err = p.heldVersion(kind, b)
		if err != nil {
			done(0, err)
			return
		}
	} else if ok, err := p.st.Has(kind, key); err != nil || !ok {
		done(0, store.ErrNotFound)
		return
	}
	p.st.ExtendLeaseAsync(kind, key, expiry, func(err error) { done(version, err) })
}

// mergeMutable folds verified objects into the held slot, one write per
// key at a time; done gets the version now held once it is durable.
func (p *Past) mergeMutable(key store.Key, in slot, expiry env.Time, done func(version uint64, reason int, err error)) {
	e := store.Entry{Kind: store.KindMutable, Key: key}
	p.serial(e, func(release func()) {
		var held slot
		if b, err := p.st.Get(e.Kind, key); err == nil {
			held, _ = decodeSlot(b) // verified when stored; a bad one is replaced
		}
		out, changed := held, false
		var rollback error
		for _, m := range in {
			var c bool
			var err error
			out, c, err = out.merge(m, p.cfg.MaxForks)
			changed = changed || c
			if err != nil {
				rollback = err
			}
		}
		if rollback != nil && !changed {
			release()
			done(0, RefusedRollback, rollback)
			return
		}
		if len(out) > 1 && changed {
			p.stats.Forks++
			p.env.Log.Warn("past: fork", "key", key.Short(), "version", out.version(), "copies", len(out))
		}
		finish := func(err error) {
			release()
			if err != nil {
				p.storeError("put mutable", err)
				done(0, RefusedStore, fmt.Errorf("%w: store: %w", ErrRefused, err))
				return
			}
			done(out.version(), 0, nil)
		}
		if changed {
			p.st.PutAsync(e.Kind, key, encodeSlot(out), expiry, finish)
		} else {
			p.st.ExtendLeaseAsync(e.Kind, key, expiry, finish)
		}
	})
}

func (p *Past) sendReceipt(s wire.PastStore, version uint64, set []NodeHandle) {
	body := wire.MustMarshal(wire.PastReceiptBody{Kind: s.Kind, Key: s.Key, Version: version, Renew: s.Renew, Node: p.self.ID.ID})
	p.stats.Receipts++
	p.send(s.Origin, wire.TypePastReceipt, wire.PastReceipt{
		Req: s.Req, Kind: s.Kind, Key: s.Key, Version: version, Renew: s.Renew, Node: p.self,
		Cert: p.ident.Cert.Bytes(), Sig: p.ident.Key.Sign(labelReceipt, body), Replicas: set,
	})
}

// heldVersion is the version a holder reports for stored bytes: a mutable
// object's version, a set's digest, 0 for an immutable object.
func (p *Past) heldVersion(kind store.Kind, b []byte) (uint64, error) {
	switch kind {
	case store.KindMutable:
		sl, err := decodeSlot(b)
		if err != nil {
			return 0, err
		}
		return sl.version(), nil
	case store.KindSet:
		r, err := decodeSetRecord(b)
		if err != nil {
			return 0, err
		}
		return r.digest(), nil
	}
	return 0, nil
}
