package store

import (
	"bytes"
	"crypto/sha256"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/store/object"
)

// The object vocabulary lives in package object, so that protocol cores
// can use it without importing the disk; these are the same types.
type (
	// Key names a stored object: 32 bytes; its first 16 are its ring
	// position.
	Key = object.Key
	// Kind says how the store verifies an object and which bucket holds it.
	Kind = object.Kind
	// Entry names one stored object: its kind and key.
	Entry = object.Entry
	// Range is an arc [From, To) of the ring; From == To is all of it.
	Range = object.Range
	// Removed is an entry Sweep took out.
	Removed = object.Removed
	// SweepReport is the outcome of one Sweep call.
	SweepReport = object.SweepReport
	// ScrubCursor is where a scrub pass resumes.
	ScrubCursor = object.ScrubCursor
	// ScrubReport is the outcome of one Scrub call.
	ScrubReport = object.ScrubReport
)

// KeySize is the length of an object key in bytes.
const KeySize = object.KeySize

// Object kinds (see package object).
const (
	KindInvalid   = object.KindInvalid
	KindImmutable = object.KindImmutable
	KindMutable   = object.KindMutable
	KindSet       = object.KindSet
	KindFragment  = object.KindFragment
)

// ImmutableKey returns the key of an immutable object: SHA-256 of data.
func ImmutableKey(data []byte) Key { return Key(sha256.Sum256(data)) }

// allKinds lists the valid kinds in scan order (scrub visits them in
// this order). A new kind is appended here and gets its own bucket;
// nothing else in the layout changes.
func allKinds() []Kind { return []Kind{KindImmutable, KindMutable, KindSet, KindFragment} }

// segments returns the range as one or two half-open intervals of full
// 32-byte keys, in clockwise order from From. A nil hi means "to the end
// of the key space". Keys are ordered bytewise, which is numeric order on
// the ring position first, so ring(k) >= From iff k >= From||0...0 and
// ring(k) < To iff k < To||0...0.
func segments(r Range) [][2][]byte {
	from, to := padRing(r.From), padRing(r.To)
	if r.From.Cmp(r.To) < 0 {
		return [][2][]byte{{from, to}}
	}
	// Wrapping, or the whole ring when From == To.
	return [][2][]byte{{from, nil}, {make([]byte, KeySize), to}}
}

func padRing(x id.ID) []byte {
	b := make([]byte, KeySize)
	copy(b, x[:])
	return b
}

// inSegment reports whether key lies in the half-open interval seg.
func inSegment(seg [2][]byte, key []byte) bool {
	return bytes.Compare(key, seg[0]) >= 0 && (seg[1] == nil || bytes.Compare(key, seg[1]) < 0)
}
