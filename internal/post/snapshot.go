package post

import (
	"fmt"
	"slices"

	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// A checkpoint's snapshot is split into parts so that it never outgrows
// PAST's object limit (about 110 bytes a message: one object would pass
// 4 MiB near 38,000 messages) and so that a checkpoint of a big folder
// rewrites only what changed. Each part holds up to
// Config.SnapshotChunk messages with consecutive UIDs, sealed with the log
// key as an immutable object that the checkpoint entry names by hash; the
// messages after the last part (fewer than one part's worth) stay in the
// entry itself. A part whose messages are all unchanged since the last
// checkpoint is named again, not rewritten.

// SnapChunk names one part of a snapshot: N messages with UIDs from First
// to Last, in the object Key.
type SnapChunk struct {
	_     struct{} `cbor:",toarray"`
	Key   object.Key
	First uint32
	Last  uint32
	N     uint32
}

// snapPart is the plaintext of a part.
type snapPart struct {
	_    struct{} `cbor:",toarray"`
	Msgs []*Message
}

// chunkState is a part the folder's latest checkpoint names, with the
// messages it holds as the folder held them then (the same pointers, so
// that any change, which replaces or removes a message, shows).
type chunkState struct {
	ref  SnapChunk
	msgs []*Message
}

// snapSeg is a run of messages for the next checkpoint: a part of the
// last one, reused, or messages to write anew.
type snapSeg struct {
	old  *chunkState
	msgs []*Message
}

// planSnapshot makes the snapshot for a checkpoint of the folder's
// current state: the parts it names (reused or new), the sealed bytes of
// the new parts, and the messages inline.
func (f *Folder) planSnapshot() (*Snapshot, []chunkState, [][]byte) {
	per := f.a.x.cfg.SnapshotChunk
	msgs := f.Messages()
	snap := &Snapshot{NextUID: f.nextUID}
	if per <= 0 {
		snap.Msgs = msgs
		return snap, nil, nil
	}
	// Walk the last checkpoint's parts along the messages in UID order:
	// a part is reused if exactly its messages are in its UID range.
	var segs []snapSeg
	var run []*Message
	i := 0
	for k := range f.chunks {
		c := &f.chunks[k]
		for i < len(msgs) && msgs[i].UID < c.ref.First {
			run = append(run, msgs[i])
			i++
		}
		j := i
		for j < len(msgs) && msgs[j].UID <= c.ref.Last {
			j++
		}
		if j > i && slices.Equal(c.msgs, msgs[i:j]) {
			if len(run) > 0 {
				segs = append(segs, snapSeg{msgs: run})
				run = nil
			}
			segs = append(segs, snapSeg{old: c, msgs: c.msgs})
		} else {
			run = append(run, msgs[i:j]...)
		}
		i = j
	}
	run = append(run, msgs[i:]...)
	if len(run) > 0 {
		segs = append(segs, snapSeg{msgs: run})
	}
	// A new run merges with a neighbour when both fit in one part, so
	// expunges do not leave ever smaller parts behind.
	var out []snapSeg
	for _, s := range segs {
		if n := len(out); n > 0 && (out[n-1].old == nil || s.old == nil) && len(out[n-1].msgs)+len(s.msgs) <= per {
			out[n-1] = snapSeg{msgs: append(slices.Clip(out[n-1].msgs), s.msgs...)}
			continue
		}
		out = append(out, s)
	}
	var states []chunkState
	var sealed [][]byte
	for k, s := range out {
		if s.old != nil {
			snap.Chunks = append(snap.Chunks, s.old.ref)
			states = append(states, *s.old)
			continue
		}
		ms := s.msgs
		last := k == len(out)-1
		if last {
			// The tail: whole parts, and the rest inline.
			full := len(ms) / per * per
			snap.Msgs = ms[full:]
			ms = ms[:full]
		}
		parts := (len(ms) + per - 1) / per
		for p := 0; p < parts; p++ {
			size := (len(ms) + (parts - p) - 1) / (parts - p) // even sizes
			part := ms[:size]
			ms = ms[size:]
			b := SealEntry(randReader{f.a.x.env.Rand}, f.a.logKeys[0], wire.MustMarshal(snapPart{Msgs: part}))
			ref := SnapChunk{Key: object.ImmutableKey(b), First: part[0].UID, Last: part[len(part)-1].UID, N: uint32(len(part))}
			snap.Chunks = append(snap.Chunks, ref)
			states = append(states, chunkState{ref: ref, msgs: part})
			sealed = append(sealed, b)
		}
	}
	return snap, states, sealed
}

// storeParts stores a checkpoint's new parts; done runs once all are
// durable, or with the first failure.
func (f *Folder) storeParts(parts [][]byte, done func(error)) {
	if len(parts) == 0 {
		done(nil)
		return
	}
	x := f.a.x
	n := len(parts)
	var firstErr error
	for _, b := range parts {
		store(x.past, b, x.cfg.MailLease, func(err error) {
			if err == nil {
				f.a.archive(object.KindImmutable, sealedKey(b), b)
				f.cachePut(sealedKey(b), b)
			} else if firstErr == nil {
				firstErr = err
			}
			if n--; n == 0 {
				done(firstErr)
			}
		})
	}
}

// resolveSnapshot reads the parts a snapshot in e names, checks them, and
// puts their messages in the snapshot, ahead of those inline; readers of
// the entry then see the whole state. The parts' keys are added to
// f.walked (they stay leased with the log).
func (f *Folder) resolveSnapshot(e *entry, done func(error)) { f.readParts(e, true, done) }

// readParts is resolveSnapshot; track adds the parts' keys to the walk
// that replay turns into the folder's object list (a merge reading
// another branch does not).
func (f *Folder) readParts(e *entry, track bool, done func(error)) {
	var snap *Snapshot
	for _, op := range e.Ops {
		if op.Kind == OpSnapshot && op.Snap != nil && len(op.Snap.Chunks) > 0 {
			snap = op.Snap
		}
	}
	if snap == nil {
		done(nil)
		return
	}
	got := make([][]*Message, len(snap.Chunks))
	n := len(snap.Chunks)
	var firstErr error
	finish := func() {
		if firstErr != nil {
			done(firstErr)
			return
		}
		var all []*Message
		for _, ms := range got {
			all = append(all, ms...)
		}
		all = append(all, snap.Msgs...)
		for k := 1; k < len(all); k++ {
			if all[k] == nil || all[k-1] == nil || all[k].UID <= all[k-1].UID {
				done(fmt.Errorf("%w: snapshot of folder %s out of order", ErrTampered, f.info.Name))
				return
			}
		}
		snap.resolved = snap.Chunks
		snap.Chunks = nil
		snap.Msgs = all
		done(nil)
	}
	for k, ref := range snap.Chunks {
		if track {
			f.walked = append(f.walked, ref.Key)
		}
		f.fetch(ref.Key, func(b []byte, err error) {
			if err == nil {
				got[k], err = f.openPart(ref, b)
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if n--; n == 0 {
				finish()
			}
		})
	}
}

// openPart decrypts a part and checks it holds what ref says.
func (f *Folder) openPart(ref SnapChunk, b []byte) ([]*Message, error) {
	pt, err := OpenEntryAny(f.a.logKeys, b)
	if err != nil {
		return nil, err
	}
	var p snapPart
	if err := wire.Unmarshal(pt, &p); err != nil {
		return nil, fmt.Errorf("%w: snapshot part: %w", ErrTampered, err)
	}
	ms := p.Msgs
	if uint32(len(ms)) != ref.N || len(ms) == 0 || ms[0] == nil || ms[0].UID != ref.First || ms[len(ms)-1] == nil || ms[len(ms)-1].UID != ref.Last {
		return nil, fmt.Errorf("%w: snapshot part %s is not what its checkpoint names", ErrTampered, ref.Key.Short())
	}
	return ms, nil
}

// adoptChunks notes the parts of a snapshot just applied, pointing at the
// folder's messages, so the next checkpoint can reuse them.
func (f *Folder) adoptChunks(s *Snapshot) {
	f.chunks = nil
	i := 0
	for _, ref := range s.resolved {
		st := chunkState{ref: ref}
		for k := uint32(0); k < ref.N && i < len(s.Msgs); k++ {
			if m := s.Msgs[i]; m != nil {
				st.msgs = append(st.msgs, f.msgs[m.UID])
			}
			i++
		}
		f.chunks = append(f.chunks, st)
	}
}

// plannedSnap is a checkpoint's snapshot whose new parts are durable.
type plannedSnap struct {
	snap   *Snapshot
	chunks []chunkState
}

// holdForCheckpoint plans a checkpoint when one is due and stores its
// new parts, holding the folder's flushes meanwhile (the state cannot
// change); the next flush writes the entry with the snapshot. It reports
// whether the flush must wait for that. If a part cannot be stored, the
// entry goes without a checkpoint and the next one tries again.
func (f *Folder) holdForCheckpoint() bool {
	if f.sinceSnap+1 < f.a.x.cfg.CheckpointEvery || f.nextSnap != nil || f.snapFail == f.seq+1 {
		return false
	}
	snap, chunks, parts := f.planSnapshot()
	f.a.x.stats.SnapshotParts += uint64(len(parts))
	f.a.x.stats.SnapshotPartsReused += uint64(len(chunks) - len(parts))
	if len(parts) == 0 {
		f.nextSnap = &plannedSnap{snap: snap, chunks: chunks}
		return false
	}
	f.flushing = true
	f.storeParts(parts, func(err error) {
		f.flushing = false
		if err != nil {
			f.a.x.stats.EntryFailures++
			f.a.x.env.Log.Info("post: storing a checkpoint failed", "folder", f.info.Name, "err", err)
			f.snapFail = f.seq + 1
		} else {
			f.nextSnap = &plannedSnap{snap: snap, chunks: chunks}
		}
		f.flush()
	})
	return true
}

// legacySnapshot is a snapshot as written before parts: the whole state
// in the entry.
type legacySnapshot struct {
	_       struct{} `cbor:",toarray"`
	NextUID uint32
	Msgs    []*Message
}

// UnmarshalCBOR reads a snapshot in either form, so that folders last
// checkpointed before snapshots had parts still open.
func (s *Snapshot) UnmarshalCBOR(b []byte) error {
	type current Snapshot // the same fields, without this method
	var c current
	err := wire.Unmarshal(b, &c)
	if err == nil {
		*s = Snapshot(c)
		return nil
	}
	var old legacySnapshot
	if wire.Unmarshal(b, &old) != nil {
		return err
	}
	*s = Snapshot{NextUID: old.NextUID, Msgs: old.Msgs}
	return nil
}
