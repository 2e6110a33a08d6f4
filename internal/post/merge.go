package post

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"

	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// Merge after partition (DESIGN.md section 6).
//
// A folder's log forks when its owner's node wrote on both sides of a
// partition, or when a second node took the mailbox over from an old
// replica. Every entry names its predecessor, so two heads' branches meet
// at their fork point: the latest entry both reach. The merged folder is a
// function of three states, the folder at the fork point (base) and at each
// head, and it does not depend on which side merges:
//
//   - a message is kept if either head holds it: an expunge only one side
//     made after the fork is cancelled (so a message moved on one side is
//     in both folders); one both sides saw, an expunge before the fork
//     included, stays. No message either side holds is lost.
//   - flags: the base's, with every flag either side changed since the fork
//     changed that way. Per flag the two sides cannot disagree (each either
//     changed it from the base or not), so there is no conflict to settle.
//     A message with no base (appended after the fork) takes the union.
//   - UIDs are kept. The same message appended on both sides (one
//     notification delivered by each) is kept once, under the lower UID.
//     Where the sides gave one UID to different messages, the lowest
//     message id keeps it and the others get new UIDs above both sides'
//     UIDNEXT, in order of (UID, id). UIDNEXT ends above both sides'.
//
// The merge is one entry on top of the merging node's head: the changes
// that turn its state into the merged one, then an OpMerged naming the
// other head, so that a later fork from that head finds its fork point
// there and not at the older one. If one head is an ancestor of the other
// (a replica that lags, a node that restarted from an old head), nothing is
// merged: the newer head is the folder. If no fork point can be found (the
// entries before the last checkpoints have expired), the base is taken as
// empty: messages still merge as above, flags by union.

// folderState is a folder's messages (by UID) and next UID at one point
// of its log.
type folderState struct {
	msgs    map[uint32]*Message
	nextUID uint32
}

func newFolderState() folderState { return folderState{msgs: map[uint32]*Message{}, nextUID: 1} }

// replayState is the state a chain (oldest first, from a snapshot or the
// first entry) leads to.
func replayState(chain []entry) folderState {
	s := newFolderState()
	for _, e := range chain {
		for _, op := range e.Ops {
			s.apply(op)
		}
	}
	return s
}

// apply is Folder.apply without the account's bookkeeping.
func (s *folderState) apply(op Op) {
	switch op.Kind {
	case OpAppend:
		if op.Msg != nil {
			m := *op.Msg
			s.msgs[m.UID] = &m
			s.nextUID = max(s.nextUID, m.UID+1)
		}
	case OpFlags:
		if m, ok := s.msgs[op.UID]; ok {
			c := *m
			c.Flags = editFlags(m.Flags, op.Flags, op.Add)
			s.msgs[op.UID] = &c
		}
	case OpExpunge:
		delete(s.msgs, op.UID)
	case OpSnapshot:
		if op.Snap != nil {
			s.msgs = map[uint32]*Message{}
			for _, m := range op.Snap.Msgs {
				if m != nil {
					c := *m
					s.msgs[c.UID] = &c
				}
			}
			s.nextUID = max(op.Snap.NextUID, 1)
		}
	case OpUIDNext:
		s.nextUID = max(s.nextUID, op.UID)
	}
}

// uidsByID lists each message id's UIDs, sorted.
func uidsByID(s folderState) map[[16]byte][]uint32 {
	out := map[[16]byte][]uint32{}
	for uid, m := range s.msgs {
		out[m.ID] = append(out[m.ID], uid)
	}
	for _, u := range out {
		slices.Sort(u)
	}
	return out
}

// mergeStates merges two branches that forked at base (see the top of
// this file). It is symmetric in ours and theirs.
func mergeStates(base, ours, theirs folderState) folderState {
	byO, byT := uidsByID(ours), uidsByID(theirs)
	ids := make([][16]byte, 0, len(byO)+len(byT))
	for id := range byO {
		ids = append(ids, id)
	}
	for id := range byT {
		if _, ok := byO[id]; !ok {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return bytes.Compare(ids[i][:], ids[j][:]) < 0 })
	inBase := func(id [16]byte, uid uint32) *Message {
		if m := base.msgs[uid]; m != nil && m.ID == id {
			return m
		}
		return nil
	}
	var kept []*Message
	for _, id := range ids {
		uo, ut := byO[id], byT[id]
		var newO, newT []uint32
		for _, uid := range uo {
			switch {
			case slices.Contains(ut, uid):
				kept = append(kept, sameMessage(ours.msgs[uid], theirs.msgs[uid], inBase(id, uid)))
			case inBase(id, uid) != nil:
				kept = append(kept, ours.msgs[uid]) // theirs expunged it after the fork
			default:
				newO = append(newO, uid)
			}
		}
		for _, uid := range ut {
			switch {
			case slices.Contains(uo, uid):
			case inBase(id, uid) != nil:
				kept = append(kept, theirs.msgs[uid]) // ours expunged it after the fork
			default:
				newT = append(newT, uid)
			}
		}
		// Appended after the fork on both sides under different UIDs:
		// one message (a notification each side delivered), kept once.
		n := min(len(newO), len(newT))
		for i := range n {
			o, t := ours.msgs[newO[i]], theirs.msgs[newT[i]]
			m := *o
			if t.UID < o.UID {
				m = *t
			}
			m.Flags = mergeFlags(nil, o.Flags, t.Flags)
			kept = append(kept, &m)
		}
		for _, uid := range newO[n:] {
			kept = append(kept, ours.msgs[uid])
		}
		for _, uid := range newT[n:] {
			kept = append(kept, theirs.msgs[uid])
		}
	}
	sort.Slice(kept, func(i, j int) bool {
		if kept[i].UID != kept[j].UID {
			return kept[i].UID < kept[j].UID
		}
		return bytes.Compare(kept[i].ID[:], kept[j].ID[:]) < 0
	})
	out := folderState{msgs: map[uint32]*Message{}, nextUID: max(ours.nextUID, theirs.nextUID, 1)}
	var moved []*Message
	for _, m := range kept {
		out.nextUID = max(out.nextUID, m.UID+1)
		if _, taken := out.msgs[m.UID]; taken {
			moved = append(moved, m)
			continue
		}
		c := *m
		out.msgs[c.UID] = &c
	}
	for _, m := range moved {
		c := *m
		c.UID = out.nextUID
		out.nextUID++
		out.msgs[c.UID] = &c
	}
	return out
}

// sameMessage merges the two sides' copies of one message (same id, same
// UID): flags three-way against the base; of two internal dates (each
// side's delivery stamps its own), the earlier.
func sameMessage(o, t, base *Message) *Message {
	m := *o
	if t.Date < o.Date || (t.Date == o.Date && bytes.Compare(messageBytes(t), messageBytes(o)) < 0) {
		m = *t
	}
	var bf []string
	if base != nil {
		bf = base.Flags
	}
	m.Flags = mergeFlags(bf, o.Flags, t.Flags)
	return &m
}

// mergeFlags: each flag is the base's unless a side changed it, then as
// that side has it (both sides that changed it agree).
func mergeFlags(base, o, t []string) []string {
	var all []string
	for _, l := range [][]string{base, o, t} {
		for _, f := range l {
			if !slices.Contains(all, f) {
				all = append(all, f)
			}
		}
	}
	var out []string
	for _, f := range all {
		b, inO, inT := slices.Contains(base, f), slices.Contains(o, f), slices.Contains(t, f)
		if (inO != b && inO) || (inO == b && inT) {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// messageBytes encodes a message without its flags: two copies with equal
// bytes are one message at one UID.
func messageBytes(m *Message) []byte {
	c := *m
	c.Flags = nil
	return wire.MustMarshal(&c)
}

// mergeOps lists the changes that turn cur into merged, then records that
// the head merged was folded in.
func mergeOps(cur, merged folderState, mergedHead object.Key) []Op {
	var ops []Op
	for _, uid := range sortedUIDs(cur.msgs) {
		if n := merged.msgs[uid]; n == nil || !bytes.Equal(messageBytes(n), messageBytes(cur.msgs[uid])) {
			ops = append(ops, Op{Kind: OpExpunge, UID: uid})
		}
	}
	next := cur.nextUID
	for _, uid := range sortedUIDs(merged.msgs) {
		n := merged.msgs[uid]
		m := cur.msgs[uid]
		if m == nil || !bytes.Equal(messageBytes(n), messageBytes(m)) {
			c := *n
			ops = append(ops, Op{Kind: OpAppend, UID: uid, Msg: &c})
			next = max(next, uid+1)
			continue
		}
		var add, del []string
		for _, f := range n.Flags {
			if !slices.Contains(m.Flags, f) {
				add = append(add, f)
			}
		}
		for _, f := range m.Flags {
			if !slices.Contains(n.Flags, f) {
				del = append(del, f)
			}
		}
		if len(add) > 0 {
			ops = append(ops, Op{Kind: OpFlags, UID: uid, Flags: add, Add: true})
		}
		if len(del) > 0 {
			ops = append(ops, Op{Kind: OpFlags, UID: uid, Flags: del})
		}
	}
	if merged.nextUID > next {
		ops = append(ops, Op{Kind: OpUIDNext, UID: merged.nextUID})
	}
	return append(ops, Op{Kind: OpMerged, Flags: []string{hex.EncodeToString(mergedHead[:])}})
}

func sortedUIDs(m map[uint32]*Message) []uint32 {
	out := make([]uint32, 0, len(m))
	for uid := range m {
		out = append(out, uid)
	}
	slices.Sort(out)
	return out
}

// mergedHeads returns the heads an entry's OpMerged names.
func mergedHeads(e entry) []object.Key {
	var out []object.Key
	for _, op := range e.Ops {
		if op.Kind != OpMerged {
			continue
		}
		for _, s := range op.Flags {
			if b, err := hex.DecodeString(s); err == nil && len(b) == len(object.Key{}) {
				out = append(out, object.Key(b))
			}
		}
	}
	return out
}

// maxForkWalk bounds how far back the two branches are walked looking for
// their fork point.
const maxForkWalk = 4096

// entryReader reads a folder's log entries for a merge, each once.
type entryReader struct {
	f     *Folder
	cache map[object.Key]entry
}

func (r *entryReader) read(key object.Key, done func(entry, error)) {
	if e, ok := r.cache[key]; ok {
		done(e, nil)
		return
	}
	f := r.f
	f.a.x.past.Lookup(key, func(b []byte, err error) {
		if err != nil {
			done(entry{}, fmt.Errorf("post: folder %s: entry %s: %w", f.info.Name, key.Short(), err))
			return
		}
		pt, err := OpenEntryAny(f.a.logKeys, b)
		if err != nil {
			done(entry{}, err)
			return
		}
		var e entry
		if err := wire.Unmarshal(pt, &e); err != nil {
			done(entry{}, fmt.Errorf("%w: log entry: %w", ErrTampered, err))
			return
		}
		r.cache[key] = e
		done(e, nil)
	})
}

// chain reads the log back from key to a snapshot or the first entry:
// entries and their keys, oldest first.
func (r *entryReader) chain(key object.Key, done func([]entry, []object.Key, error)) {
	var es []entry
	var ks []object.Key
	var step func(object.Key)
	step = func(k object.Key) {
		r.read(k, func(e entry, err error) {
			if err != nil {
				done(nil, nil, err)
				return
			}
			es, ks = append(es, e), append(ks, k)
			if e.Prev == ([32]byte{}) || (len(e.Ops) > 0 && e.Ops[0].Kind == OpSnapshot) || e.Seq <= 1 {
				// A checkpoint keeps most of its snapshot in parts: without
				// them the branch would seem to have lost those messages.
				r.f.readParts(&es[len(es)-1], false, func(err error) {
					if err != nil {
						done(nil, nil, err)
						return
					}
					slices.Reverse(es)
					slices.Reverse(ks)
					done(es, ks, nil)
				})
				return
			}
			step(e.Prev)
		})
	}
	step(key)
}

// forkPoint finds the latest entry both heads' logs reach (a merge entry
// reaches the heads it names), walking back from whichever side is at the
// higher sequence number. found is false if the walks end (first entry,
// an entry that cannot be read, maxForkWalk) without meeting.
func (r *entryReader) forkPoint(a, b headData, done func(key object.Key, found bool)) {
	type side struct {
		key   object.Key
		seq   uint64
		live  bool
		reach map[object.Key]bool
	}
	sa := &side{key: a.Last, seq: a.Seq, live: true, reach: map[object.Key]bool{a.Last: true}}
	sb := &side{key: b.Last, seq: b.Seq, live: true, reach: map[object.Key]bool{b.Last: true}}
	if a.Last == b.Last {
		done(a.Last, true)
		return
	}
	steps := 0
	var advance func()
	advance = func() {
		s, o := sa, sb
		if !sa.live || (sb.live && sb.seq > sa.seq) {
			s, o = sb, sa
		}
		if !s.live || steps >= maxForkWalk {
			done(object.Key{}, false)
			return
		}
		steps++
		r.read(s.key, func(e entry, err error) {
			reached := func(k object.Key) bool {
				s.reach[k] = true
				if o.reach[k] {
					done(k, true)
					return true
				}
				return false
			}
			if err != nil {
				s.live = false
				advance()
				return
			}
			for _, k := range mergedHeads(e) {
				if reached(k) {
					return
				}
			}
			if e.Prev == ([32]byte{}) || e.Seq <= 1 {
				s.live = false
				advance()
				return
			}
			s.key, s.seq = e.Prev, e.Seq-1
			if reached(s.key) {
				return
			}
			advance()
		})
	}
	advance()
}

// mergeFork folds the other heads of a fork into this folder, one after
// the other (see the top of this file).
func (f *Folder) mergeFork(others []headData, done func(error)) {
	if len(others) == 0 {
		done(nil)
		return
	}
	h := others[0]
	next := func(err error) {
		if err != nil {
			done(err)
			return
		}
		f.mergeFork(others[1:], done)
	}
	if h.Last == f.head {
		next(nil)
		return
	}
	r := &entryReader{f: f, cache: map[object.Key]entry{}}
	ours := headData{Last: f.head, Seq: f.seq}
	r.forkPoint(ours, h, func(base object.Key, found bool) {
		switch {
		case found && base == h.Last:
			next(nil) // theirs is behind ours: nothing to merge
		case found && base == ours.Last:
			f.fastForward(r, h, next)
		default:
			r.chain(h.Last, func(theirs []entry, _ []object.Key, err error) {
				if l, ok := f.localHead(); err != nil && (!ok || l.Last != h.Last) {
					// A network head whose branch cannot be read (its
					// entries expired or lost) cannot be merged; this
					// node's own head, which must not be dropped, is
					// never skipped: the load fails and is retried.
					f.a.x.env.Log.Warn("post: a forked head cannot be read; keeping ours", "folder", f.info.Name, "err", err)
					next(nil)
					return
				}
				if err != nil {
					next(err)
					return
				}
				merge := func(b folderState) {
					cur := folderState{msgs: map[uint32]*Message{}, nextUID: f.nextUID}
					for uid, m := range f.msgs {
						cur.msgs[uid] = m
					}
					merged := mergeStates(b, cur, replayState(theirs))
					f.writeMerge(mergeOps(cur, merged, h.Last), h.Seq, next)
				}
				if !found {
					f.a.x.env.Log.Warn("post: fork point not found; merging without a base", "folder", f.info.Name)
					merge(newFolderState())
					return
				}
				r.chain(base, func(es []entry, _ []object.Key, err error) {
					if err != nil {
						next(err)
						return
					}
					merge(replayState(es))
				})
			})
		}
	})
}

// fastForward makes the folder h, whose log contains this folder's head.
func (f *Folder) fastForward(r *entryReader, h headData, done func(error)) {
	r.chain(h.Last, func(es []entry, keys []object.Key, err error) {
		if err != nil {
			done(err)
			return
		}
		f.clear()
		f.nextUID = 1
		for _, e := range es {
			for _, op := range e.Ops {
				f.apply(op)
			}
		}
		f.seq, f.head, f.entries, f.sinceSnap = h.Seq, h.Last, keys, uint64(len(keys))
		if err := f.a.x.local.SetMeta(f.localName(), wire.MustMarshal(h)); err != nil {
			done(err)
			return
		}
		for _, w := range f.watchers {
			w()
		}
		done(nil)
	})
}

// writeMerge writes a merge entry on top of this folder's head, above
// the merged head's sequence number so that the new head wins over both.
// It holds the folder's queue while it writes.
func (f *Folder) writeMerge(ops []Op, theirSeq uint64, done func(error)) {
	x := f.a.x
	wasFlushing := f.flushing
	f.flushing = true
	finish := func(err error) {
		f.flushing = wasFlushing
		done(err)
		if !wasFlushing {
			f.flush()
		}
	}
	e := entry{Prev: f.head, Seq: max(f.seq, theirSeq) + 1, Ops: ops}
	sealed := SealEntry(randReader{x.env.Rand}, f.a.logKeys[0], wire.MustMarshal(e))
	store(x.past, sealed, x.cfg.MailLease, func(err error) {
		if err != nil {
			finish(fmt.Errorf("post: folder %s: merge entry: %w", f.info.Name, err))
			return
		}
		key := sealedKey(sealed)
		f.a.archive(object.KindImmutable, key, sealed)
		h := wire.MustMarshal(headData{Last: key, Seq: e.Seq})
		if err := x.local.SetMeta(f.localName(), h); err != nil {
			finish(fmt.Errorf("post: folder %s: local head: %w", f.info.Name, err))
			return
		}
		m, err := past.SignMutable(f.a.keys, f.a.cert, f.headName(), e.Seq, h)
		if err != nil {
			finish(err)
			return
		}
		x.past.InsertMutable(m, x.cfg.MailLease, func(_ past.InsertResult, err error) {
			if err != nil {
				finish(fmt.Errorf("post: folder %s: merged head: %w", f.info.Name, err))
				return
			}
			f.a.archiveMutable(m)
			x.stats.Entries++
			x.stats.ForksMerged++
			f.seq, f.head = e.Seq, key
			f.entries = append(f.entries, key)
			f.sinceSnap++
			for _, op := range ops {
				f.apply(op)
			}
			for _, w := range f.watchers {
				w()
			}
			finish(nil)
		})
	})
}

// HeadKey is where the folder's head is stored: the PAST key of the
// mutable object that names its latest log entry.
func (f *Folder) HeadKey() object.Key { return past.MutableKey(f.a.cert.UserID, f.headName()) }
