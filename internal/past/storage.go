package past

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	store "github.com/epost-mail/epost/internal/store/object"
)

// Storage is the local store as PAST sees it. Its methods mirror
// store.Store's; a real node adapts a store.Store so that write
// completions run on the node's event loop, and simulations use
// MemStorage. Completions (done) must never run inline on the caller's
// stack before the write is durable.
type Storage interface {
	Get(kind store.Kind, key store.Key) ([]byte, error)
	Has(kind store.Kind, key store.Key) (bool, error)
	Lease(kind store.Kind, key store.Key) (env.Time, error)
	Ticks() env.Time
	SetTicks(t env.Time) error
	PutAsync(kind store.Kind, key store.Key, data []byte, expiry env.Time, done func(error))
	ExtendLeaseAsync(kind store.Kind, key store.Key, expiry env.Time, done func(error))
	Keys(kind store.Kind, r store.Range, after *store.Key, limit int) ([]store.Key, bool, error)
	Sweep(limit int) (store.SweepReport, error)
	// ScrubAsync verifies up to n entries from c on, exactly as a read
	// would, durably drops those that fail and reports them to done, with
	// where the next call resumes. A real store's scrub reads from disk,
	// so a node runs it off its event loop and posts done back there.
	ScrubAsync(c store.ScrubCursor, n int, done func(store.ScrubReport, error))
}

// MemStorage is an in-memory Storage for simulations and tests: it
// outlives a simulated crash (a disk survives its process) and completes
// writes after SyncDelay on the clock given by SetClock, as a disk's
// fsync would.
type MemStorage struct {
	objs      map[store.Entry]*memObj
	ticks     env.Time
	clock     env.Clock
	SyncDelay env.Duration
	// Fail, if not nil, fails every write (put, lease extension) with it,
	// as a full or failing disk does: for tests.
	Fail  error
	bytes int64
}

type memObj struct {
	data   []byte
	sum    [sha256.Size]byte // of data when written, as the real store's checksum
	expiry env.Time
}

func newMemObj(data []byte, expiry env.Time) *memObj {
	return &memObj{data: bytes.Clone(data), sum: sha256.Sum256(data), expiry: expiry}
}

// intact is what the real store checks on every read: an immutable
// object's bytes hash to its key, any other's to the checksum written
// with them.
func (o *memObj) intact(e store.Entry) bool {
	sum := sha256.Sum256(o.data)
	if e.Kind == store.KindImmutable {
		return sum == e.Key
	}
	return sum == o.sum
}

// drop removes an entry found corrupt.
func (m *MemStorage) drop(e store.Entry) {
	if o, ok := m.objs[e]; ok {
		delete(m.objs, e)
		m.bytes -= int64(len(o.data))
	}
}

// NewMemStorage returns an empty store.
func NewMemStorage() *MemStorage {
	return &MemStorage{objs: map[store.Entry]*memObj{}, SyncDelay: env.Millisecond}
}

// SetClock sets the clock completions are scheduled on (a new one for
// each incarnation of a simulated node); nil completes writes inline.
func (m *MemStorage) SetClock(c env.Clock) { m.clock = c }

// Len is the number of objects held; Bytes their total size.
func (m *MemStorage) Len() int     { return len(m.objs) }
func (m *MemStorage) Bytes() int64 { return m.bytes }

// Wipe loses everything, as a replaced disk does.
func (m *MemStorage) Wipe() {
	m.objs = map[store.Entry]*memObj{}
	m.bytes = 0
}

// Corrupt flips a bit of a stored object, as a failing disk would: the
// next read or scrub of it finds the damage.
func (m *MemStorage) Corrupt(kind store.Kind, key store.Key) {
	if o, ok := m.objs[store.Entry{Kind: kind, Key: key}]; ok && len(o.data) > 0 {
		o.data[0] ^= 1
	}
}

func (m *MemStorage) later(f func()) {
	if m.clock == nil {
		f()
		return
	}
	m.clock.AfterFunc(m.SyncDelay, f)
}

// Get implements Storage; it verifies an object's hash or checksum as
// the real store does.
func (m *MemStorage) Get(kind store.Kind, key store.Key) ([]byte, error) {
	e := store.Entry{Kind: kind, Key: key}
	o, ok := m.objs[e]
	if !ok {
		return nil, store.ErrNotFound
	}
	if !o.intact(e) {
		// As the real store does: a corrupt entry is dropped and reported
		// lost, so maintenance restores it.
		m.drop(e)
		return nil, fmt.Errorf("past: mem %s: %w (entry dropped): %w", key.Short(), store.ErrCorrupt, store.ErrNotFound)
	}
	return bytes.Clone(o.data), nil
}

// Has implements Storage.
func (m *MemStorage) Has(kind store.Kind, key store.Key) (bool, error) {
	_, ok := m.objs[store.Entry{Kind: kind, Key: key}]
	return ok, nil
}

// Lease implements Storage.
func (m *MemStorage) Lease(kind store.Kind, key store.Key) (env.Time, error) {
	o, ok := m.objs[store.Entry{Kind: kind, Key: key}]
	if !ok {
		return 0, store.ErrNotFound
	}
	return o.expiry, nil
}

// Ticks implements Storage.
func (m *MemStorage) Ticks() env.Time { return m.ticks }

// SetTicks implements Storage.
func (m *MemStorage) SetTicks(t env.Time) error {
	if t < m.ticks {
		return fmt.Errorf("past: mem set ticks %d < %d: %w", t, m.ticks, store.ErrInvalid)
	}
	m.ticks = t
	return nil
}

// PutAsync implements Storage. The object is visible at once and
// reported durable after SyncDelay.
func (m *MemStorage) PutAsync(kind store.Kind, key store.Key, data []byte, expiry env.Time, done func(error)) {
	if err := m.Fail; err != nil {
		m.later(func() { done(err) })
		return
	}
	if kind == store.KindImmutable && sha256.Sum256(data) != key {
		m.later(func() { done(store.ErrInvalid) })
		return
	}
	e := store.Entry{Kind: kind, Key: key}
	if o, ok := m.objs[e]; ok {
		m.bytes -= int64(len(o.data))
		o.data, o.sum = bytes.Clone(data), sha256.Sum256(data)
		o.expiry = max(o.expiry, expiry)
	} else {
		m.objs[e] = newMemObj(data, expiry)
	}
	m.bytes += int64(len(data))
	m.later(func() { done(nil) })
}

// ExtendLeaseAsync implements Storage.
func (m *MemStorage) ExtendLeaseAsync(kind store.Kind, key store.Key, expiry env.Time, done func(error)) {
	o, ok := m.objs[store.Entry{Kind: kind, Key: key}]
	if !ok {
		m.later(func() { done(store.ErrNotFound) })
		return
	}
	if err := m.Fail; err != nil {
		m.later(func() { done(err) })
		return
	}
	o.expiry = max(o.expiry, expiry)
	m.later(func() { done(nil) })
}

// Keys implements Storage.
func (m *MemStorage) Keys(kind store.Kind, r store.Range, after *store.Key, limit int) ([]store.Key, bool, error) {
	var all []store.Key
	for e := range m.objs {
		if e.Kind == kind && r.Contains(e.Key) {
			all = append(all, e.Key)
		}
	}
	// Clockwise from r.From: keys at or past From first, then the wrap.
	from := r.From
	less := func(a, b store.Key) bool {
		ai, bi := a.Ring().Cmp(from) >= 0, b.Ring().Cmp(from) >= 0
		if ai != bi {
			return ai
		}
		return bytes.Compare(a[:], b[:]) < 0
	}
	sort.Slice(all, func(i, j int) bool { return less(all[i], all[j]) })
	if after != nil {
		all = all[sort.Search(len(all), func(i int) bool { return less(*after, all[i]) }):]
	}
	if len(all) > limit {
		return all[:limit], true, nil
	}
	return all, false, nil
}

// Sweep implements Storage.
func (m *MemStorage) Sweep(limit int) (store.SweepReport, error) {
	var rep store.SweepReport
	var gone []store.Removed
	for e, o := range m.objs {
		if m.ticks >= o.expiry {
			gone = append(gone, store.Removed{Entry: e, Size: int64(len(o.data)), Expiry: o.expiry})
		}
	}
	sort.Slice(gone, func(i, j int) bool {
		if gone[i].Expiry != gone[j].Expiry {
			return gone[i].Expiry < gone[j].Expiry
		}
		return bytes.Compare(gone[i].Key[:], gone[j].Key[:]) < 0
	})
	if len(gone) > limit {
		gone, rep.More = gone[:limit], true
	}
	for _, g := range gone {
		delete(m.objs, g.Entry)
		m.bytes -= g.Size
		rep.Bytes += g.Size
	}
	rep.Removed = gone
	return rep, nil
}

// scrubKinds is the order a scrub pass visits kinds in, the real store's.
var scrubKinds = [...]store.Kind{store.KindImmutable, store.KindMutable, store.KindSet, store.KindFragment}

// ScrubAsync implements Storage the way store.Store.Scrub does: entries
// in (kind, key) order from c, n at a time; it completes after SyncDelay
// like any write.
func (m *MemStorage) ScrubAsync(c store.ScrubCursor, n int, done func(store.ScrubReport, error)) {
	if n <= 0 {
		m.later(func() { done(store.ScrubReport{}, fmt.Errorf("past: mem scrub n %d: %w", n, store.ErrInvalid)) })
		return
	}
	rank := func(k store.Kind) int {
		for i, x := range scrubKinds {
			if x == k {
				return i
			}
		}
		return len(scrubKinds)
	}
	if c.Kind == store.KindInvalid {
		c = store.ScrubCursor{Kind: scrubKinds[0]}
	}
	var todo []store.Entry
	for e := range m.objs {
		if r := rank(e.Kind); r > rank(c.Kind) || (r == rank(c.Kind) && bytes.Compare(e.Key[:], c.From[:]) >= 0) {
			todo = append(todo, e)
		}
	}
	sort.Slice(todo, func(i, j int) bool {
		if a, b := rank(todo[i].Kind), rank(todo[j].Kind); a != b {
			return a < b
		}
		return bytes.Compare(todo[i].Key[:], todo[j].Key[:]) < 0
	})
	var rep store.ScrubReport
	if len(todo) > n {
		rep.Next = store.ScrubCursor{Kind: todo[n].Kind, From: todo[n].Key}
		todo = todo[:n]
	} else {
		rep.PassDone = true
	}
	for _, e := range todo {
		rep.Checked++
		if !m.objs[e].intact(e) {
			m.drop(e)
			rep.Dropped = append(rep.Dropped, e)
		}
	}
	m.later(func() { done(rep, nil) })
}
