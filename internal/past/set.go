package past

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// SetPolicy decides what may enter a set (KindSet): PAST stores and
// merges sets but knows nothing of what their members mean. POST's
// pending notifications are sets: anyone may add a member the sending node
// signed, and only the recipient may release one.
type SetPolicy interface {
	// CheckMember verifies a member offered for the set at key.
	CheckMember(set store.Key, member []byte) error
	// CheckRelease verifies proof that member may leave the set at key.
	CheckRelease(set store.Key, member store.Key, proof []byte) error
}

// Admitter is an optional part of a SetPolicy: it is asked before a new
// member is added by an insert (not when replicas merge what they already
// hold), and may refuse, to stop floods.
type Admitter interface {
	Admit(set store.Key, member []byte) error
}

// ErrSetFull refuses a member beyond Config.MaxSetMembers: a queue cap.
var ErrSetFull = errors.New("past: set full")

// SetOp is what an insert into a set carries: a member to add, or the
// release of one.
type SetOp struct {
	_       struct{} `cbor:",toarray"`
	Add     []byte
	Release [32]byte
	Proof   []byte
}

// setRecord is what a holder stores under a set key: the members (sorted
// by their key, the SHA-256 of their bytes) and the tombstones of released
// ones, which keep merges from bringing them back.
type setRecord struct {
	_       struct{} `cbor:",toarray"`
	Members [][]byte
	Tombs   []tomb
}

type tomb struct {
	_      struct{} `cbor:",toarray"`
	Member [32]byte
	Proof  []byte
}

// MemberKey is a set member's id.
func MemberKey(member []byte) store.Key { return store.ImmutableKey(member) }

func decodeSetRecord(b []byte) (*setRecord, error) {
	var r setRecord
	if err := wire.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: set: %w", ErrBadObject, err)
	}
	return &r, nil
}

func (r *setRecord) encode() []byte { return wire.MustMarshal(r) }

// digest identifies the record's content: the "version" maintenance
// compares. Zero for an empty set.
func (r *setRecord) digest() uint64 {
	if r == nil || len(r.Members)+len(r.Tombs) == 0 {
		return 0
	}
	h := sha256.New()
	for _, m := range r.Members {
		k := MemberKey(m)
		h.Write(k[:])
	}
	h.Write([]byte{0})
	for _, t := range r.Tombs {
		h.Write(t.Member[:])
	}
	return binary.BigEndian.Uint64(h.Sum(nil)) | 1
}

// merge returns the union of r and o, minus released members, bounded:
// members beyond maxMembers are refused (ErrSetFull), tombstones beyond
// 2 x maxMembers dropped (a member that comes back is deduplicated by the
// recipient).
func (r *setRecord) merge(o *setRecord, maxMembers int) (*setRecord, bool, error) {
	tombs := map[store.Key]tomb{}
	for _, src := range []*setRecord{r, o} {
		if src == nil {
			continue
		}
		for _, t := range src.Tombs {
			if _, ok := tombs[t.Member]; !ok {
				tombs[t.Member] = t
			}
		}
	}
	members := map[store.Key][]byte{}
	for _, src := range []*setRecord{r, o} {
		if src == nil {
			continue
		}
		for _, m := range src.Members {
			k := MemberKey(m)
			if _, dead := tombs[k]; !dead {
				members[k] = m
			}
		}
	}
	out := &setRecord{}
	keys := make([]store.Key, 0, len(members))
	for k := range members {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return bytes.Compare(keys[i][:], keys[j][:]) < 0 })
	var err error
	if len(keys) > maxMembers {
		err = fmt.Errorf("%w: %d members, cap %d", ErrSetFull, len(keys), maxMembers)
		// Keep what was held; refuse only the excess from o.
		keys = keys[:0]
		if r != nil {
			for _, m := range r.Members {
				if _, dead := tombs[MemberKey(m)]; !dead {
					keys = append(keys, MemberKey(m))
				}
			}
		}
	}
	for _, k := range keys {
		out.Members = append(out.Members, members[k])
	}
	tk := make([]store.Key, 0, len(tombs))
	for k := range tombs {
		tk = append(tk, k)
	}
	sort.Slice(tk, func(i, j int) bool { return bytes.Compare(tk[i][:], tk[j][:]) < 0 })
	if len(tk) > 2*maxMembers {
		tk = tk[len(tk)-2*maxMembers:]
	}
	for _, k := range tk {
		out.Tombs = append(out.Tombs, tombs[k])
	}
	return out, out.digest() != r.digest(), err
}

// checkSet verifies every member and tombstone of a record with the
// policy.
func (p *Past) checkSet(key store.Key, r *setRecord) (int, error) {
	if p.sets == nil {
		return RefusedSignature, fmt.Errorf("%w: no set policy on this node", ErrRefused)
	}
	for _, m := range r.Members {
		if err := p.sets.CheckMember(key, m); err != nil {
			return RefusedSignature, fmt.Errorf("%w: set member: %w", ErrBadObject, err)
		}
	}
	for _, t := range r.Tombs {
		if err := p.sets.CheckRelease(key, t.Member, t.Proof); err != nil {
			return RefusedSignature, fmt.Errorf("%w: set release: %w", ErrBadObject, err)
		}
	}
	return 0, nil
}

// verifySet decodes and verifies set data: a SetOp (single, as inserted)
// or a whole record (pushed or read).
func (p *Past) verifySet(key store.Key, data []byte, single bool) (*setRecord, int, error) {
	if !single {
		r, err := decodeSetRecord(data)
		if err != nil {
			return nil, RefusedMalformed, err
		}
		reason, err := p.checkSet(key, r)
		return r, reason, err
	}
	var op SetOp
	if err := wire.Unmarshal(data, &op); err != nil {
		return nil, RefusedMalformed, fmt.Errorf("%w: set op: %w", ErrBadObject, err)
	}
	r := &setRecord{}
	switch {
	case len(op.Add) > 0 && len(op.Proof) == 0:
		r.Members = [][]byte{op.Add}
	case len(op.Add) == 0 && len(op.Proof) > 0:
		r.Tombs = []tomb{{Member: op.Release, Proof: op.Proof}}
	default:
		return nil, RefusedMalformed, fmt.Errorf("%w: set op adds and releases", ErrBadObject)
	}
	reason, err := p.checkSet(key, r)
	return r, reason, err
}

// SetPolicy installs the policy that checks set members; without one the
// node refuses set operations.
func (p *Past) SetPolicy(pol SetPolicy) { p.sets = pol }

// SetAdd adds member to the set at key (renewing the set's lease). done
// runs once a majority of the set's replicas hold it durably.
func (p *Past) SetAdd(key store.Key, member []byte, lease env.Duration, done func(InsertResult, error)) {
	p.startInsert(store.KindSet, key, wire.MustMarshal(SetOp{Add: member}), lease, false, 0, done)
}

// SetRelease removes member from the set at key, with the proof the policy
// asks for.
func (p *Past) SetRelease(key store.Key, member store.Key, proof []byte, lease env.Duration, done func(InsertResult, error)) {
	p.startInsert(store.KindSet, key, wire.MustMarshal(SetOp{Release: member, Proof: proof}), lease, false, 0, done)
}

// LookupSet reads a set from every replica it can reach and returns the
// union of their members, minus every released one.
func (p *Past) LookupSet(key store.Key, done func([][]byte, error)) {
	p.stats.Lookups++
	r := p.newLookup(store.KindSet, key)
	r.doneSet = done
	if b, err := p.st.Get(store.KindSet, key); err == nil {
		if rec, _, err := p.verifySet(key, b, false); err == nil {
			r.set, _, _ = r.set.merge(rec, p.cfg.MaxSetMembers)
			r.found = true
		}
	}
	r.asked[p.self.ID.ID] = true
	p.routeLookup(r)
}

// mergeSet folds a verified record into the held one, one write per key
// at a time; done gets the digest now held once it is durable.
func (p *Past) mergeSet(key store.Key, in *setRecord, expiry env.Time, done func(version uint64, reason int, err error)) {
	e := store.Entry{Kind: store.KindSet, Key: key}
	p.serial(e, func(release func()) {
		var held *setRecord
		if b, err := p.st.Get(e.Kind, key); err == nil {
			held, _ = decodeSetRecord(b)
		}
		out, changed, full := held.merge(in, p.cfg.MaxSetMembers)
		if full != nil && !changed {
			release()
			done(0, RefusedTooLarge, full)
			return
		}
		added := newMembers(held, out)
		finish := func(err error) {
			release()
			if err != nil {
				p.storeError("put set", err)
				done(0, RefusedStore, fmt.Errorf("%w: store: %w", ErrRefused, err))
				return
			}
			p.notifyWatchers(key, added)
			done(out.digest(), 0, nil)
		}
		if changed {
			p.st.PutAsync(e.Kind, key, out.encode(), expiry, finish)
		} else {
			p.st.ExtendLeaseAsync(e.Kind, key, expiry, finish)
		}
	})
}

func newMembers(old, cur *setRecord) [][]byte {
	seen := map[store.Key]bool{}
	if old != nil {
		for _, m := range old.Members {
			seen[MemberKey(m)] = true
		}
	}
	var out [][]byte
	for _, m := range cur.Members {
		if !seen[MemberKey(m)] {
			out = append(out, m)
		}
	}
	return out
}

// watcher is a node that asked to hear of new members of a set.
type watcher struct {
	h     NodeHandle
	until env.Time
}

// Watch asks the replicas of the set at key to push new members to this
// node for ttl; the upper layer hears them through OnSetMember. Repeat it
// well within ttl to keep watching (a node that goes away stops being
// told).
func (p *Past) Watch(key store.Key, ttl env.Duration) {
	p.route(key, wire.TypePastWatch, wire.PastWatch{Key: key, Watcher: p.self, TTL: int64(ttl), Fanout: true})
}

func (p *Past) onWatch(w wire.PastWatch) {
	ttl := min(env.Duration(w.TTL), 10*env.Minute)
	if ttl <= 0 || w.Watcher.ID.IsZero() {
		return
	}
	if w.Fanout {
		fwd := w
		fwd.Fanout = false
		for _, h := range p.replicaSet(w.Key, p.cfg.Replicas) {
			if h.ID != p.self.ID {
				p.send(h, wire.TypePastWatch, fwd)
			}
		}
	}
	ws := p.watchers[w.Key]
	now := p.env.Clock.Now()
	kept := ws[:0]
	for _, x := range ws {
		if x.until > now && x.h.ID != w.Watcher.ID {
			kept = append(kept, x)
		}
	}
	if len(kept) < 4 { // a user has few nodes; bound what a stranger can add
		kept = append(kept, watcher{h: w.Watcher, until: now.Add(ttl)})
	}
	p.watchers[w.Key] = kept
}

func (p *Past) notifyWatchers(key store.Key, members [][]byte) {
	if len(members) == 0 {
		return
	}
	now := p.env.Clock.Now()
	for _, w := range p.watchers[key] {
		if w.until <= now {
			continue
		}
		for _, m := range members {
			p.send(w.h, wire.TypePastNotify, wire.PastNotify{Key: key, Member: m})
		}
	}
}

func (p *Past) onNotify(from NodeHandle, n wire.PastNotify) {
	if p.OnSetMember == nil || p.sets == nil {
		return
	}
	if err := p.sets.CheckMember(n.Key, n.Member); err != nil {
		p.stats.BadObjects++
		p.env.Log.Warn("past: bad set member pushed", "from", from.ID.ID.Short(), "err", err)
		return
	}
	p.OnSetMember(n.Key, n.Member)
}
