package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/epost-mail/epost/internal/env"
)

// Keys returns up to limit keys of the given kind whose ring positions lie
// in r, in clockwise order from r.From. To continue, pass the last key
// returned as after (nil starts at r.From); more reports whether keys
// remain. Keys neither reads nor verifies objects. Each call is its own
// snapshot: keys written or removed between calls may be missed or
// reported, but no key is reported twice in one walk.
func (s *Store) Keys(kind Kind, r Range, after *Key, limit int) (keys []Key, more bool, err error) {
	if !kind.Valid() || limit <= 0 {
		return nil, false, fmt.Errorf("store: keys %v: %w: kind or limit %d", kind, ErrInvalid, limit)
	}
	segs := segments(r)
	first := 0
	if after != nil {
		if !r.Contains(*after) {
			return nil, false, fmt.Errorf("store: keys %v: %w: cursor %s outside range", kind, ErrInvalid, after.Short())
		}
		for i, seg := range segs {
			if inSegment(seg, after[:]) {
				first = i
				break
			}
		}
	}
	err = s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(objectBucket(kind)).Cursor()
		for i := first; i < len(segs); i++ {
			seg := segs[i]
			var k []byte
			if i == first && after != nil {
				k, _ = c.Seek(after[:])
				if bytes.Equal(k, after[:]) {
					k, _ = c.Next()
				}
			} else {
				k, _ = c.Seek(seg[0])
			}
			for ; k != nil && (seg[1] == nil || bytes.Compare(k, seg[1]) < 0); k, _ = c.Next() {
				if len(k) != KeySize {
					continue // damaged; Scrub removes it
				}
				if len(keys) == limit {
					more = true
					return nil
				}
				keys = append(keys, Key(k))
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("store: keys %v: %w", kind, err)
	}
	return keys, more, nil
}

// Scrub verifies up to n entries from c onwards, exactly as a read would
// (object record, content hash or checksum, lease record), and durably
// removes those that fail, counting them in Stats.Corrupt, so that
// replica maintenance can fetch them again. PAST calls it every
// Config.ScrubPeriod for Config.ScrubBatch entries, resuming at the
// previous report's Next (a node runs it off its event loop).
func (s *Store) Scrub(c ScrubCursor, n int) (ScrubReport, error) {
	ks := allKinds()
	ki := 0
	if c.Kind != KindInvalid {
		for ki < len(ks) && ks[ki] != c.Kind {
			ki++
		}
	} else {
		c.From = Key{}
	}
	if n <= 0 || ki == len(ks) {
		return ScrubReport{}, fmt.Errorf("store: scrub: %w: kind %v, n %d", ErrInvalid, c.Kind, n)
	}
	var rep ScrubReport
	drop := &dropOp{}
	err := s.view(func(tx *bolt.Tx) error {
		lb := tx.Bucket([]byte(bucketLease))
		from := c.From
		for ; ki < len(ks); ki++ {
			k := ks[ki]
			cur := tx.Bucket(objectBucket(k)).Cursor()
			for key, v := cur.Seek(from[:]); key != nil; key, v = cur.Next() {
				if rep.Checked == n {
					rep.Next = ScrubCursor{Kind: k, From: Key(padKey(key))}
					return nil
				}
				rep.Checked++
				if len(key) != KeySize {
					drop.raw = append(drop.raw, rawKey{kind: k, key: bytes.Clone(key)})
					continue
				}
				e := Entry{Kind: k, Key: Key(key)}
				if verifyEntry(e, v, lb.Get(leaseKey(k, e.Key))) != nil {
					drop.entries = append(drop.entries, e)
				}
			}
			from = Key{}
		}
		rep.PassDone = true
		return nil
	})
	if err != nil {
		return ScrubReport{}, fmt.Errorf("store: scrub: %w", err)
	}
	if len(drop.entries)+len(drop.raw) > 0 {
		if err := s.wait(drop, Entry{}, nominalBytes); err != nil {
			return rep, fmt.Errorf("store: scrub: drop %d entries: %w", len(drop.entries)+len(drop.raw), err)
		}
		rep.Dropped = drop.dropped
	}
	return rep, nil
}

// padKey turns a (possibly damaged, wrong-length) bucket key into a
// cursor position at or before it.
func padKey(b []byte) Key {
	var k Key
	copy(k[:], b)
	return k
}

// rawKey is a bucket key of the wrong length, which no write of ours
// produces.
type rawKey struct {
	kind Kind
	key  []byte
}

// Sweep durably removes up to limit objects whose lease has run out: an
// object's lease covers the ticks before its expiry, so it expires once
// Ticks() >= expiry. It visits leases soonest-first through the expiry
// index, so its cost is proportional to what it removes.
func (s *Store) Sweep(limit int) (SweepReport, error) {
	if limit <= 0 {
		return SweepReport{}, fmt.Errorf("store: sweep: %w: limit %d", ErrInvalid, limit)
	}
	o := &sweepOp{limit: limit}
	if err := s.wait(o, Entry{}, nominalBytes); err != nil {
		return SweepReport{}, fmt.Errorf("store: sweep: %w", err)
	}
	return o.report, nil
}

// sweepOp removes expired entries inside a transaction.
type sweepOp struct {
	limit  int
	report SweepReport
}

func (o *sweepOp) apply(w *txWriter) (error, error) {
	o.report = SweepReport{}
	type item struct {
		ik     []byte
		expiry env.Time
		entry  Entry
		bad    bool
	}
	var items []item
	ix := w.bucket(bucketExpiry)
	c := ix.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		exp, e, err := decodeExpiryKey(k)
		if err == nil && exp > w.ticks {
			break
		}
		if len(items) == o.limit {
			o.report.More = true
			break
		}
		items = append(items, item{ik: bytes.Clone(k), expiry: exp, entry: e, bad: err != nil})
	}
	for _, it := range items {
		if !it.bad {
			if l := w.lease(it.entry); l != nil && l.expiry == it.expiry {
				size, found, err := w.remove(it.entry)
				if err != nil {
					return nil, err
				}
				if found {
					o.report.Removed = append(o.report.Removed, Removed{Entry: it.entry, Size: size, Expiry: it.expiry})
					o.report.Bytes += size
					w.counts.expired++
					w.stats = true
				}
				continue
			}
		}
		// An index entry no lease matches (left by a damaged lease
		// record): discard it.
		if err := ix.Delete(it.ik); err != nil {
			return nil, err
		}
	}
	return nil, nil
}
