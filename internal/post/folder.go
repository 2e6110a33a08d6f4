package post

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// DefaultFolders are created for every new user (IMAP SPECIAL-USE).
var DefaultFolders = []string{"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}

// Message is one message in a folder, as its log records it.
type Message struct {
	_     struct{} `cbor:",toarray"`
	UID   uint32
	ID    [16]byte // the notification's id; unique per message
	Body  BodyRef
	Date  int64    // internal date: the receiving node's wall clock, µs since 1970
	Flags []string // sorted
}

// OpKind says what a log entry's operation does. Append-only.
type OpKind uint8

// Folder operations.
const (
	OpAppend   OpKind = 1
	OpFlags    OpKind = 2
	OpExpunge  OpKind = 3
	OpSnapshot OpKind = 4 // the whole folder state: where a reader may stop walking back
	OpUIDNext  OpKind = 5 // UID: the folder's next UID is at least this (a merge carries the other branch's)
	OpMerged   OpKind = 6 // Flags: the hex keys of the heads a merge entry folded in (see merge.go)
)

// Op is one change to a folder.
type Op struct {
	_     struct{} `cbor:",toarray"`
	Kind  OpKind
	UID   uint32
	Msg   *Message
	Flags []string
	Add   bool
	Snap  *Snapshot
}

// Snapshot is a folder's state at a point of its log: the messages in
// the parts Chunks names (see snapshot.go), then those in Msgs. Once read,
// the parts' messages are put in Msgs and Chunks is emptied.
type Snapshot struct {
	_       struct{} `cbor:",toarray"`
	NextUID uint32
	Msgs    []*Message
	Chunks  []SnapChunk

	resolved []SnapChunk // the parts whose messages are now at the start of Msgs
}

// entry is one log entry, sealed with the owner's log key and stored as
// an immutable object that names its predecessor.
type entry struct {
	_    struct{} `cbor:",toarray"`
	Prev [32]byte
	Seq  uint64
	Ops  []Op
}

// headData is what a folder's head (a mutable object signed by the owner,
// version = Seq) says: the latest entry.
type headData struct {
	_    struct{} `cbor:",toarray"`
	Last [32]byte
	Seq  uint64
}

type queued struct {
	op   Op
	done func(error)
}

// Folder is one folder of an account: an in-memory view of its log,
// rebuilt from the network on start; changes are appended to the log and
// acknowledged once the entry and the new head are stored.
type Folder struct {
	a         *Account
	info      folderInfo
	msgs      map[uint32]*Message
	nextUID   uint32 // next UID not yet in the log
	reserved  uint32 // next UID to hand out (ahead of nextUID while queued)
	seq       uint64
	head      object.Key
	sinceSnap uint64
	entries   []object.Key          // the log back to its last snapshot: what must stay leased
	walked    []object.Key          // keys visited by the current walk, newest first
	chunks    []chunkState          // the parts of the latest checkpoint's snapshot
	nextSnap  *plannedSnap          // a checkpoint whose parts are stored, for the next entry
	snapFail  uint64                // seq+1 at which storing a checkpoint's parts last failed
	cacheOnly bool                  // the current walk reads only the cache
	loading   bool                  // the state is being rebuilt: writes wait for replay
	fetched   map[object.Key][]byte // read from the network since the last replay, to cache
	cachedKey map[object.Key]bool   // what this folder has in the cache, as far as this run knows

	queue    []queued
	flushing bool
	reloads  int // consecutive reloads after refused heads
	timer    env.Timer
	watchers []func()
}

func (a *Account) newFolder(info folderInfo) *Folder {
	return &Folder{a: a, info: info, msgs: map[uint32]*Message{}, nextUID: 1, reserved: 1}
}

// Name is the folder's name.
func (f *Folder) Name() string { return f.info.Name }

// UIDValidity is the folder's UIDVALIDITY.
func (f *Folder) UIDValidity() uint32 { return f.info.UIDValidity }

// UIDNext is the UID the next message will get.
func (f *Folder) UIDNext() uint32 { return f.reserved }

// Messages lists the folder's messages in UID order (shared: do not
// modify).
func (f *Folder) Messages() []*Message {
	out := make([]*Message, 0, len(f.msgs))
	for _, m := range f.msgs {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

// Get returns the message with uid.
func (f *Folder) Get(uid uint32) (*Message, bool) {
	m, ok := f.msgs[uid]
	return m, ok
}

// Watch registers fn to run after every change to the folder (new mail
// delivered, flags set elsewhere): IDLE hangs off it.
func (f *Folder) Watch(fn func()) { f.watchers = append(f.watchers, fn) }

func (f *Folder) headName() string { return "head/" + hex.EncodeToString(f.info.ID[:]) }

// put sets the message at m.UID, keeping the account's usage in step.
func (f *Folder) put(m *Message) {
	if old := f.msgs[m.UID]; old != nil {
		f.a.count(old, -1)
	}
	f.msgs[m.UID] = m
	f.a.count(m, 1)
}

// clear forgets every message, keeping the account's usage in step.
func (f *Folder) clear() {
	for _, m := range f.msgs {
		f.a.count(m, -1)
	}
	f.msgs = map[uint32]*Message{}
}

// apply changes the in-memory state.
func (f *Folder) apply(op Op) {
	switch op.Kind {
	case OpAppend:
		if op.Msg == nil {
			return
		}
		m := *op.Msg
		f.put(&m)
		f.nextUID = max(f.nextUID, m.UID+1)
		f.reserved = max(f.reserved, f.nextUID)
		if deliveryFolder(f.info.Name) {
			f.a.delivered[m.ID] = true
		}
	case OpFlags:
		if m, ok := f.msgs[op.UID]; ok {
			c := *m
			c.Flags = editFlags(m.Flags, op.Flags, op.Add)
			f.msgs[op.UID] = &c // the same body: usage is unchanged
		}
	case OpExpunge:
		if m, ok := f.msgs[op.UID]; ok {
			f.a.count(m, -1)
			delete(f.msgs, op.UID)
		}
	case OpSnapshot:
		if op.Snap == nil || len(op.Snap.Chunks) > 0 {
			return // (parts not read: walk reads them first)
		}
		f.clear()
		for _, m := range op.Snap.Msgs {
			if m != nil {
				c := *m
				f.put(&c)
				if deliveryFolder(f.info.Name) {
					f.a.delivered[c.ID] = true
				}
			}
		}
		f.nextUID = max(op.Snap.NextUID, 1)
		f.reserved = max(f.reserved, f.nextUID)
		f.adoptChunks(op.Snap)
	case OpUIDNext:
		f.nextUID = max(f.nextUID, op.UID)
		f.reserved = max(f.reserved, f.nextUID)
	}
}

func editFlags(cur, change []string, add bool) []string {
	out := slices.Clone(cur)
	for _, fl := range change {
		i := slices.Index(out, fl)
		switch {
		case add && i < 0:
			out = append(out, fl)
		case !add && i >= 0:
			out = slices.Delete(out, i, i+1)
		}
	}
	sort.Strings(out)
	return out
}

func (f *Folder) snapshot() *Snapshot {
	return &Snapshot{NextUID: f.nextUID, Msgs: f.Messages()}
}

// enqueue adds a change to the next log entry; done runs once it is
// durable (or failed).
func (f *Folder) enqueue(op Op, done func(error)) {
	if f.a.retired {
		f.a.x.env.Clock.AfterFunc(0, func() { done(ErrNotWriter) })
		return
	}
	f.queue = append(f.queue, queued{op: op, done: done})
	if f.timer == nil && !f.flushing {
		f.timer = f.a.x.env.Clock.AfterFunc(f.a.x.cfg.FlushDelay, func() {
			f.timer = nil
			f.flush()
		})
	}
}

// flush writes the queued changes as one entry, then the head.
func (f *Folder) flush() {
	if f.flushing || f.loading || len(f.queue) == 0 {
		return
	}
	x := f.a.x
	if f.holdForCheckpoint() {
		return // flushes again once the snapshot's parts are stored
	}
	batch := f.queue
	f.queue = nil
	f.flushing = true
	e := entry{Prev: f.head, Seq: f.seq + 1}
	var chunks []chunkState
	if ps := f.nextSnap; ps != nil {
		f.nextSnap = nil
		e.Ops = append(e.Ops, Op{Kind: OpSnapshot, Snap: ps.snap})
		chunks = ps.chunks
	}
	for _, q := range batch {
		e.Ops = append(e.Ops, q.op)
	}
	fail := func(err error) {
		x.stats.EntryFailures++
		if errors.Is(err, past.ErrRefused) && f.reloads < 3 {
			// The replicas hold a newer head than ours: this node's view
			// is stale (it restarted and read a lagging replica, or wrote
			// on both sides of a partition). Reload, then retry.
			f.reloads++
			f.reload(batch)
			return
		}
		f.flushing = false
		for _, q := range batch {
			q.done(err)
		}
		f.flush()
	}
	sealed := SealEntry(randReader{x.env.Rand}, f.a.logKeys[0], wire.MustMarshal(e))
	key := store(x.past, sealed, x.cfg.MailLease, func(err error) {
		if err != nil {
			fail(fmt.Errorf("post: folder %s: log entry: %w", f.info.Name, err))
			return
		}
		f.a.archive(object.KindImmutable, sealedKey(sealed), sealed)
		f.cachePut(sealedKey(sealed), sealed)
		// The entry is durable; note the new head here first (this node is
		// the authority on it), then move the network's head.
		h := wire.MustMarshal(headData{Last: [32]byte(sealedKey(sealed)), Seq: e.Seq})
		if err := x.local.SetMeta(f.localName(), h); err != nil {
			fail(fmt.Errorf("post: folder %s: local head: %w", f.info.Name, err))
			return
		}
		m, err := past.SignMutable(f.a.keys, f.a.cert, f.headName(), e.Seq, h)
		if err != nil {
			fail(err)
			return
		}
		x.past.InsertMutable(m, x.cfg.MailLease, func(_ past.InsertResult, err error) {
			if err != nil {
				fail(fmt.Errorf("post: folder %s: head: %w", f.info.Name, err))
				return
			}
			f.a.archiveMutable(m)
			x.stats.Entries++
			f.flushing = false
			f.reloads = 0
			f.seq, f.head = e.Seq, sealedKey(sealed)
			if len(e.Ops) > 0 && e.Ops[0].Kind == OpSnapshot {
				f.checkpointed(chunks)
			}
			f.entries = append(f.entries, f.head)
			f.sinceSnap++
			for _, op := range e.Ops {
				if op.Kind == OpSnapshot {
					f.sinceSnap = 0
					continue
				}
				f.apply(op)
			}
			for _, q := range batch {
				q.done(nil)
			}
			for _, w := range f.watchers {
				w()
			}
			f.flush()
		})
	})
	_ = key
}

// store inserts an immutable object; done runs once a majority holds it.
func store(p *past.Past, data []byte, lease env.Duration, done func(error)) object.Key {
	return p.Insert(data, lease, func(_ past.InsertResult, err error) { done(err) })
}

func sealedKey(b []byte) object.Key { return object.ImmutableKey(b) }

func (f *Folder) localName() string {
	return "post/head/" + hex.EncodeToString(f.a.cert.UserID.ID[:]) + "/" + hex.EncodeToString(f.info.ID[:])
}

// localHead is the head this node last wrote, if any.
func (f *Folder) localHead() (headData, bool) {
	b, err := f.a.x.local.GetMeta(f.localName())
	if err != nil {
		return headData{}, false
	}
	var h headData
	if wire.Unmarshal(b, &h) != nil || h.Seq == 0 {
		return headData{}, false
	}
	return h, true
}

// load rebuilds the folder from its head and log. The head this node last
// wrote is the authority: a network that lags behind it (a restart that
// reached only stale replicas) is brought up to it; a network head that
// is not it (written elsewhere, or on both sides of a partition) is
// merged with it.
func (f *Folder) load(done func(error)) {
	x := f.a.x
	x.stats.FolderLoads++
	local, haveLocal := f.localHead()
	x.past.LookupMutable(past.MutableKey(f.a.cert.UserID, f.headName()), func(res past.MutableResult, err error) {
		if err != nil && !errors.Is(err, past.ErrNotFound) {
			x.stats.LoadFailures++
			done(err)
			return
		}
		var heads []headData
		for _, m := range res.Versions {
			var h headData
			if wire.Unmarshal(m.Data, &h) == nil && h.Seq == m.Version {
				heads = append(heads, h)
			}
		}
		if haveLocal {
			switch {
			case len(heads) == 0 || local.Seq > heads[0].Seq:
				// The network lags behind this node, or holds a
				// shorter branch another node wrote: the merge tells
				// which (an ancestor of ours is not merged).
				heads = append([]headData{local}, heads...)
				f.republish(local)
			default:
				found := false
				for _, h := range heads {
					found = found || h.Last == local.Last
				}
				if !found {
					heads = append(heads, local)
				}
			}
		}
		if len(heads) == 0 {
			if err != nil {
				done(nil) // a folder nothing was ever written to
				return
			}
			x.stats.LoadFailures++
			done(fmt.Errorf("post: folder %s: no valid head", f.info.Name))
			return
		}
		// The newest first; among equals, a deterministic order.
		sort.Slice(heads, func(i, j int) bool {
			if heads[i].Seq != heads[j].Seq {
				return heads[i].Seq > heads[j].Seq
			}
			return string(heads[i].Last[:]) < string(heads[j].Last[:])
		})
		f.walked = nil
		f.walk(heads[0].Last, nil, func(chain []entry, err error) {
			if err != nil {
				x.stats.LoadFailures++
				done(err)
				return
			}
			f.replay(chain, heads[0])
			if len(heads) == 1 {
				if !haveLocal {
					// Remember the head this folder was read at, so that a
					// restart serves it from the cache rather than empty.
					if err := x.local.SetMeta(f.localName(), wire.MustMarshal(heads[0])); err != nil {
						x.env.Log.Warn("post: noting a folder's head", "folder", f.info.Name, "err", err)
					}
				}
				done(nil)
				return
			}
			f.mergeFork(heads[1:], done)
		})
	})
}

// walk reads entries back from key until the first entry or a snapshot;
// chain comes back oldest first.
func (f *Folder) walk(key object.Key, chain []entry, done func([]entry, error)) {
	f.walked = append(f.walked, key)
	f.fetch(key, func(b []byte, err error) {
		if err != nil {
			done(nil, fmt.Errorf("post: folder %s: entry %s: %w", f.info.Name, key.Short(), err))
			return
		}
		pt, err := OpenEntryAny(f.a.logKeys, b)
		if err != nil {
			done(nil, err)
			return
		}
		var e entry
		if err := wire.Unmarshal(pt, &e); err != nil {
			done(nil, fmt.Errorf("%w: log entry: %w", ErrTampered, err))
			return
		}
		chain = append(chain, e)
		if e.Prev == ([32]byte{}) || (len(e.Ops) > 0 && e.Ops[0].Kind == OpSnapshot) || e.Seq <= 1 {
			f.resolveSnapshot(&chain[len(chain)-1], func(err error) {
				if err != nil {
					done(nil, fmt.Errorf("post: folder %s: %w", f.info.Name, err))
					return
				}
				slices.Reverse(chain)
				done(chain, nil)
			})
			return
		}
		f.walk(e.Prev, chain, done)
	})
}

func (f *Folder) replay(chain []entry, h headData) {
	f.entries = slices.Clone(f.walked)
	slices.Reverse(f.entries)
	f.walked = nil
	for _, e := range chain {
		for _, op := range e.Ops {
			f.apply(op)
		}
	}
	f.seq, f.head = h.Seq, h.Last
	f.sinceSnap = uint64(max(len(chain), 1) - 1)
	f.loading = false
	f.cacheChain()
	f.pruneCache()
}

// randReader adapts env.Rand to io.Reader.
type randReader struct{ r env.Rand }

func (r randReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// uidValidity derives a folder's UIDVALIDITY from its id (never 0).
func uidValidity(fid [16]byte) uint32 {
	v := binary.BigEndian.Uint32(fid[:4])
	if v == 0 {
		v = 1
	}
	return v
}

// reload rebuilds the folder from the network and puts batch back at the
// front of the queue: appends whose message the log already holds are
// done; the others get UIDs that are free in the reloaded state.
func (f *Folder) reload(batch []queued) {
	x := f.a.x
	f.clear()
	f.nextUID, f.seq, f.head, f.sinceSnap, f.entries = 1, 0, object.Key{}, 0, nil
	f.chunks, f.nextSnap = nil, nil
	// Writes wait until the state is rebuilt (replay), not until the
	// load ends: merging a fork writes entries before it ends.
	f.flushing, f.loading = false, true
	f.load(func(err error) {
		f.loading = false // (a flush may be under way: it is not ours to end)
		if err != nil {
			x.env.Log.Warn("post: reloading folder failed", "folder", f.info.Name, "err", err)
		}
		have := map[[16]byte]bool{}
		for _, m := range f.msgs {
			have[m.ID] = true
		}
		var keep []queued
		for _, q := range batch {
			if q.op.Kind == OpAppend && q.op.Msg != nil {
				if have[q.op.Msg.ID] {
					q.done(nil)
					continue
				}
				if _, taken := f.msgs[q.op.UID]; taken || q.op.UID < f.nextUID {
					q.op.UID = f.reserved
					q.op.Msg.UID = f.reserved
					f.reserved++
				}
			}
			keep = append(keep, q)
		}
		f.queue = append(keep, f.queue...)
		f.flush()
	})
}

// republish puts this node's head back in the network, where replicas
// lag behind it.
func (f *Folder) republish(h headData) {
	x := f.a.x
	m, err := past.SignMutable(f.a.keys, f.a.cert, f.headName(), h.Seq, wire.MustMarshal(h))
	if err != nil {
		return
	}
	x.past.InsertMutable(m, x.cfg.MailLease, func(_ past.InsertResult, err error) {
		if err != nil {
			x.env.Log.Info("post: republishing a head failed", "folder", f.info.Name, "err", err)
		}
	})
}

// deliveryFolder reports whether delivered mail lands in the folder: its
// messages' ids say what has been delivered, so none is taken in twice.
func deliveryFolder(name string) bool { return name == "INBOX" || name == "Junk" }
