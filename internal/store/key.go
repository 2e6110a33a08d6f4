package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/epost-mail/epost/internal/id"
)

// KeySize is the length of an object key in bytes.
const KeySize = 32

// Key names a stored object: 32 bytes. For an immutable object it is the
// SHA-256 of the object's bytes; for a mutable object the layer above
// derives it (for example from the writer's key and a name). Its first 16
// bytes are its position on the ring (see Key.Ring).
type Key [KeySize]byte

// ImmutableKey returns the key of an immutable object: SHA-256 of data.
func ImmutableKey(data []byte) Key { return Key(sha256.Sum256(data)) }

// Ring returns the key's position on the 128-bit ring: its first 16
// bytes, as PAST places replicas (DESIGN.md section 5).
func (k Key) Ring() id.ID {
	var x id.ID
	copy(x[:], k[:id.Bytes])
	return x
}

// String is the full 64-digit hex form.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// Short is the first 8 hex digits, for logs.
func (k Key) Short() string { return hex.EncodeToString(k[:4]) }

// Kind says how the store verifies an object and which bucket holds it.
// Append-only: a number once assigned is never reused or renumbered,
// because it is written into every stored record.
type Kind uint8

// Object kinds.
const (
	// KindInvalid is the zero Kind; the store refuses it.
	KindInvalid Kind = 0
	// KindImmutable objects are content-addressed: the key is SHA-256 of
	// the bytes, checked when written and on every read.
	KindImmutable Kind = 1
	// KindMutable objects (signed log heads, certificates) carry their own
	// version and signature, which the layer above checks; the store keeps
	// a SHA-256 checksum beside the bytes and checks it on every read.
	KindMutable Kind = 2
)

// allKinds lists the valid kinds in scan order (scrub visits them in
// this order). A new kind (Glacier fragments) is appended here and gets its
// own bucket; nothing else in the layout changes.
func allKinds() []Kind { return []Kind{KindImmutable, KindMutable} }

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindImmutable:
		return "immutable"
	case KindMutable:
		return "mutable"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// valid reports whether the store knows k.
func (k Kind) valid() bool { return k == KindImmutable || k == KindMutable }

// Entry names one stored object: its kind and key.
type Entry struct {
	Kind Kind // how it is verified, which bucket holds it
	Key  Key  // its key within the kind
}

// String is "kind/key-prefix", for logs and errors.
func (e Entry) String() string { return e.Kind.String() + "/" + e.Key.Short() }

// Range is the arc [From, To) of the 128-bit ring, walked clockwise
// (towards larger ids) from From and wrapping past the top of the ring
// when From > To. From == To denotes the whole ring. A key is in the range
// when its Ring position is.
type Range struct {
	From, To id.ID // the arc's start (inclusive) and end (exclusive)
}

// Contains reports whether key k lies in r.
func (r Range) Contains(k Key) bool {
	x := k.Ring()
	switch c := r.From.Cmp(r.To); {
	case c < 0:
		return x.Cmp(r.From) >= 0 && x.Cmp(r.To) < 0
	case c > 0:
		return x.Cmp(r.From) >= 0 || x.Cmp(r.To) < 0
	}
	return true
}

// segments returns the range as one or two half-open intervals of full
// 32-byte keys, in clockwise order from From. A nil hi means "to the end
// of the key space". Keys are ordered bytewise, which is numeric order on
// the ring position first, so ring(k) >= From iff k >= From||0...0 and
// ring(k) < To iff k < To||0...0.
func (r Range) segments() [][2][]byte {
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
