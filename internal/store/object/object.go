// Package object is the vocabulary of stored objects (keys, kinds, ring
// ranges, the errors and reports of a store) without a store: protocol
// cores such as PAST speak it without importing the disk. Package store
// re-exports all of it.
package object

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/epost-mail/epost/internal/env"
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
	// KindSet objects are sets with many writers (a user's pending
	// notifications): the layer above merges them by union and checks
	// their members; the store treats them like mutable objects.
	KindSet Kind = 3
	// KindFragment objects are Glacier's erasure-coded fragments: the
	// archive checks each against its bundle's signed Merkle root; the
	// store keeps a checksum and checks it on every read.
	KindFragment Kind = 4
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindImmutable:
		return "immutable"
	case KindMutable:
		return "mutable"
	case KindSet:
		return "set"
	case KindFragment:
		return "fragment"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is a kind the store knows.
func (k Kind) Valid() bool { return k >= KindImmutable && k <= KindFragment }

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

// Errors a store returns, which callers match with errors.Is (package
// store documents when each occurs).
var (
	ErrNotFound = errors.New("store: not found")
	ErrCorrupt  = errors.New("store: corrupt")
	ErrTooLarge = errors.New("store: too large")
	ErrClosed   = errors.New("store: closed")
	ErrFull     = errors.New("store: full")
	ErrIO       = errors.New("store: disk error")
	ErrBusy     = errors.New("store: write queue full")
	ErrInvalid  = errors.New("store: invalid request")
)

// Removed is an entry a sweep took out.
type Removed struct {
	Entry
	Size   int64    // object bytes freed
	Expiry env.Time // the lease that ran out
}

// SweepReport is the outcome of one sweep.
type SweepReport struct {
	Removed []Removed // in expiry order
	Bytes   int64     // total object bytes freed
	More    bool      // more expired entries remain; call again
}

// ScrubCursor is where a scrub pass resumes. The zero value starts a pass
// at the beginning.
type ScrubCursor struct {
	Kind Kind // kind being scanned; KindInvalid starts a new pass
	From Key  // first key of Kind not yet checked
}

// ScrubReport is the outcome of one scrub call.
type ScrubReport struct {
	Checked  int         // entries verified
	Dropped  []Entry     // entries found corrupt and removed
	Next     ScrubCursor // where the next call resumes
	PassDone bool        // the pass reached the end; Next starts a new one
}
