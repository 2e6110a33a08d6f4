package store

import (
	"bytes"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/epost-mail/epost/internal/env"
)

// request is one queued write and its completion.
type request struct {
	op    op
	entry Entry // reported to the Observer; zero for non-object writes
	done  func(error)
	seq   uint64
	bytes int // payload, for MaxBatchBytes and MaxQueueBytes
}

// op is a write applied inside a transaction. apply returns the write's
// own outcome (for example ErrNotFound), which leaves the transaction
// usable, and a fatal error, which aborts it. apply may run more than once
// (a failed group is retried one write at a time), so it must reset any
// output it produces.
type op interface {
	apply(w *txWriter) (result, fatal error)
}

// freeing marks ops that only remove data. Removing still allocates pages
// (copy-on-write of the pages it changes, the free list), so a store at
// its size limit could otherwise never free anything: a batch of such ops
// may grow the file one step past the limit.
type freeing interface{ frees() }

func (*deleteOp) frees() {}
func (*dropOp) frees()   {}
func (*sweepOp) frees()  {}

// nominalBytes is what a write without payload counts against the
// batch and queue limits.
const nominalBytes = 64

// submit queues a write for the committer. If the store is closed or the
// queue is full, done is called at once, on the caller's goroutine.
func (s *Store) submit(o op, e Entry, n int, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	r := &request{op: o, entry: e, done: done, bytes: n}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		done(ErrClosed)
		return
	}
	if len(s.queue) > 0 && s.queueBytes+n > s.cfg.MaxQueueBytes {
		s.mu.Unlock()
		done(fmt.Errorf("%w: %d bytes waiting", ErrBusy, s.queueBytes))
		return
	}
	s.seq++
	r.seq = s.seq
	// Reported under the lock, so before the committer can take the write.
	s.observe(Event{Type: EventSubmitted, Write: r.seq, Entry: e})
	s.queue = append(s.queue, r)
	s.queueBytes += n
	s.mu.Unlock()
	s.nudge()
}

// wait submits a write and blocks until its completion.
func (s *Store) wait(o op, e Entry, n int) error {
	ch := make(chan error, 1)
	s.submit(o, e, n, func(err error) { ch <- err })
	return <-ch
}

func (s *Store) nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Store) observe(ev Event) {
	if s.cfg.Observer != nil {
		s.cfg.Observer.Observe(ev)
	}
}

// PutAsync stores an object with a lease running out at tick expiry (on
// the Ticks counter; Forever for none) and calls done once the write is
// on stable storage, or has failed. done(nil) is called strictly after the
// fsync that covers the write has returned: that is the moment a storage
// receipt may be sent. done runs on the committer goroutine (or, when the
// write is refused outright, on the caller's before PutAsync returns); it
// must be quick and must not call a Store method that waits for a write
// (Put, ExtendLease, Delete, SetTicks, SetMeta, DeleteMeta, Flush, Scrub,
// Sweep, Close); reads and the Async methods are fine. PutAsync copies
// data.
//
// An immutable object's data must hash to its key (else ErrInvalid).
// Storing an object that is already present keeps the longer of the two
// leases; a mutable object's bytes are replaced. Writes are applied in the
// order they were submitted.
func (s *Store) PutAsync(kind Kind, key Key, data []byte, expiry env.Time, done func(error)) {
	e := Entry{Kind: kind, Key: key}
	fail := func(err error) {
		if done != nil {
			done(fmt.Errorf("store: put %v: %w", e, err))
		}
	}
	switch {
	case !kind.Valid():
		fail(fmt.Errorf("%w: kind", ErrInvalid))
		return
	case len(data) > s.cfg.MaxObjectSize:
		fail(fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), s.cfg.MaxObjectSize))
		return
	case expiry < 0:
		fail(fmt.Errorf("%w: negative expiry %d", ErrInvalid, expiry))
		return
	}
	rec := encodeObject(kind, data) // hashes on the caller's goroutine
	if kind == KindImmutable && Key(rec[2:objectHeader]) != key {
		fail(fmt.Errorf("%w: data does not hash to the key", ErrInvalid))
		return
	}
	s.submit(&putOp{entry: e, record: rec, expiry: expiry}, e, len(rec), func(err error) {
		if err != nil {
			fail(err)
			return
		}
		if done != nil {
			done(nil)
		}
	})
}

// Put is PutAsync that waits for the completion. Concurrent Puts share
// transactions and fsyncs.
func (s *Store) Put(kind Kind, key Key, data []byte, expiry env.Time) error {
	ch := make(chan error, 1)
	s.PutAsync(kind, key, data, expiry, func(err error) { ch <- err })
	return <-ch
}

// ExtendLeaseAsync raises an object's lease expiry to at least expiry (a
// lease never shrinks) and calls done once that is on stable storage, with
// the same rules as PutAsync. A missing object fails with ErrNotFound.
func (s *Store) ExtendLeaseAsync(kind Kind, key Key, expiry env.Time, done func(error)) {
	e := Entry{Kind: kind, Key: key}
	wrap := func(err error) {
		if done == nil {
			return
		}
		if err != nil {
			err = fmt.Errorf("store: extend lease %v: %w", e, err)
		}
		done(err)
	}
	if !kind.Valid() || expiry < 0 {
		wrap(fmt.Errorf("%w: kind %v, expiry %d", ErrInvalid, kind, expiry))
		return
	}
	s.submit(&leaseOp{entry: e, expiry: expiry}, e, nominalBytes, wrap)
}

// ExtendLease is ExtendLeaseAsync that waits for the completion.
func (s *Store) ExtendLease(kind Kind, key Key, expiry env.Time) error {
	ch := make(chan error, 1)
	s.ExtendLeaseAsync(kind, key, expiry, func(err error) { ch <- err })
	return <-ch
}

// Delete removes an object and its lease, durably, before returning.
// Deleting a missing object succeeds. (The network has no delete
// operation; this is local eviction.)
func (s *Store) Delete(kind Kind, key Key) error {
	e := Entry{Kind: kind, Key: key}
	if !kind.Valid() {
		return fmt.Errorf("store: delete %v: %w: kind", e, ErrInvalid)
	}
	if err := s.wait(&deleteOp{entry: e}, Entry{}, nominalBytes); err != nil {
		return fmt.Errorf("store: delete %v: %w", e, err)
	}
	return nil
}

// SetTicks durably advances the uptime counter to t. The runtime calls it
// periodically with the node's monotonic clock, so leases keep counting
// across restarts without wall time. Going backwards fails with
// ErrInvalid.
func (s *Store) SetTicks(t env.Time) error {
	if t < 0 || t >= Forever {
		return fmt.Errorf("store: set ticks %d: %w: out of range", t, ErrInvalid)
	}
	if err := s.wait(&ticksOp{t: t}, Entry{}, nominalBytes); err != nil {
		return fmt.Errorf("store: set ticks %d: %w", t, err)
	}
	return nil
}

// SetMeta durably stores a small metadata value under name, for other
// layers (UID counters, node state). Values are checksummed like objects.
func (s *Store) SetMeta(name string, value []byte) error {
	if err := checkMetaName(name); err != nil {
		return fmt.Errorf("store: set meta %q: %w", name, err)
	}
	if len(value) > s.cfg.MaxObjectSize {
		return fmt.Errorf("store: set meta %q: %w: %d bytes", name, ErrTooLarge, len(value))
	}
	rec := encodeObject(kindMeta, value)
	if err := s.wait(&metaOp{name: name, record: rec}, Entry{}, len(rec)); err != nil {
		return fmt.Errorf("store: set meta %q: %w", name, err)
	}
	return nil
}

// DeleteMeta durably removes a metadata value; a missing one is not an
// error.
func (s *Store) DeleteMeta(name string) error {
	if err := checkMetaName(name); err != nil {
		return fmt.Errorf("store: delete meta %q: %w", name, err)
	}
	if err := s.wait(&metaOp{name: name}, Entry{}, nominalBytes); err != nil {
		return fmt.Errorf("store: delete meta %q: %w", name, err)
	}
	return nil
}

// Flush returns once every write submitted before it has completed.
func (s *Store) Flush() error {
	if err := s.wait(flushOp{}, Entry{}, nominalBytes); err != nil {
		return fmt.Errorf("store: flush: %w", err)
	}
	return nil
}

// dropCorrupt schedules the removal of an entry that failed verification.
// The committer verifies it again inside the transaction, so a good copy
// written meanwhile survives.
func (s *Store) dropCorrupt(e Entry) {
	s.submit(&dropOp{entries: []Entry{e}}, Entry{}, nominalBytes, nil)
}

// run is the committer goroutine: it takes batches off the queue and
// commits them until the store is closing and the queue is empty.
func (s *Store) run() {
	defer close(s.stopped)
	// Faults on the mapped file become panics, which commitOnce recovers.
	debug.SetPanicOnFault(true)
	for {
		batch, closing := s.next()
		if len(batch) == 0 && closing {
			return
		}
		s.commit(batch)
		s.lastBatch = len(batch)
	}
}

// next waits for at least one write (or closing), takes what is queued up
// to the batch limits, and then, with a GroupCommitWindow, keeps taking
// arrivals until the window ends or the batch is full. It waits only when
// the previous transaction carried more than one write: writers are
// concurrent, and some are about to submit again. A lone writer never
// waits.
func (s *Store) next() ([]*request, bool) {
	s.mu.Lock()
	for len(s.queue) == 0 && !s.closing {
		s.mu.Unlock()
		<-s.wake
		s.mu.Lock()
	}
	batch, n, full := s.takeLocked(nil, 0)
	closing := s.closing
	s.mu.Unlock()
	if s.cfg.GroupCommitWindow <= 0 || full || closing || s.lastBatch <= 1 {
		return batch, closing
	}
	timer := time.NewTimer(s.cfg.GroupCommitWindow)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return batch, closing
		case <-s.wake:
			s.mu.Lock()
			batch, n, full = s.takeLocked(batch, n)
			closing = s.closing
			s.mu.Unlock()
			if full || closing {
				return batch, closing
			}
		}
	}
}

// takeLocked moves queued writes into batch (holding n payload bytes)
// while the limits allow; the first write always fits. It reports whether
// the batch is full.
func (s *Store) takeLocked(batch []*request, n int) ([]*request, int, bool) {
	i := 0
	for ; i < len(s.queue); i++ {
		r := s.queue[i]
		if len(batch) >= s.cfg.MaxBatch || (len(batch) > 0 && n+r.bytes > s.cfg.MaxBatchBytes) {
			break
		}
		batch = append(batch, r)
		n += r.bytes
		s.queueBytes -= r.bytes
	}
	clear(s.queue[:i])
	s.queue = s.queue[i:]
	if len(s.queue) == 0 {
		s.queue = nil
	}
	// Writes left behind did not fit: the batch is full.
	full := len(batch) >= s.cfg.MaxBatch || n >= s.cfg.MaxBatchBytes || len(s.queue) > 0
	return batch, n, full
}

// commit applies a batch in one transaction and fires its completions in
// submission order. If the transaction fails as a whole (a disk error, no
// room), each write is retried in a transaction of its own so that one
// write that cannot fit does not fail the others.
func (s *Store) commit(batch []*request) {
	results, err := s.commitOnce(batch)
	if err != nil && len(batch) > 1 {
		for _, r := range batch {
			s.commit([]*request{r})
		}
		return
	}
	if err != nil {
		s.mu.Lock()
		s.failed++
		s.mu.Unlock()
	}
	for i, r := range batch {
		res := err
		if err == nil {
			res = results[i]
		}
		s.observe(Event{Type: EventCompleted, Write: r.seq, Err: res})
		r.done(res)
	}
}

// commitOnce runs one transaction for the batch. It returns each write's
// result, or the error that failed the whole transaction. A fault on the
// mapped file or a bbolt panic (a malformed page) fails the transaction
// with an error matching ErrCorrupt.
func (s *Store) commitOnce(batch []*request) (results []error, err error) {
	// bbolt syncs on commit unless NoSync is set; nothing in this package
	// sets it, and this check keeps it that way.
	if s.db.NoSync {
		return nil, errors.New("store: refusing to commit with NoSync set")
	}
	if limit := s.db.MaxSize; limit > 0 && onlyFreeing(batch) {
		// Only this goroutine writes, so only it reads MaxSize meanwhile.
		s.db.MaxSize = freeingLimit(limit, s.db.AllocSize)
		defer func() { s.db.MaxSize = limit }()
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", classify(err))
	}
	defer func() {
		if p := recover(); p != nil {
			if tx.DB() != nil {
				_ = tx.Rollback()
			}
			results, err = nil, unreadable(p)
		}
	}()
	s.mu.Lock()
	w := &txWriter{tx: tx, counts: s.counts, ticks: s.ticks}
	s.mu.Unlock()
	results = make([]error, len(batch))
	for i, r := range batch {
		res, fatal := r.op.apply(w)
		if fatal != nil {
			_ = tx.Rollback()
			return nil, fmt.Errorf("write: %w", classify(fatal))
		}
		results[i] = res
	}
	if err := w.flush(); err != nil {
		_ = tx.Rollback()
		return nil, fmt.Errorf("write: %w", classify(err))
	}
	s.batchSeq++
	seqs := make([]uint64, len(batch))
	for i, r := range batch {
		seqs[i] = r.seq
	}
	s.observe(Event{Type: EventSyncStarted, Batch: s.batchSeq, Writes: seqs})
	// Commit writes the dirty pages, fdatasyncs, writes the meta page and
	// fdatasyncs again; it returns only after both syncs. An injected
	// fault stands in for a commit the disk failed.
	if err = s.cfg.Faults.fault(); err != nil {
		_ = tx.Rollback()
	} else {
		err = tx.Commit()
	}
	s.observe(Event{Type: EventSyncDone, Batch: s.batchSeq, Err: err})
	if err != nil {
		return nil, fmt.Errorf("commit %d writes: %w", len(batch), classify(err))
	}
	s.account(w, batch)
	return results, nil
}

// onlyFreeing reports whether every op in batch only removes data.
func onlyFreeing(batch []*request) bool {
	for _, r := range batch {
		if _, ok := r.op.(freeing); !ok {
			return false
		}
	}
	return true
}

// freeingLimit is the file size a removing batch may reach: one growth
// step past limit. bbolt doubles a file up to its allocation size, then
// grows it by that size.
func freeingLimit(limit, allocSize int) int {
	if limit <= allocSize {
		return 2 * limit
	}
	return limit + 2*allocSize
}

// account publishes a committed transaction's effect on the counters.
func (s *Store) account(w *txWriter, batch []*request) {
	s.mu.Lock()
	s.counts, s.ticks = w.counts, w.ticks
	s.batches++
	s.writes += uint64(len(batch))
	s.mu.Unlock()
}

// txWriter carries a write transaction and the counters as they will be
// once it commits.
type txWriter struct {
	tx     *bolt.Tx
	counts counts
	ticks  env.Time
	// Which records in the store bucket need rewriting.
	stats, ticksChanged bool
}

func (w *txWriter) bucket(name string) *bolt.Bucket { return w.tx.Bucket([]byte(name)) }

func (w *txWriter) objects(k Kind) *bolt.Bucket { return w.tx.Bucket(objectBucket(k)) }

func (w *txWriter) count(k Kind, objects, bytes int64) {
	w.counts.add(k, objects, bytes)
	w.stats = true
}

// flush rewrites the store bucket's records that changed.
func (w *txWriter) flush() error {
	sb := w.bucket(bucketStore)
	if w.stats {
		if err := sb.Put([]byte(recStats), encodeStats(&w.counts)); err != nil {
			return err
		}
	}
	if w.ticksChanged {
		if err := sb.Put([]byte(recTicks), encodeCounter(uint64(w.ticks))); err != nil {
			return err
		}
	}
	return nil
}

// lease returns the entry's lease record, or nil if it is missing or
// does not decode.
func (w *txWriter) lease(e Entry) *lease {
	l, err := decodeLease(w.bucket(bucketLease).Get(leaseKey(e.Kind, e.Key)))
	if err != nil {
		return nil
	}
	return &l
}

// existingLease returns the lease of an entry whose object exists. If the
// record is missing or damaged, it clears any index entries the entry
// left behind and returns nil, so setLease starts afresh.
func (w *txWriter) existingLease(e Entry) (*lease, error) {
	if l := w.lease(e); l != nil {
		return l, nil
	}
	return nil, w.unindex(e)
}

// setLease replaces old (nil if none) with l, keeping the expiry index in
// step.
func (w *txWriter) setLease(e Entry, old *lease, l lease) error {
	if old != nil && *old == l {
		return nil
	}
	ix := w.bucket(bucketExpiry)
	if old != nil && old.expiry != l.expiry {
		if err := ix.Delete(expiryKey(old.expiry, e.Kind, e.Key)); err != nil {
			return err
		}
	}
	if old == nil || old.expiry != l.expiry {
		if err := ix.Put(expiryKey(l.expiry, e.Kind, e.Key), nil); err != nil {
			return err
		}
	}
	return w.bucket(bucketLease).Put(leaseKey(e.Kind, e.Key), encodeLease(l))
}

// remove deletes an entry's object, lease and index entry. It returns the
// object's size and whether there was an object.
func (w *txWriter) remove(e Entry) (int64, bool, error) {
	ob, lb := w.objects(e.Kind), w.bucket(bucketLease)
	lk := leaseKey(e.Kind, e.Key)
	v, lv := ob.Get(e.Key[:]), lb.Get(lk)
	if v == nil && lv == nil {
		return 0, false, nil
	}
	var size int64
	if l, err := decodeLease(lv); err == nil {
		size = l.size
		if err := w.bucket(bucketExpiry).Delete(expiryKey(l.expiry, e.Kind, e.Key)); err != nil {
			return 0, false, err
		}
	} else {
		if len(v) >= objectHeader {
			size = int64(len(v) - objectHeader)
		}
		// The lease is damaged, so its expiry is unknown: find the index
		// entry by scanning. This happens only for corrupt entries.
		if err := w.unindex(e); err != nil {
			return 0, false, err
		}
	}
	if lv != nil {
		if err := lb.Delete(lk); err != nil {
			return 0, false, err
		}
	}
	if v == nil {
		return 0, false, nil
	}
	if err := ob.Delete(e.Key[:]); err != nil {
		return 0, false, err
	}
	w.count(e.Kind, -1, -size)
	return size, true, nil
}

// unindex deletes every expiry index entry for e.
func (w *txWriter) unindex(e Entry) error {
	suffix := leaseKey(e.Kind, e.Key)
	ix := w.bucket(bucketExpiry)
	var found [][]byte
	c := ix.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) == expiryKeySize && bytes.Equal(k[8:], suffix) {
			found = append(found, bytes.Clone(k))
		}
	}
	for _, k := range found {
		if err := ix.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// putOp stores an object record.
type putOp struct {
	entry  Entry
	record []byte
	expiry env.Time
}

func (o *putOp) apply(w *txWriter) (error, error) {
	e := o.entry
	ob := w.objects(e.Kind)
	old := ob.Get(e.Key[:])
	var oldLease *lease
	size := int64(len(o.record) - objectHeader)
	switch {
	case old == nil:
		if err := ob.Put(e.Key[:], o.record); err != nil {
			return nil, err
		}
		w.count(e.Kind, 1, size)
	case bytes.Equal(old, o.record):
		var err error
		if oldLease, err = w.existingLease(e); err != nil {
			return nil, err
		}
	default:
		// A changed mutable object, or a damaged copy of an immutable
		// one, which this write repairs.
		var err error
		if oldLease, err = w.existingLease(e); err != nil {
			return nil, err
		}
		oldSize := int64(len(old) - objectHeader)
		if oldLease != nil {
			oldSize = oldLease.size
		}
		if err := ob.Put(e.Key[:], o.record); err != nil {
			return nil, err
		}
		w.count(e.Kind, 0, size-max(oldSize, 0))
	}
	l := lease{expiry: o.expiry, size: size}
	if oldLease != nil {
		l.expiry = max(l.expiry, oldLease.expiry)
	}
	return nil, w.setLease(e, oldLease, l)
}

// leaseOp extends a lease.
type leaseOp struct {
	entry  Entry
	expiry env.Time
}

func (o *leaseOp) apply(w *txWriter) (error, error) {
	e := o.entry
	v := w.objects(e.Kind).Get(e.Key[:])
	if v == nil {
		return ErrNotFound, nil
	}
	old, err := w.existingLease(e)
	if err != nil {
		return nil, err
	}
	l := lease{expiry: o.expiry, size: max(int64(len(v)-objectHeader), 0)}
	if old != nil {
		l = lease{expiry: max(old.expiry, o.expiry), size: old.size}
	}
	return nil, w.setLease(e, old, l)
}

// deleteOp removes an entry.
type deleteOp struct{ entry Entry }

func (o *deleteOp) apply(w *txWriter) (error, error) {
	_, _, err := w.remove(o.entry)
	return nil, err
}

// dropOp removes entries that fail verification, re-checking each inside
// the transaction. dropped lists those it removed.
type dropOp struct {
	entries []Entry
	raw     []rawKey
	dropped []Entry
}

func (o *dropOp) apply(w *txWriter) (error, error) {
	o.dropped = o.dropped[:0]
	for _, e := range o.entries {
		v := w.objects(e.Kind).Get(e.Key[:])
		if v == nil {
			continue
		}
		if verifyEntry(e, v, w.bucket(bucketLease).Get(leaseKey(e.Kind, e.Key))) == nil {
			continue
		}
		if _, _, err := w.remove(e); err != nil {
			return nil, err
		}
		w.counts.corrupt++
		w.stats = true
		o.dropped = append(o.dropped, e)
	}
	for _, r := range o.raw {
		b := w.objects(r.kind)
		if b.Get(r.key) == nil {
			continue
		}
		if err := b.Delete(r.key); err != nil {
			return nil, err
		}
		w.counts.corrupt++
		w.stats = true
	}
	return nil, nil
}

// verifyEntry checks an object record and its lease record.
func verifyEntry(e Entry, v, lv []byte) error {
	rec, err := decodeObject(v)
	if err == nil {
		err = rec.verify(e.Kind, e.Key)
	}
	if err != nil {
		return err
	}
	l, err := decodeLease(lv)
	if err != nil {
		return err
	}
	if l.size != int64(len(rec.Data)) {
		return fmt.Errorf("%w: lease records %d bytes, object has %d", ErrCorrupt, l.size, len(rec.Data))
	}
	return nil
}

// ticksOp advances the uptime counter.
type ticksOp struct{ t env.Time }

func (o *ticksOp) apply(w *txWriter) (error, error) {
	if o.t < w.ticks {
		return fmt.Errorf("%w: ticks would go back from %d", ErrInvalid, w.ticks), nil
	}
	if o.t != w.ticks {
		w.ticks, w.ticksChanged = o.t, true
	}
	return nil, nil
}

// metaOp sets (record != nil) or deletes a metadata value.
type metaOp struct {
	name   string
	record []byte
}

func (o *metaOp) apply(w *txWriter) (error, error) {
	b := w.bucket(bucketMeta)
	if o.record == nil {
		return nil, b.Delete([]byte(o.name))
	}
	return nil, b.Put([]byte(o.name), o.record)
}

// flushOp changes nothing; its completion marks that everything before it
// has completed (and its transaction's sync covers everything before it).
type flushOp struct{}

func (flushOp) apply(*txWriter) (error, error) { return nil, nil }
