package glacier

import (
	"encoding/binary"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// The archive queue survives a crash through a journal on the node's own
// store. Archive writes a small entry per object (its kind and key,
// numbered per owner), asynchronously and group-committed with the
// node's other writes; when every bundle up to an entry's number is
// placed, a mark records it. After a restart, the entries past the mark
// are what was queued but not archived: the node fetches those objects
// again (they are in PAST) and queues them anew. Entries are leased
// briefly and simply expire.

// Journal entries and marks live among the fragments, at indices no
// fragment has (a code has at most 256 fragments).
const (
	journalIndex = 0xFFFE
	markIndex    = 0xFFFD
	// journalLease: long enough to outlast any queue, counted in the
	// node's uptime, so a node that is off does not lose its journal.
	journalLease = 7 * 24 * env.Hour
)

// ObjectRef names an object the archive was given but has not archived.
type ObjectRef struct {
	Kind uint8
	Key  [32]byte
}

type journalEntry struct {
	_    struct{} `cbor:",toarray"`
	Kind uint8
	Key  [32]byte
}

type journalMark struct {
	_    struct{} `cbor:",toarray"`
	Done uint64   // every entry below Done is archived
}

func journalKey(owner id.ID, j uint64) store.Key {
	var k store.Key
	copy(k[:16], owner[:])
	binary.BigEndian.PutUint16(k[16:18], journalIndex)
	binary.BigEndian.PutUint64(k[18:26], j)
	return k
}

func markKey(owner id.ID) store.Key {
	var k store.Key
	copy(k[:16], owner[:])
	binary.BigEndian.PutUint16(k[16:18], markIndex)
	return k
}

// isFragmentIndex reports whether a stored entry's index is a fragment's,
// not a certificate, journal entry or mark.
func isFragmentIndex(idx uint16) bool { return idx < markIndex }

// recovered is what Attach found of one owner's journal.
type recovered struct {
	entries map[uint64]ObjectRef
	done    uint64
}

func (g *Glacier) loadJournal(owner id.ID, idx uint16, k store.Key) {
	b, err := g.st.Get(store.KindFragment, k)
	if err != nil {
		return
	}
	r := g.journals[owner]
	if r == nil {
		r = &recovered{entries: map[uint64]ObjectRef{}}
		g.journals[owner] = r
	}
	switch idx {
	case journalIndex:
		var e journalEntry
		if wire.Unmarshal(b, &e) == nil {
			r.entries[binary.BigEndian.Uint64(k[18:26])] = ObjectRef{Kind: e.Kind, Key: e.Key}
		}
	case markIndex:
		var m journalMark
		if wire.Unmarshal(b, &m) == nil {
			r.done = max(r.done, m.Done)
		}
	}
}

// Unarchived returns, in the order they were queued, the objects of user
// that were given to the archive before a restart and not archived. The
// caller reads them again (from PAST) and passes them to Archive; the
// list is handed out once.
func (g *Glacier) Unarchived(user id.ID) []ObjectRef {
	r := g.journals[user]
	if r == nil {
		return nil
	}
	delete(g.journals, user)
	js := make([]uint64, 0, len(r.entries))
	for j := range r.entries {
		if j >= r.done {
			js = append(js, j)
		}
	}
	sort.Slice(js, func(a, b int) bool { return js[a] < js[b] })
	out := make([]ObjectRef, len(js))
	for i, j := range js {
		out[i] = r.entries[j]
	}
	return out
}

// journal records that o was queued for w, returning its number.
func (g *Glacier) journal(w *owner, o Object) uint64 {
	j := w.jnext
	w.jnext++
	data := wire.MustMarshal(journalEntry{Kind: o.Kind, Key: o.Key})
	g.st.PutAsync(store.KindFragment, journalKey(w.id, j), data, g.ticks().Add(journalLease), func(err error) {
		if err != nil {
			g.stats.StoreErrors++
		}
	})
	return j
}

// sealedRange notes that a bundle took w's journal entries [from, to).
func (w *owner) sealedRange(seq, from, to uint64) {
	w.outstanding = append(w.outstanding, pendingBundle{seq: seq, from: from, to: to})
}

type pendingBundle struct {
	seq      uint64
	from, to uint64
	placed   bool
}

// placed notes that bundle seq of w needs no more work from its owner
// (every fragment acknowledged, or the placement gave up and audits take
// over), and moves the journal's mark past every bundle placed in order.
func (g *Glacier) placed(w *owner, seq uint64) {
	for i := range w.outstanding {
		if w.outstanding[i].seq == seq {
			w.outstanding[i].placed = true
		}
	}
	done := w.jdone
	for len(w.outstanding) > 0 && w.outstanding[0].placed {
		done = w.outstanding[0].to
		w.outstanding = w.outstanding[1:]
	}
	if done == w.jdone {
		return
	}
	w.jdone = done
	g.st.PutAsync(store.KindFragment, markKey(w.id), wire.MustMarshal(journalMark{Done: done}), g.ticks().Add(journalLease), func(err error) {
		if err != nil {
			g.stats.StoreErrors++
		}
	})
}
